# Project-level grants of the function service accounts (bucket, topic,
# secret and queue grants sit beside those resources) and who may invoke what.

# Firestore for every function, limited to Sluice's database by an IAM condition.
resource "google_project_iam_member" "datastore" {
  for_each = local.functions
  project  = var.project
  role     = "roles/datastore.user"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"

  condition {
    title      = "sluice-database-only"
    expression = "resource.name.startsWith(\"projects/${var.project}/databases/${var.firestore_database}\")"
  }
}

resource "google_project_iam_member" "function" {
  for_each = local.project_grants
  project  = var.project
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# Signed URLs (uploads, downloads) are signed by the function's own account
# through IAM signBlob: token creator on itself, nowhere else.
resource "google_service_account_iam_member" "sign_own_urls" {
  for_each           = local.url_signers
  service_account_id = google_service_account.function[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.function[each.key].email}"
}

# Pub/Sub-fired functions: only the push identity may invoke them.
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.pushed_functions
  project  = var.project
  location = var.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_push.email}"
}

# The HTTP API: Cloud Run's invoker check stays on. Callers present a Google
# ID token whose audience is the function URL (output api_urls); Cloud Run
# admits the principals in var.api_invoker_members, and the API verifies the
# same token again (issuer accounts.google.com, audience = that URL) and takes
# its `sub` as the owner. No allUsers: an unauthenticated request never reaches
# the code. Tokens from other issuers (Firebase, Entra) need a gateway in
# front (API Gateway or a load balancer with IAP) that invokes as a service account.
resource "google_cloud_run_v2_service_iam_member" "api_invoker" {
  for_each = local.api_invokers
  project  = var.project
  location = var.region
  name     = google_cloudfunctions2_function.function[each.value.function].name
  role     = "roles/run.invoker"
  member   = each.value.member
}
