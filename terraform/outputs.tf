output "function_urls" {
  description = "Each function's HTTPS endpoint."
  value       = { for name, f in google_cloudfunctions2_function.function : name => f.url }
}

output "api_urls" {
  description = "The HTTP functions' URLs: the audience of the Google ID tokens their callers present."
  value       = { for name in local.http_functions : name => google_cloudfunctions2_function.function[name].url }
}

output "service_accounts" {
  description = "Each function's service account."
  value       = { for name, sa in google_service_account.function : name => sa.email }
}

output "topics" {
  description = "Topology topic => deployed Pub/Sub topic id."
  value       = { for name, t in google_pubsub_topic.topic : name => t.id }
}

output "buckets" {
  description = "Topology bucket => deployed bucket name."
  value       = { for name, b in google_storage_bucket.bucket : name => b.name }
}

output "task_queues" {
  description = "Priority => Cloud Tasks queue id."
  value       = { for name, q in google_cloud_tasks_queue.priority : name => q.id }
}

output "runtime_environment" {
  description = "The SLUICE_* variables every function runs with (secrets excluded)."
  value       = local.runtime_env
}
