"""Cloud Function (Pub/Sub): Google Drive imports -- folder listing fan-out and per-file import."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("import_drive"))
