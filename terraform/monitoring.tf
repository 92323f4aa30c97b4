# Cloud Monitoring: the operators' dashboard and alert policies, derived from
# the topology (monitoring_locals.tf). Per subscription: a dashboard row
# (depth, oldest unacked age, dead letters) and an alert set (dead letters
# arriving, oldest unacked age, depth, its stage's error ratio). Global: a run
# over its timeout, model 429s sustained, function crashes. Notifications go
# to var.notification_channels. ops/grafana and ops/prometheus hold the same
# view for Prometheus.

resource "google_monitoring_dashboard" "operations" {
  project = var.project
  dashboard_json = jsonencode({
    displayName  = "Sluice operations (${trimsuffix(var.prefix, "-")})"
    mosaicLayout = { columns = 48, tiles = local.dashboard_tiles }
    labels       = { sluice = "" }
  })

  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "dead_letters" {
  for_each              = local.dead_lettered_subscriptions
  project               = var.project
  display_name          = "Sluice ${each.key}: messages dead-lettered"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = merge(var.labels, { sluice-subscription = replace(each.key, "_", "-") })

  conditions {
    display_name = "dead letters from ${each.value.resource_name}"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/dead_letter_message_count\" resource.type=\"pubsub_subscription\" resource.label.subscription_id=\"${each.value.resource_name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Messages of ${each.key} reached ${each.value.dead_letter_topic} after ${each.value.max_delivery_attempts} attempts: their work did not happen. Read the function's ERROR logs (they name the item and the point of failure), fix the cause, then replay them from ${each.value.dead_letter_topic} (its hold subscription keeps them)."
  }
}

resource "google_monitoring_alert_policy" "oldest_unacked" {
  for_each              = local.subscriptions
  project               = var.project
  display_name          = "Sluice ${each.key}: oldest unacked message too old"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = merge(var.labels, { sluice-subscription = replace(each.key, "_", "-") })

  conditions {
    display_name = "oldest unacked age of ${each.value.resource_name}"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" resource.type=\"pubsub_subscription\" resource.label.subscription_id=\"${each.value.resource_name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_oldest_unacked_age_s
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A message has waited on ${each.value.resource_name} longer than ${var.alert_oldest_unacked_age_s} s: the ${each.value.function} function is failing, stuck or out of instances."
  }
}

resource "google_monitoring_alert_policy" "queue_depth" {
  for_each              = local.subscriptions
  project               = var.project
  display_name          = "Sluice ${each.key}: backlog"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = merge(var.labels, { sluice-subscription = replace(each.key, "_", "-") })

  conditions {
    display_name = "undelivered messages on ${each.value.resource_name}"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.label.subscription_id=\"${each.value.resource_name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_queue_depth
      duration        = "600s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MEAN"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "More than ${var.alert_queue_depth} messages wait on ${each.value.resource_name} for 10 minutes: ${each.value.function} is not keeping up (max instances, quota, failures)."
  }
}

resource "google_monitoring_alert_policy" "stage_error_ratio" {
  for_each              = local.subscriptions
  project               = var.project
  display_name          = "Sluice ${each.key}: ${each.value.function} error ratio"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = merge(var.labels, { sluice-subscription = replace(each.key, "_", "-") })

  conditions {
    display_name = "share of ${each.value.function}'s messages not done"
    condition_prometheus_query_language {
      query    = "sum(rate(workload_googleapis_com:sluice_stage_failures{function=\"${each.value.function}\"}[10m])) / sum(rate(workload_googleapis_com:sluice_stage_duration_count{function=\"${each.value.function}\"}[10m])) > ${var.alert_stage_error_ratio}"
      duration = "600s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "More than ${var.alert_stage_error_ratio * 100}% of the messages ${each.value.function} handled were retried or failed over 10 minutes. The Failures per queue widget shows the error classes; the ERROR logs name the items."
  }
}

resource "google_monitoring_alert_policy" "run_over_timeout" {
  project               = var.project
  display_name          = "Sluice: a run is over its timeout"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "runs reported stalled by the cleanup sweep"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_prefix}runs\" metric.label.event=\"stalled\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.kind"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A run has been running longer than SLUICE_RUN_TIMEOUT_S. The cleanup function's ERROR line \"run over its timeout\" names the run and job; check its tasks (GET /v1/runs/RUN_ID/tasks) and the extract queue."
  }
}

resource "google_monitoring_alert_policy" "model_rate_limited" {
  project               = var.project
  display_name          = "Sluice: model 429s sustained"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "model calls answered 429"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_prefix}model.requests\" metric.label.outcome=\"rate_limited\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "900s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.model"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The model has answered 429 for 15 minutes: raise the Vertex AI quota or lower SLUICE_MODEL_RPM (the dashboard draws the configured rate over the requests)."
  }
}

# Unhandled exceptions in any Sluice function: dispatch's "unexpected failure",
# the API's "unhandled error", or a bare Python traceback from the runtime.
resource "google_logging_metric" "function_crashes" {
  project = var.project
  name    = "${var.prefix}function-crashes"
  filter  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name:\"${var.prefix}\" AND severity>=ERROR AND (jsonPayload.message=~\"^(unexpected failure|unhandled error)\" OR textPayload:\"Traceback (most recent call last)\")"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "function"
      value_type  = "STRING"
      description = "The Cloud Run service (function) that crashed."
    }
  }

  label_extractors = {
    function = "EXTRACT(resource.labels.service_name)"
  }
}

resource "google_monitoring_alert_policy" "function_crashes" {
  project               = var.project
  display_name          = "Sluice: function crashes"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "unhandled exceptions"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.function_crashes.name}\" resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.function"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Sluice function raised an unexpected exception. Its ERROR log entry carries the stack trace, the point of failure and the item's ids; Error Reporting groups them."
  }
}
