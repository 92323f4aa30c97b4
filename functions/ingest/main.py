"""Cloud Function (Pub/Sub): the ``ingest`` job kind -- a collection's documents read, chunked, embedded, indexed."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("ingest"))
