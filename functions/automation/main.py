"""Cloud Function (Pub/Sub): automations -- Gmail push notifications start import -> run -> export chains."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("automation"))
