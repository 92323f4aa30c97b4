"""Cloud Function (Pub/Sub, fired hourly by Cloud Scheduler): cleanup and recovery sweeps."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("cleanup"))
