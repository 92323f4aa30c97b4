"""Cloud Function (Pub/Sub): the export stage -- a completed run's table, delivered once."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("export"))
