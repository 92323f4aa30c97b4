"""Cloud Function (Pub/Sub): the research kind -- the plan, one sub-question per item, the report."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("research"))
