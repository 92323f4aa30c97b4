"""Cloud Function (Pub/Sub): Gmail attachment imports, zips unpacked safely."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("import_gmail"))
