variable "project" {
  description = "Google Cloud project id that hosts the deployment."
  type        = string
}

variable "region" {
  description = "Region of the functions, buckets, queues and scheduler jobs."
  type        = string
  default     = "europe-west1"
}

variable "prefix" {
  description = "Prefix of every resource name (SLUICE_PREFIX), so several deployments can share a project."
  type        = string
  default     = "sluice-"

  validation {
    # Service account ids are at most 30 characters: prefix + the longest function name must fit.
    condition     = can(regex("^[a-z][a-z0-9-]{0,10}-$", var.prefix))
    error_message = "The prefix is 2-12 lowercase letters, digits or hyphens, starts with a letter and ends with '-'."
  }
}

variable "topology_file" {
  description = "Path of topology.yaml (default: the repository's, beside this directory)."
  type        = string
  default     = null
}

variable "build_dir" {
  description = "Where `make bundle` stages each function's source (build/<function>/; default: ../build)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels added to every labelled resource."
  type        = map(string)
  default     = {}
}

variable "firestore_database" {
  description = "Firestore database id (native mode)."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location (default: the region)."
  type        = string
  default     = null
}

variable "firestore_collection_prefix" {
  description = "Prefix of the store's collection names (the Firestore adapter's collection_prefix)."
  type        = string
  default     = ""
}

variable "ttl_collections" {
  description = "Collections whose documents Firestore deletes at their expire_at (TTL policy)."
  type        = list(string)
  default     = ["operations", "processed_messages"]
}

variable "dead_letter_retention" {
  description = "How long dead letters are kept for inspection and replay."
  type        = string
  default     = "604800s"
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted object version is kept in a versioned bucket."
  type        = number
  default     = 7
}

variable "api_invoker_members" {
  description = <<-EOT
    Principals allowed through Cloud Run's invoker check to the HTTP API (for example
    "domain:example.com" or "group:sluice-users@example.com"). The API verifies the
    bearer token itself as well; allUsers is refused.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.api_invoker_members : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "The API is not public: name users, groups or domains, not allUsers/allAuthenticatedUsers."
  }
}

variable "enable_google_oauth" {
  description = "Mount the OAuth client secret and token key (add a version to both secrets first)."
  type        = bool
  default     = false
}

variable "google_client_id" {
  description = "OAuth client id for Drive and Gmail access on users' behalf (empty: none)."
  type        = string
  default     = ""
}

variable "extractor" {
  description = "Extraction backend (SLUICE_EXTRACTOR)."
  type        = string
  default     = "gemini"
}

variable "gemini_model" {
  description = "Vertex AI model (SLUICE_GEMINI_MODEL)."
  type        = string
  default     = "gemini-2.5-flash"
}

variable "gemini_location" {
  description = "Vertex AI location (default: the region)."
  type        = string
  default     = null
}

variable "log_level" {
  description = "SLUICE_LOG_LEVEL of every function."
  type        = string
  default     = "INFO"
}

variable "trace_sample_ratio" {
  description = "Fraction of new traces recorded to Cloud Trace (continued traces follow their parent)."
  type        = number
  default     = 0.1

  validation {
    condition     = var.trace_sample_ratio >= 0 && var.trace_sample_ratio <= 1
    error_message = "trace_sample_ratio is between 0 and 1."
  }
}

variable "storage_data_access_logs" {
  description = "Record Cloud Storage data access in Cloud Audit Logs (the buckets' access log)."
  type        = bool
  default     = true
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/P/notificationChannels/N) every Sluice alert notifies."
  type        = list(string)
  default     = []
}

variable "alert_oldest_unacked_age_s" {
  description = "Alert when a subscription's oldest unacknowledged message is older than this (seconds)."
  type        = number
  default     = 1800
}

variable "alert_queue_depth" {
  description = "Alert when a subscription holds more undelivered messages than this for 10 minutes."
  type        = number
  default     = 1000
}

variable "alert_stage_error_ratio" {
  description = "Alert when more than this share of a stage's messages are retried or failed over 10 minutes."
  type        = number
  default     = 0.1

  validation {
    condition     = var.alert_stage_error_ratio > 0 && var.alert_stage_error_ratio < 1
    error_message = "alert_stage_error_ratio is between 0 and 1 (exclusive)."
  }
}

variable "search_vector_dimension" {
  description = "Length of the search collections' embedding vectors (the embedder's output size, at most 2048): the Firestore vector index serves this one dimension."
  type        = number
  default     = 768

  validation {
    condition     = var.search_vector_dimension >= 1 && var.search_vector_dimension <= 2048
    error_message = "Firestore vector indexes take 1 to 2048 dimensions."
  }
}
