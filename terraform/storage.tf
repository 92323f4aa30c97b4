# buckets.<name> -> a bucket (uniform access, no public access, versioned,
# deleted after the topology's lifecycle_delete_days); buckets.<name>.finalize
# -> an object-finalize notification to that topic (blob.finalized).

resource "google_storage_bucket" "bucket" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs (google_project_iam_audit_config.storage), not legacy usage logs.
  for_each                    = local.buckets
  project                     = var.project
  name                        = each.value.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = merge(var.labels, { sluice-bucket = each.key })

  versioning {
    enabled = true
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.lifecycle_delete_days == null ? [] : [each.value.lifecycle_delete_days]
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  # A replaced or deleted object's old version is kept a few days, then removed.
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

resource "google_storage_bucket_iam_member" "function" {
  for_each = local.bucket_grants
  bucket   = google_storage_bucket.bucket[each.value.bucket].name
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# Cloud Storage's service agent publishes the notifications.
resource "google_pubsub_topic_iam_member" "storage_publisher" {
  for_each = toset(values(local.finalize_buckets))
  project  = var.project
  topic    = google_pubsub_topic.topic[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "finalize" {
  for_each       = local.finalize_buckets
  bucket         = google_storage_bucket.bucket[each.key].name
  topic          = google_pubsub_topic.topic[each.value].id
  payload_format = "JSON_API_V1"
  event_types    = ["OBJECT_FINALIZE"]

  depends_on = [google_pubsub_topic_iam_member.storage_publisher]
}
