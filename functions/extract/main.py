"""Cloud Function (Pub/Sub): the extract stage -- run initializer, extraction, fan-in."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("extract"))
