"""Cloud Function (Pub/Sub): the enrich kind -- a run's row ranges, each filled by the text model and written back."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("enrich"))
