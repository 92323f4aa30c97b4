# The wiring comes from topology.yaml, decoded here and nowhere else: every
# topic, subscription, schedule, bucket and function below is a for_each over
# these maps, so the cloud cannot drift from what the local runtime runs.
# tests/terraform/test_parity.py checks that every key and field of the
# topology is consumed here (a new one fails the test until it is handled).

locals {
  topology_file = coalesce(var.topology_file, "${path.module}/../topology.yaml")
  build_dir     = coalesce(var.build_dir, "${path.module}/../build")
  topology      = yamldecode(file(local.topology_file))

  firestore_location = coalesce(var.firestore_location, var.region)
  gemini_location    = coalesce(var.gemini_location, var.region)

  # functions.<name>: one Cloud Function (gen2), its service account and bundle.
  functions = {
    for name, f in local.topology.functions : name => {
      source        = f.source
      entry_point   = f.entry_point
      trigger       = f.trigger
      max_instances = f.max_instances
      concurrency   = f.concurrency
      timeout_s     = f.timeout_s
      memory        = f.memory
      # Cloud Run and IAM names take lowercase letters, digits and hyphens.
      resource_name = "${var.prefix}${replace(name, "_", "-")}"
    }
  }

  # topics.<name>: one Pub/Sub topic (work or dead-letter).
  topics = {
    for name, t in local.topology.topics : name => {
      kinds         = join(",", try(t.kinds, []))
      dead_letter   = try(t.dead_letter, false)
      resource_name = "${var.prefix}${name}"
    }
  }

  # Which topic carries each message kind (publisher grants follow it).
  kind_topic = merge([
    for name, t in local.topology.topics : { for kind in try(t.kinds, []) : kind => name }
  ]...)

  # topics.<name>.subscription: one push subscription to the subscriber function.
  subscriptions = {
    for name, t in local.topology.topics : name => {
      function              = t.subscription.function
      ack_deadline_s        = t.subscription.ack_deadline_s
      max_delivery_attempts = t.subscription.max_delivery_attempts
      min_backoff_s         = t.subscription.min_backoff_s
      max_backoff_s         = t.subscription.max_backoff_s
      dead_letter_topic     = try(t.subscription.dead_letter_topic, null)
      # The local runtime's name for the same subscription (common/runtime/local.subscription_name).
      resource_name = "${var.prefix}${name}--${t.subscription.function}"
    } if try(t.subscription, null) != null
  }

  dead_letter_topics = { for name, t in local.topics : name => t if t.dead_letter }

  # Topics that receive dead letters from a subscription (the Pub/Sub service agent publishes there).
  dead_letter_targets = toset([for s in local.subscriptions : s.dead_letter_topic if s.dead_letter_topic != null])

  # Functions fired by a push subscription (the rest are HTTP: trigger "http").
  pushed_functions = toset([for s in local.subscriptions : s.function])
  http_functions   = toset([for name, f in local.functions : name if f.trigger == "http"])

  # schedules.<name>: one Cloud Scheduler job publishing `kind` on `topic`.
  schedules = {
    for name, s in try(local.topology.schedules, {}) : name => {
      cron  = s.cron
      topic = s.topic
      kind  = s.kind
    }
  }

  # buckets.<name>: one bucket; `finalize` adds an object-finalize notification to a topic.
  buckets = {
    for name, b in try(local.topology.buckets, {}) : name => {
      finalize              = try(b.finalize, null)
      lifecycle_delete_days = try(b.lifecycle_delete_days, null)
      bucket_name           = "${var.project}-${var.prefix}${name}"
    }
  }

  finalize_buckets = { for name, b in local.buckets : name => b.finalize if b.finalize != null }

  # task_queues.<priority>: one Cloud Tasks queue. Every priority may dispatch at the
  # model quota per second (with headroom), with as many dispatches in flight as the
  # model-calling function runs: priorities order work, the quota limits it.
  # common/topology.py (Topology.task_queue_limits) computes the same numbers.
  model_function = local.topology.functions[local.topology.model_quota.function]
  task_queue_limits = {
    for name, q in local.topology.task_queues : name => {
      max_attempts              = q.max_attempts
      max_dispatches_per_second = min(500, floor(local.topology.model_quota.requests_per_minute / 60 * local.topology.model_quota.dispatch_headroom * 1000) / 1000)
      max_concurrent_dispatches = min(5000, local.model_function.max_instances * local.model_function.concurrency)
    }
  }
}
