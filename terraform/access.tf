# Least privilege: what each function's own service account may do.
#
# Keys must be exactly the functions of topology.yaml (a missing one fails the
# plan, and tests/terraform/test_parity.py fails first). Per function:
#   publishes      message kinds it sends: common/service/registry.PUBLISHES
#                  (the API sends the "commands"). The topic of each kind comes
#                  from the topology, so moving a kind moves the grant. A
#                  subscriber may also publish to its own dead-letter topic
#                  (common/entrypoints.py dead-letters unprocessable messages).
#   buckets        bucket (topology key) => storage roles on that bucket only.
#   secrets        keys of local.secrets it reads.
#   project_roles  project roles beyond the baseline below.
#   enqueues_tasks creates Cloud Tasks (scheduled runs) as local.tasks_publishes.
#   signs_urls     signs Cloud Storage URLs with its own key (signBlob on itself).

locals {
  function_access = {
    api = {
      publishes      = ["run.start", "ingest.start", "audit.start", "enrich.start", "research.start", "drive.import", "gmail.import"]
      buckets        = { uploads = ["roles/storage.objectCreator", "roles/storage.objectViewer"], exports = ["roles/storage.objectViewer"] }
      secrets        = ["oauth-client-secret", "token-key"]
      project_roles  = []
      enqueues_tasks = true
      signs_urls     = true
    }
    import_drive = {
      publishes      = ["drive.import", "drive.file"]
      buckets        = { uploads = ["roles/storage.objectCreator", "roles/storage.objectViewer"] }
      secrets        = ["oauth-client-secret", "token-key"]
      project_roles  = []
      enqueues_tasks = false
      signs_urls     = false
    }
    import_gmail = {
      # automation.imported: the continuation an automation set on the import's operation.
      publishes      = ["gmail.message", "automation.imported"]
      buckets        = { uploads = ["roles/storage.objectCreator", "roles/storage.objectViewer"] }
      secrets        = ["oauth-client-secret", "token-key"]
      project_roles  = []
      enqueues_tasks = false
      signs_urls     = false
    }
    import_upload = {
      publishes      = []
      buckets        = { uploads = ["roles/storage.objectViewer"] }
      secrets        = []
      project_roles  = []
      enqueues_tasks = false
      signs_urls     = false
    }
    extract = {
      publishes = ["task.extract", "export.run", "run.deadline", "item.lease_check"]
      # Reads uploads; writes the page-range parts of oversized documents beside them.
      buckets        = { uploads = ["roles/storage.objectCreator", "roles/storage.objectViewer"] }
      secrets        = []
      project_roles  = ["roles/aiplatform.user"]
      enqueues_tasks = false
      signs_urls     = false
    }
    ingest = {
      # Fans a collection's run out into one message per document; reads the stored documents;
      # Vertex AI text embeddings.
      publishes      = ["ingest.item", "run.deadline", "item.lease_check"]
      buckets        = { uploads = ["roles/storage.objectViewer"] }
      secrets        = []
      project_roles  = ["roles/aiplatform.user"]
      enqueues_tasks = false
      signs_urls     = false
    }
    enrich = {
      # Fans a run out into row ranges; reads and writes the user's sheet with their OAuth grant;
      # Gemini on Vertex AI (or an OpenAI-compatible endpoint) answers the rows.
      publishes      = ["enrich.item", "run.deadline", "item.lease_check"]
      buckets        = {}
      secrets        = ["oauth-client-secret", "token-key"]
      project_roles  = ["roles/aiplatform.user"]
      enqueues_tasks = false
      signs_urls     = false
    }
    export = {
      publishes = []
      # Writes the tables; Drive and Gmail destinations act with the user's OAuth tokens.
      buckets        = { exports = ["roles/storage.objectCreator", "roles/storage.objectViewer"] }
      secrets        = ["oauth-client-secret", "token-key"]
      project_roles  = []
      enqueues_tasks = false
      signs_urls     = true
    }
    automation = {
      # Gmail notifications start imports, and finished imports start runs.
      publishes      = ["gmail.import", "gmail.notification", "run.start"]
      buckets        = {}
      secrets        = ["oauth-client-secret", "token-key"]
      project_roles  = []
      enqueues_tasks = false
      signs_urls     = false
    }
    audit = {
      # Document audits: one auditor per item; the fan-in may start the run's exports.
      # run.deadline / item.lease_check: its runs' timeout and its stalled items (the run machinery of every kind).
      publishes      = ["audit.item", "export.run", "run.deadline", "item.lease_check"]
      buckets        = { uploads = ["roles/storage.objectViewer"] }
      secrets        = []
      project_roles  = ["roles/aiplatform.user"]
      enqueues_tasks = false
      signs_urls     = false
    }
    research = {
      # The plan, one sub-question per item and the report: the collections' search index (Firestore),
      # Gemini on Vertex AI (or an OpenAI-compatible endpoint), the report written to the exports bucket.
      publishes      = ["research.start", "research.item", "research.finish", "export.run", "run.deadline", "item.lease_check"]
      buckets        = { exports = ["roles/storage.objectCreator", "roles/storage.objectViewer"] }
      secrets        = []
      project_roles  = ["roles/aiplatform.user"]
      enqueues_tasks = false
      signs_urls     = false
    }
    cleanup = {
      # Re-sends stuck tasks; renews users' Gmail watches (their OAuth tokens).
      publishes      = ["task.extract", "audit.item", "enrich.item", "ingest.item", "research.item"]
      buckets        = {}
      secrets        = ["oauth-client-secret", "token-key"]
      project_roles  = []
      enqueues_tasks = false
      signs_urls     = false
    }
  }

  # Every function: Firestore (datastore.user, conditioned on Sluice's database),
  # plus writing its own traces and metrics.
  baseline_project_roles = ["roles/cloudtrace.agent", "roles/monitoring.metricWriter"]

  # Kinds that Cloud Tasks delivers later (common/service/jobs.request_run schedules run.start).
  tasks_publishes = ["run.start"]

  # Secret Manager secrets and the variable each is mounted as.
  secrets = {
    oauth-client-secret = { env = "SLUICE_GOOGLE_CLIENT_SECRET" }
    token-key           = { env = "SLUICE_TOKEN_KEY" }
  }

  # Pub/Sub topics each function publishes to: its kinds' topics plus its dead-letter topic.
  topic_publishers = merge([
    for fn, a in local.function_access : {
      for topic in distinct(concat(
        [for kind in a.publishes : local.kind_topic[kind]],
        [for s in local.subscriptions : s.dead_letter_topic if s.function == fn && s.dead_letter_topic != null],
      )) : "${fn}/${topic}" => { function = fn, topic = topic }
    }
  ]...)

  # The HTTP functions (the API) list and replay dead letters (GET /v1/dead-letters,
  # /v1/admin/...): they pull the hold subscriptions and publish a replayed message
  # back to the topic it came from (grants they do not hold already).
  dead_letter_readers = {
    for pair in setproduct(tolist(local.http_functions), keys(local.dead_letter_topics)) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], topic = pair[1] }
  }
  replay_publishers = {
    for pair in setproduct(tolist(local.http_functions), keys(local.subscriptions)) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], topic = pair[1] }
    if local.subscriptions[pair[1]].dead_letter_topic != null && !contains(keys(local.topic_publishers), "${pair[0]}/${pair[1]}")
  }

  bucket_grants = merge(flatten([
    for fn, a in local.function_access : [
      for bucket, roles in a.buckets : {
        for role in roles : "${fn}/${bucket}/${role}" => { function = fn, bucket = bucket, role = role }
      }
    ]
  ])...)

  secret_grants = merge([
    for fn, a in local.function_access : {
      for secret in a.secrets : "${fn}/${secret}" => { function = fn, secret = secret }
    }
  ]...)

  project_grants = merge([
    for fn, a in local.function_access : {
      for role in concat(local.baseline_project_roles, a.project_roles) : "${fn}/${role}" => { function = fn, role = role }
    }
  ]...)

  task_enqueuers = toset([for fn, a in local.function_access : fn if a.enqueues_tasks])
  url_signers    = toset([for fn, a in local.function_access : fn if a.signs_urls])

  enqueuer_grants = {
    for pair in setproduct(local.task_enqueuers, keys(local.topology.task_queues)) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], queue = pair[1] }
  }

  tasks_topics = toset([for kind in local.tasks_publishes : local.kind_topic[kind]])

  api_invokers = {
    for pair in setproduct(local.http_functions, var.api_invoker_members) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], member = pair[1] }
  }
}
