"""Importing saved e-mails (``.eml``): their attachments become files of a job.

The message is parsed with the standard library (``policy=default``, so RFC
2231 and RFC 2047 file names come out decoded) and its attachments go through
the same code path as Gmail's (:func:`common.service.gmail_import.import_attachments`),
zip expansion and its safety rules included.

An attachment's identity is ``eml:{sha256 of the file}:{index}`` -- the n-th
named part, depth first, as Gmail orders them. The file's hash rather than its
Message-ID: ids are missing, anonymised (``<xxxx@xxxx.com>``) or reused often
enough that two different e-mails sharing one would silently lose the second
one's attachments as "already imported"; importing the same file again finds
the same files.

``sluice import-eml FILE.eml... [--job JOB]`` is :func:`cmd_import_eml`.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import hashlib
import json
import re
import sys
from collections.abc import Callable, Sequence
from email.message import EmailMessage, Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.imports import Attachment, ImportOutcome

if TYPE_CHECKING:
    from common.core.archives import ArchiveLimits
    from common.core.models import Job
    from common.service.context import Deps

# The owner of everything the embedded backend's CLI creates (as ``sluice run``'s).
LOCAL_OWNER = "local"


def parse_eml(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)  # policy=default builds EmailMessage
    return message


_RAW_NAME = re.compile(r"""(?:^|;)\s*(?:file)?name\s*=\s*("[^"]*"|[^;\s]+)""", re.IGNORECASE)


def _from_8bit(raw: bytes) -> str:
    """Raw 8-bit header bytes: UTF-8 nearly always, else Latin-1 (which decodes anything)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _filename(part: Message) -> str | None:
    """The part's decoded file name (RFC 2231 / RFC 2047 by the email package).

    Names sent as raw 8-bit bytes that are not UTF-8 come out of the email
    package with replacement characters; those are re-read from the raw header.
    """
    name = part.get_filename()
    if not name:
        return None
    name = str(name)
    if "\ufffd" not in name and not any("\udc80" <= ch <= "\udcff" for ch in name):
        return name
    for header in ("content-disposition", "content-type"):
        for key, value in part.raw_items():
            if key.lower() != header:
                continue
            match = _RAW_NAME.search(str(value))
            if match:
                raw = match.group(1).strip('"').encode("ascii", "surrogateescape")
                return _from_8bit(raw)
    return name


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def eml_attachments(message: EmailMessage, *, key: str) -> list[Attachment]:
    """The message's named leaf parts, depth first, as :class:`Attachment` values."""
    out: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        filename = _filename(part)
        if not filename:
            continue
        index = len(out)
        content = _payload(part)
        out.append(
            Attachment(
                external_id=f"eml:{key}:{index}",
                name=filename,
                declared_type=part.get_content_type(),
                load=_constant(content),
                size=len(content),
            )
        )
    return out


def import_eml(deps: Deps, job: Job, path: Path, *, limits: ArchiveLimits | None = None) -> list[ImportOutcome]:
    """Import the attachments of the saved e-mail at ``path`` into ``job``."""
    from common.core.models import SourceType
    from common.service.gmail_import import import_attachments

    raw = path.read_bytes()
    key = hashlib.sha256(raw).hexdigest()[:32]
    attachments = eml_attachments(parse_eml(raw), key=key)
    return import_attachments(deps, job, attachments, source_type=SourceType.UPLOAD, limits=limits)


def _job_key(paths: Sequence[Path]) -> str:
    """The same e-mails imported again without --job find the job they went into."""
    digests = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
    return "import-eml:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()[:32]


def _job_for(deps: Deps, args: argparse.Namespace, paths: Sequence[Path]) -> tuple[Job, bool]:
    from common.core.schema import preset
    from common.service import jobs

    if args.job:
        return jobs.require_job(deps, args.job, owner=LOCAL_OWNER), False
    key = _job_key(paths)
    found = jobs.find_job_by_key(deps, owner=LOCAL_OWNER, key=key)
    if found is not None:
        return found, False
    name = paths[0].name if len(paths) == 1 else f"{paths[0].name} and {len(paths) - 1} more"
    return jobs.create_job(deps, owner=LOCAL_OWNER, name=name, fields=preset("invoice"), key=key), True


def cmd_import_eml(args: argparse.Namespace) -> int:
    """``sluice import-eml``: one JSON line per attachment or archive member on stdout.

    Exit status 0 when every attachment was imported or was there already, 1
    when some were rejected or failed (their lines say why): the codes of
    every ``sluice`` command (``sluice --help``).
    """
    from common.bootstrap import bootstrap
    from common.cli_support import DOCUMENTS_FAILED, OK, load_settings
    from common.obs import logging as slog

    slog.configure(getattr(args, "log_level", "WARNING"), "text")
    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not p.is_file():
            raise ValueError(f"{p}: no such file")
    deps = bootstrap(load_settings(args.data_dir))
    job, created = _job_for(deps, args, paths)
    if not getattr(args, "quiet", False):
        state = "a new job" if created else "job"
        print(f"sluice: importing into {state} {job.id}", file=sys.stderr)
    problems = 0
    for path in paths:
        outcomes = import_eml(deps, job, path)
        lines: list[dict[str, Any]] = [o.to_json(email=str(path)) for o in outcomes]
        if not outcomes:
            lines = [
                {
                    "email": str(path),
                    "attachment": None,
                    "member": None,
                    "status": "skipped",
                    "reason": "no attachments",
                    "file_id": None,
                }
            ]
        problems += sum(1 for o in outcomes if o.status in ("rejected", "failed"))
        for line in lines:
            print(json.dumps(line, ensure_ascii=False), flush=True)
    return DOCUMENTS_FAILED if problems else OK
