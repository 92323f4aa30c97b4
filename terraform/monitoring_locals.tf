# The operators' view, derived from the topology (monitoring.tf builds it):
# one dashboard row and one alert set per subscription in local.subscriptions,
# so a new stage appears on the dashboard and gets its alerts without an edit.
# Kept apart from monitoring.tf (no resources here) so tests evaluate it with
# `terraform console`, which needs no provider.

locals {
  # Custom metrics: the OpenTelemetry instruments of common/obs/metrics.py, as exported to Cloud Monitoring.
  metric_prefix = "workload.googleapis.com/sluice."

  # Subscriptions with a dead-letter topic: their own "dead letters arrived" alert.
  dead_lettered_subscriptions = { for name, s in local.subscriptions : name => s if s.dead_letter_topic != null }

  # The dashboard: global rows first (the workers spec's widgets, lifecycle), then a row per subscription.
  dashboard_global_rows = 3
  dashboard_tiles = concat(
    [
      for i, w in [
        {
          title  = "P95 runtime per queue"
          plot   = "LINE"
          filter = "metric.type=\"${local.metric_prefix}stage.duration\""
          align  = "ALIGN_DELTA"
          reduce = "REDUCE_PERCENTILE_95"
          by     = ["metric.label.function"]
        },
        {
          title  = "Failures per queue"
          plot   = "STACKED_BAR"
          filter = "metric.type=\"${local.metric_prefix}stage.failures\""
          align  = "ALIGN_DELTA"
          reduce = "REDUCE_SUM"
          by     = ["metric.label.function"]
        },
        {
          title  = "Tokens consumed per day"
          plot   = "STACKED_AREA"
          filter = "metric.type=\"${local.metric_prefix}model.tokens\""
          align  = "ALIGN_DELTA"
          reduce = "REDUCE_SUM"
          by     = ["metric.label.model", "metric.label.direction"]
          period = "86400s"
        },
        {
          title  = "Runs by event"
          plot   = "STACKED_BAR"
          filter = "metric.type=\"${local.metric_prefix}runs\""
          align  = "ALIGN_DELTA"
          reduce = "REDUCE_SUM"
          by     = ["metric.label.kind", "metric.label.event"]
        },
        {
          title  = "Items by stage and event"
          plot   = "STACKED_BAR"
          filter = "metric.type=\"${local.metric_prefix}items\""
          align  = "ALIGN_DELTA"
          reduce = "REDUCE_SUM"
          by     = ["metric.label.kind", "metric.label.stage", "metric.label.event"]
        },
        {
          title  = "Model calls by outcome (429s: rate_limited)"
          plot   = "STACKED_BAR"
          filter = "metric.type=\"${local.metric_prefix}model.requests\""
          align  = "ALIGN_RATE"
          reduce = "REDUCE_SUM"
          by     = ["metric.label.model", "metric.label.outcome"]
        },
        ] : {
        xPos   = (i % 2) * 24
        yPos   = floor(i / 2) * 16
        width  = 24
        height = 16
        widget = {
          title = w.title
          xyChart = {
            dataSets = [{
              plotType       = w.plot
              legendTemplate = join(" ", [for label in w.by : "$${${label}}"])
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = w.filter
                  aggregation = {
                    alignmentPeriod    = try(w.period, "60s")
                    perSeriesAligner   = w.align
                    crossSeriesReducer = w.reduce
                    groupByFields      = w.by
                  }
                }
              }
            }]
          }
        }
      }
    ],
    [
      # Google API QPS with the quota drawn over it: Vertex AI requests, and the configured model rate.
      {
        xPos   = 0
        yPos   = 48
        width  = 48
        height = 16
        widget = {
          title = "Vertex AI requests per second, with the configured quota"
          xyChart = {
            dataSets = [
              {
                plotType       = "LINE"
                legendTemplate = "requests/s $${resource.label.method}"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = "metric.type=\"serviceruntime.googleapis.com/api/request_count\" resource.type=\"consumed_api\" resource.label.service=\"aiplatform.googleapis.com\""
                    aggregation = {
                      alignmentPeriod    = "60s"
                      perSeriesAligner   = "ALIGN_RATE"
                      crossSeriesReducer = "REDUCE_SUM"
                      groupByFields      = ["resource.label.method"]
                    }
                  }
                }
              },
              {
                plotType       = "LINE"
                legendTemplate = "quota $${metric.label.model}"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = "metric.type=\"${local.metric_prefix}model.request_limit\""
                    aggregation = {
                      alignmentPeriod    = "60s"
                      perSeriesAligner   = "ALIGN_MEAN"
                      crossSeriesReducer = "REDUCE_MAX"
                      groupByFields      = ["metric.label.model"]
                    }
                  }
                }
              },
            ]
          }
        }
      },
    ],
    flatten([
      for i, name in sort(keys(local.subscriptions)) : [
        for j, w in [
          {
            title  = "depth (undelivered messages)"
            metric = "pubsub.googleapis.com/subscription/num_undelivered_messages"
            align  = "ALIGN_MEAN"
            plot   = "LINE"
          },
          {
            title  = "oldest unacked message age"
            metric = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
            align  = "ALIGN_MAX"
            plot   = "LINE"
          },
          {
            title  = "dead-lettered messages"
            metric = "pubsub.googleapis.com/subscription/dead_letter_message_count"
            align  = "ALIGN_DELTA"
            plot   = "STACKED_BAR"
          },
          ] : {
          xPos   = j * 16
          yPos   = (local.dashboard_global_rows + 1 + i) * 16
          width  = 16
          height = 16
          widget = {
            title = "${name} (${local.subscriptions[name].function}): ${w.title}"
            xyChart = {
              dataSets = [{
                plotType = w.plot
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = "metric.type=\"${w.metric}\" resource.type=\"pubsub_subscription\" resource.label.subscription_id=\"${local.subscriptions[name].resource_name}\""
                    aggregation = {
                      alignmentPeriod    = "60s"
                      perSeriesAligner   = w.align
                      crossSeriesReducer = "REDUCE_SUM"
                    }
                  }
                }
              }]
            }
          }
        }
      ]
    ]),
  )
}
