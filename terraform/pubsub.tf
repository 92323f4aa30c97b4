# topics.<name> -> a topic; topics.<name>.subscription -> a push subscription
# to its function with the topology's ack deadline, backoff, max delivery
# attempts and dead-letter topic. Push (not an Eventarc trigger) because only
# a subscription Terraform owns can carry the dead-letter and retry policy.

resource "google_pubsub_topic" "topic" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; a CMEK key ring (kms_key_name) is an organisation decision this module does not make.
  for_each = local.topics
  project  = var.project
  name     = each.value.resource_name
  labels   = merge(var.labels, { sluice-topic = each.value.dead_letter ? "dead-letter" : "work" })
  # Dead letters stay replayable (seek) even before anyone subscribes.
  message_retention_duration = each.value.dead_letter ? var.dead_letter_retention : null

  depends_on = [google_project_service.api]
}

resource "google_pubsub_subscription" "push" {
  for_each                   = local.subscriptions
  project                    = var.project
  name                       = each.value.resource_name
  topic                      = google_pubsub_topic.topic[each.key].id
  ack_deadline_seconds       = each.value.ack_deadline_s
  message_retention_duration = "604800s"
  labels                     = merge(var.labels, { sluice-function = replace(each.value.function, "_", "-") })

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "${each.value.min_backoff_s}s"
    maximum_backoff = "${each.value.max_backoff_s}s"
  }

  dynamic "dead_letter_policy" {
    for_each = each.value.dead_letter_topic == null ? [] : [each.value.dead_letter_topic]
    content {
      dead_letter_topic     = google_pubsub_topic.topic[dead_letter_policy.value].id
      max_delivery_attempts = each.value.max_delivery_attempts
    }
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.function[each.value.function].url

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.function[each.value.function].url
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.push_invoker]
}

# Dead-letter topics have no function: a pull subscription keeps their
# messages for inspection and replay.
resource "google_pubsub_subscription" "dead_letter" {
  for_each                   = local.dead_letter_topics
  project                    = var.project
  name                       = "${each.value.resource_name}--hold"
  topic                      = google_pubsub_topic.topic[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  labels                     = merge(var.labels, { sluice-topic = "dead-letter" })

  expiration_policy {
    ttl = ""
  }
}

# The API peeks (pull, then modifyAckDeadline 0) and acknowledges replayed
# dead letters on the hold subscriptions, and publishes replays (access.tf).
resource "google_pubsub_subscription_iam_member" "dead_letter_reader" {
  for_each     = local.dead_letter_readers
  project      = var.project
  subscription = google_pubsub_subscription.dead_letter[each.value.topic].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

resource "google_pubsub_topic_iam_member" "replay_publisher" {
  for_each = local.replay_publishers
  project  = var.project
  topic    = google_pubsub_topic.topic[each.value.topic].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# The identity Pub/Sub presents (OIDC) when it pushes to a function.
resource "google_service_account" "pubsub_push" {
  project      = var.project
  account_id   = "${var.prefix}pubsub-push"
  display_name = "Sluice Pub/Sub push"
  description  = "Pub/Sub pushes to Sluice's functions as this account (run.invoker on them only)."
}

# Pub/Sub mints the push OIDC tokens for that account.
resource "google_service_account_iam_member" "pubsub_push_token" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.pubsub_agent}"
}

# Dead-lettering: the Pub/Sub service agent forwards from the subscription to the dead-letter topic.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.dead_letter_targets
  project  = var.project
  topic    = google_pubsub_topic.topic[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${local.pubsub_agent}"
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = { for name, s in local.subscriptions : name => s if s.dead_letter_topic != null }
  project      = var.project
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_agent}"
}

# Each function publishes to the topics of the kinds it sends (access.tf).
resource "google_pubsub_topic_iam_member" "function_publisher" {
  for_each = local.topic_publishers
  project  = var.project
  topic    = google_pubsub_topic.topic[each.value.topic].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# Gmail publishes users' mailbox notifications to the topic carrying gmail.notification.
resource "google_pubsub_topic_iam_member" "gmail_push" {
  for_each = toset(compact([try(local.kind_topic["gmail.notification"], "")]))
  project  = var.project
  topic    = google_pubsub_topic.topic[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${local.gmail_push_agent}"
}
