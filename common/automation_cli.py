"""``sluice automation simulate``: try an automation offline with a saved e-mail.

``sluice automation simulate --eml FILE.eml --account ADDR [--data-dir DIR]``
feeds the e-mail through the automation path on the embedded backend: the
account's enabled automations fire (one is created, with a job using the
invoice preset and an XLSX download export, if the account has none), the
attachments are imported through the ``.eml`` path instead of Gmail, and the
import's continuation starts the same run -> export chain a Gmail push does.
The audit record of each firing is printed as one JSON line.

Gmail's search query is not evaluated offline (only Gmail can): every enabled
automation of the account fires. Feeding the same file again finds the same
firings (the exactly-once key is the file's hash) and just prints them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.core.models import Automation
    from common.service.context import Deps

LOCAL_OWNER = "local"  # the owner of everything the embedded backend's CLI creates


def add_automation_commands(sub: Any) -> None:
    """Add ``automation simulate`` to the ``sluice`` sub-commands (``sub`` from ``add_subparsers``)."""
    from common.cli_support import add_common

    auto = sub.add_parser("automation", help="Gmail automations (import -> run -> export)")
    cmds = auto.add_subparsers(dest="automation_command", required=True)
    sim = cmds.add_parser("simulate", help="feed a saved e-mail through the automation chain, offline")
    sim.add_argument("--eml", type=Path, required=True, help="the saved e-mail (.eml)")
    sim.add_argument("--account", required=True, help="the Gmail address the e-mail arrived at")
    sim.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the chain (default: 600)")
    add_common(sim, quiet=False)
    sim.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Exit status 0 when every firing's chain completed, 3 otherwise (the records say why)."""
    from common.bootstrap import local_app
    from common.cli_support import data_dir_lock, load_settings
    from common.imports.eml import eml_attachments, parse_eml
    from common.obs import logging as slog
    from common.service import automation

    slog.configure(args.log_level, "text")
    path: Path = args.eml
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw = path.read_bytes()
    settings = load_settings(args.data_dir)
    with data_dir_lock(args.data_dir):
        app = local_app(settings)
        deps, runtime, sender = app.deps, app.runtime, app.sender
        automations = automation.enabled_automations(deps, owner=LOCAL_OWNER, account=args.account)
        if not automations:
            automations = [_default_automation(deps, args.account)]
            print(f"sluice: created automation {automations[0].id} for {args.account}", file=sys.stderr)
        records = [
            automation.fire_eml(deps, sender, a, raw, parse=lambda data, key: eml_attachments(parse_eml(data), key=key))
            for a in automations
        ]
        runtime.start()
        try:
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                records = [automation.settle(deps, r.id) for r in records]
                if all(automation.chain_finished(r) for r in records):
                    break
                time.sleep(0.1)
        finally:
            runtime.stop()
        audits = [_links_that_work(deps, automation.describe(deps, r.id)) for r in records]
    for audit in audits:
        print(json.dumps(audit, ensure_ascii=False), flush=True)
    return 0 if all(a["status"] == "completed" for a in audits) else 3


def _links_that_work(deps: Deps, audit: dict[str, Any]) -> dict[str, Any]:
    """A download link only if a server answers it now; else the file it names (``path``)."""
    from common.cli import _served

    path_of = getattr(deps.blobs, "path_of", None)
    for export in audit.get("exports", []):
        url, uri = export.get("url"), export.get("uri")
        if url and not _served(url):
            export["url"] = None
            if path_of is not None and uri:
                export["path"] = str(path_of(uri))
    return audit


def _default_automation(deps: Deps, account: str) -> Automation:
    """The account's simulation automation: a job with the invoice preset, an XLSX download."""
    from common.core.models import Automation
    from common.core.schema import preset
    from common.service import jobs, repo
    from common.service.integrations import normalize_account

    address = normalize_account(account)
    key = f"automation-simulate:{address}"
    job = jobs.find_job_by_key(deps, owner=LOCAL_OWNER, key=key) or jobs.create_job(
        deps, owner=LOCAL_OWNER, name=f"automation for {address}", fields=preset("invoice"), key=key
    )
    now = deps.clock.now()
    record = Automation(
        id="au_" + hashlib.sha256(key.encode()).hexdigest()[:20],
        owner=LOCAL_OWNER,
        name=f"attachments to {address}",
        account=address,
        job_id=job.id,
        created_at=now,
        updated_at=now,
    )
    repo.create_if_absent(deps.store, record)
    return repo.require(deps.store, Automation, record.id)[0]
