# The OAuth client secret and the key that seals users' refresh tokens. Their
# values never pass through Terraform (nor its state): add them with
#   gcloud secrets versions add PREFIXoauth-client-secret --data-file=-
#   head -c 32 /dev/urandom | gcloud secrets versions add PREFIXtoken-key --data-file=-
# then set enable_google_oauth = true to mount them in the functions that read them.

resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  project   = var.project
  secret_id = "${var.prefix}${each.key}"
  labels    = var.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each  = local.secret_grants
  project   = var.project
  secret_id = google_secret_manager_secret.secret[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function[each.value.function].email}"
}
