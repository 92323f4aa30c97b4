"""functions-framework source for the cloud-shaped end-to-end test.

Serves ``functions/$SLUICE_E2E_FUNCTION/main.py``'s ``handle`` unchanged,
after placing the gcp dependencies where ``common.bootstrap.deps()`` returns
them (its gcp branch is not wired yet; see ``gcp_deps.py``). Signed URLs are
signed with the key file named by ``SLUICE_E2E_SIGNING_KEY``: the storage
emulator's anonymous credentials cannot sign.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

from common import bootstrap
from common.config import Settings
from common.topology import load
from tests.emulators.gcp_deps import build_gcp_deps

REPO = Path(__file__).resolve().parents[2]


def _signing_credentials() -> Any:
    key = os.environ.get("SLUICE_E2E_SIGNING_KEY")
    if not key:
        return None
    from google.oauth2 import service_account

    return service_account.Credentials.from_service_account_file(key)  # type: ignore[no-untyped-call]


_settings = Settings()
bootstrap._cached = build_gcp_deps(_settings, load(_settings.topology), signing_credentials=_signing_credentials())
_main = REPO / "functions" / os.environ["SLUICE_E2E_FUNCTION"] / "main.py"
if _main.exists():
    handle = runpy.run_path(str(_main))["handle"]
else:
    # A test-only kind's function (tests/kinds): the same two lines as every functions/*/main.py.
    import functions_framework

    from common.entrypoints import pubsub_entrypoint

    handle = functions_framework.cloud_event(pubsub_entrypoint(os.environ["SLUICE_E2E_FUNCTION"]))
