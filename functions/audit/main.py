"""Cloud Function (Pub/Sub): the audit kind -- run initializer, one auditor on one document, fan-in."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("audit"))
