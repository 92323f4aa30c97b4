# Each function's source: `make bundle` stages build/<function>/ (its main.py,
# the common package, topology.yaml, requirements.txt). The zip's object name
# carries its content hash, so a code change is a new object and the function
# redeploys; an unchanged bundle leaves the function alone.

resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs (google_project_iam_audit_config.storage), not legacy usage logs.
  project                     = var.project
  name                        = "${var.project}-${var.prefix}sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  versioning {
    enabled = true
  }

  # Old bundles are dead weight once the functions moved on.
  lifecycle_rule {
    condition {
      age = 30
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

data "archive_file" "bundle" {
  for_each    = local.functions
  type        = "zip"
  source_dir  = "${local.build_dir}/${each.key}"
  output_path = "${local.build_dir}/zips/${each.key}.zip"
}

resource "google_storage_bucket_object" "bundle" {
  for_each     = local.functions
  bucket       = google_storage_bucket.sources.name
  name         = "bundles/${each.key}-${data.archive_file.bundle[each.key].output_sha256}.zip"
  source       = data.archive_file.bundle[each.key].output_path
  content_type = "application/zip"
}
