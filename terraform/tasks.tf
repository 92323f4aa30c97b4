# Cloud Tasks: one queue per run priority, its rates derived from topology.yaml's
# model_quota (local.task_queue_limits). A task
# is a Pub/Sub publish call made at the scheduled time as the tasks account
# (common/adapters/gcp/tasks_scheduler.py), so the message then travels like any other.

resource "google_cloud_tasks_queue" "priority" {
  for_each = local.task_queue_limits
  project  = var.project
  location = var.region
  name     = "${var.prefix}${each.key}"

  rate_limits {
    max_dispatches_per_second = each.value.max_dispatches_per_second
    max_concurrent_dispatches = each.value.max_concurrent_dispatches
  }

  retry_config {
    max_attempts  = each.value.max_attempts
    min_backoff   = "10s"
    max_backoff   = "600s"
    max_doublings = 5
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.api]
}

# The identity whose OAuth token Cloud Tasks attaches to the publish calls.
resource "google_service_account" "tasks" {
  project      = var.project
  account_id   = "${var.prefix}tasks"
  display_name = "Sluice Cloud Tasks"
  description  = "Publishes scheduled messages (pubsub.publisher on their topics only)."
}

resource "google_pubsub_topic_iam_member" "tasks_publisher" {
  for_each = local.tasks_topics
  project  = var.project
  topic    = google_pubsub_topic.topic[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}

resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = local.enqueuer_grants
  project  = var.project
  location = var.region
  name     = google_cloud_tasks_queue.priority[each.value.queue].name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# Creating a task that acts as the tasks account needs actAs on it.
resource "google_service_account_iam_member" "tasks_act_as" {
  for_each           = local.task_enqueuers
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.function[each.key].email}"
}
