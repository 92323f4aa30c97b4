# schedules.<name> -> a Cloud Scheduler job (cron, UTC) that publishes a
# message of the schedule's kind on its topic, as the local runtime's ticker does.

resource "google_cloud_scheduler_job" "schedule" {
  for_each    = local.schedules
  project     = var.project
  region      = var.region
  name        = "${var.prefix}${each.key}"
  description = "Sluice: ${each.value.kind} on ${each.value.topic} (topology.yaml schedules.${each.key})."
  schedule    = each.value.cron
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.topic[each.value.topic].id
    # Scheduled messages have no fields: an empty JSON object of that kind.
    data       = base64encode(jsonencode({}))
    attributes = { kind = each.value.kind }
  }

  depends_on = [google_project_service.api]
}
