"""Cloud Function (Pub/Sub, fed by the uploads bucket's finalize notifications):
registers an uploaded object as a SourceFile of its job."""

import functions_framework

from common.entrypoints import pubsub_entrypoint

handle = functions_framework.cloud_event(pubsub_entrypoint("import_upload"))
