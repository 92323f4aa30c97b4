# Firestore (native mode) with the composite indexes the store's queries need
# and a TTL policy on expire_at.

locals {
  # The composite (comma-separated) entries of common/bootstrap.STORE_INDEXES,
  # written out; single-field entries are served by Firestore's automatic
  # indexes. tests/terraform/test_parity.py checks this map against STORE_INDEXES.
  firestore_composite_indexes = {
    "jobs:owner,created_at"                    = { collection = "jobs", fields = ["owner", "created_at"] }
    "jobs:owner,updated_at"                    = { collection = "jobs", fields = ["owner", "updated_at"] }
    "jobs:owner,name"                          = { collection = "jobs", fields = ["owner", "name"] }
    "files:job_id,status,file_type"            = { collection = "files", fields = ["job_id", "status", "file_type"] }
    "runs:job_id,run_number"                   = { collection = "runs", fields = ["job_id", "run_number"] }
    "runs:owner,created_at"                    = { collection = "runs", fields = ["owner", "created_at"] }
    "runs:owner,status"                        = { collection = "runs", fields = ["owner", "status"] }
    "runs:status,created_at"                   = { collection = "runs", fields = ["status", "created_at"] }
    "tasks:run_id,status"                      = { collection = "tasks", fields = ["run_id", "status"] }
    "tasks:run_id,file_name"                   = { collection = "tasks", fields = ["run_id", "file_name"] }
    "tasks:status,lease_until"                 = { collection = "tasks", fields = ["status", "lease_until"] }
    "tasks:owner,status,lease_until"           = { collection = "tasks", fields = ["owner", "status", "lease_until"] }
    "tasks:status,created_at"                  = { collection = "tasks", fields = ["status", "created_at"] }
    "tasks:owner,kind,status,finished_at"      = { collection = "tasks", fields = ["owner", "kind", "status", "finished_at"] }
    "exports:destination.kind,created_at"      = { collection = "exports", fields = ["destination.kind", "created_at"] }
    "exports:status,created_at"                = { collection = "exports", fields = ["status", "created_at"] }
    "exports:owner,status,finished_at"         = { collection = "exports", fields = ["owner", "status", "finished_at"] }
    "operations:owner,created_at"              = { collection = "operations", fields = ["owner", "created_at"] }
    "automations:owner,created_at"             = { collection = "automations", fields = ["owner", "created_at"] }
    "automations:owner,account"                = { collection = "automations", fields = ["owner", "account"] }
    "collections:owner,name"                   = { collection = "collections", fields = ["owner", "name"] }
    "collection_docs:collection_id,created_at" = { collection = "collection_docs", fields = ["collection_id", "created_at"] }
  }

  # Each in both directions of its last field: the store orders by it either
  # way (newest first, latest run), then by document id in the same direction.
  firestore_index_instances = merge([
    for key, index in local.firestore_composite_indexes : {
      for order in ["ASCENDING", "DESCENDING"] : "${key}:${lower(order)}" => merge(index, { order = order })
    }
  ]...)
}

resource "google_firestore_database" "store" {
  project                           = var.project
  name                              = var.firestore_database
  location_id                       = local.firestore_location
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.api]
}

resource "google_firestore_index" "composite" {
  for_each    = local.firestore_index_instances
  project     = var.project
  database    = google_firestore_database.store.name
  collection  = "${var.firestore_collection_prefix}${each.value.collection}"
  query_scope = "COLLECTION"

  # Equality fields first (their direction is immaterial), the ordered field last.
  dynamic "fields" {
    for_each = slice(each.value.fields, 0, length(each.value.fields) - 1)
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }

  fields {
    field_path = element(each.value.fields, length(each.value.fields) - 1)
    order      = each.value.order
  }

  # Ties break by document id on every backend (the adapter orders by __name__ last).
  fields {
    field_path = "__name__"
    order      = each.value.order
  }
}

# Operations (and whatever else is listed) expire at their expire_at timestamp.
resource "google_firestore_field" "ttl" {
  for_each   = toset(var.ttl_collections)
  project    = var.project
  database   = google_firestore_database.store.name
  collection = "${var.firestore_collection_prefix}${each.key}"
  field      = "expire_at"

  ttl_config {}
}

# The search index (common/adapters/gcp/firestore_index.py): one document per chunk.
# find_nearest pre-filters by owner and index id, so both lead the vector index.
resource "google_firestore_index" "search_vector" {
  project     = var.project
  database    = google_firestore_database.store.name
  collection  = "${var.firestore_collection_prefix}search_chunks"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }

  fields {
    field_path = "index_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "embedding"
    vector_config {
      dimension = var.search_vector_dimension
      flat {}
    }
  }
}

# Lexical candidates and document frequencies: owner == and index id == with terms array-contains.
resource "google_firestore_index" "search_terms" {
  project     = var.project
  database    = google_firestore_database.store.name
  collection  = "${var.firestore_collection_prefix}search_chunks"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }

  fields {
    field_path = "index_id"
    order      = "ASCENDING"
  }

  fields {
    field_path   = "terms"
    array_config = "CONTAINS"
  }
}

# A chunk's text and term counts are read, never queried: no single-field indexes for them
# (the tf map would otherwise index every term, and long texts only cost index writes).
resource "google_firestore_field" "search_unindexed" {
  for_each   = toset(["text", "tf"])
  project    = var.project
  database   = google_firestore_database.store.name
  collection = "${var.firestore_collection_prefix}search_chunks"
  field      = each.key

  index_config {}
}
