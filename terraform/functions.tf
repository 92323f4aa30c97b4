# One Cloud Function (gen2) per topology function, each with its own service
# account. Pub/Sub-fired functions take pushes from their subscription only
# (internal ingress, invoker = the push identity); the HTTP API is reachable
# from the internet but keeps Cloud Run's invoker check (see iam.tf).

locals {
  runtime_env = merge(
    {
      SLUICE_BACKEND               = "gcp"
      SLUICE_PROJECT               = var.project
      SLUICE_REGION                = var.region
      SLUICE_PREFIX                = var.prefix
      SLUICE_LOG_LEVEL             = var.log_level
      SLUICE_LOG_FORMAT            = "json"
      SLUICE_EXTRACTOR             = var.extractor
      SLUICE_GEMINI_MODEL          = var.gemini_model
      SLUICE_GEMINI_LOCATION       = local.gemini_location
      SLUICE_MODEL_RPM             = tostring(local.topology.model_quota.requests_per_minute)
      SLUICE_FIRESTORE_DATABASE    = var.firestore_database
      SLUICE_TASKS_LOCATION        = var.region
      SLUICE_TASKS_QUEUE_PREFIX    = var.prefix
      SLUICE_TASKS_SERVICE_ACCOUNT = google_service_account.tasks.email
      SLUICE_TRACE_EXPORTER        = "cloud"
      SLUICE_TRACE_SAMPLE_RATIO    = tostring(var.trace_sample_ratio)
      SLUICE_METRICS_EXPORTER      = "cloud"
    },
    var.google_client_id == "" ? {} : { SLUICE_GOOGLE_CLIENT_ID = var.google_client_id },
    # SLUICE_UPLOADS_BUCKET, SLUICE_EXPORTS_BUCKET, ...: the deployed name of each topology bucket.
    { for name, b in local.buckets : "SLUICE_${upper(name)}_BUCKET" => b.bucket_name },
  )
}

resource "google_service_account" "function" {
  for_each     = local.functions
  project      = var.project
  account_id   = each.value.resource_name
  display_name = "Sluice ${each.key} function"
  description  = "Runs the ${each.key} function; roles from terraform/access.tf."
}

resource "google_cloudfunctions2_function" "function" {
  #checkov:skip=CKV_GCP_124:Only trigger "http" functions (the API) allow all ingress, by design: its clients are on the internet. Cloud Run's invoker IAM check still applies (iam.tf); every Pub/Sub-fired function is internal-only.
  for_each    = local.functions
  project     = var.project
  location    = var.region
  name        = each.value.resource_name
  description = "Sluice ${each.key} (${each.value.source}), wired by topology.yaml."
  labels      = merge(var.labels, { sluice-function = replace(each.key, "_", "-") })

  build_config {
    runtime     = "python311"
    entry_point = each.value.entry_point

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.bundle[each.key].name
      }
    }
  }

  service_config {
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    # Serving more than one request at a time needs a whole CPU.
    available_cpu                  = each.value.concurrency > 1 ? "1" : null
    available_memory               = each.value.memory
    timeout_seconds                = each.value.timeout_s
    service_account_email          = google_service_account.function[each.key].email
    ingress_settings               = each.value.trigger == "http" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    environment_variables = merge(
      local.runtime_env,
      { SLUICE_FUNCTION = each.key },
      # URL signers sign through IAM signBlob as themselves (iam.tf: sign_own_urls).
      contains(local.url_signers, each.key) ? { SLUICE_SIGNING_SERVICE_ACCOUNT = google_service_account.function[each.key].email } : {},
    )

    dynamic "secret_environment_variables" {
      for_each = var.enable_google_oauth ? toset(local.function_access[each.key].secrets) : toset([])
      content {
        key        = local.secrets[secret_environment_variables.value].env
        project_id = var.project
        secret     = google_secret_manager_secret.secret[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    google_project_service.api,
    google_secret_manager_secret_iam_member.accessor,
  ]
}
