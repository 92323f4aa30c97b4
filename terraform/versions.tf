terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4"
    }
  }

  # State lives in a GCS bucket named at init time:
  #   terraform init -backend-config="bucket=PROJECT-tfstate" -backend-config="prefix=sluice/PREFIX"
  backend "gcs" {}
}

provider "google" {
  project = var.project
  region  = var.region
}
