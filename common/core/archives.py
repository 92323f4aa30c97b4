"""Which members of a zip archive are safe to import: pure decisions.

The zip reader (:mod:`common.imports.archives`) turns an archive's central
directory into :class:`MemberEntry` values (plain numbers and names, no file
handles); :func:`plan` decides for each one: extract it, reject it with a
reason, or ignore it (directories). Nothing here reads bytes, so every rule is
testable with hand-written entries.

What an archive can do to an importer, and the rule that stops it:

* **Zip slip** -- ``../x.pdf``, ``/etc/x``, ``C:\\x``: rejected. (Objects are named
  by file id anyway, so such a name could not escape the job's storage, but a
  member named that way is hostile or broken either way.)
* **Symlinks** (unix mode ``S_IFLNK`` in ``external_attr``): rejected; the
  "content" is a path on the sender's machine.
* **Encrypted members** (flag bit 0) and compression methods the reader cannot
  decode: rejected, the bytes are unreadable.
* **Compression bombs**: a member declaring more than ``max_ratio`` times its
  compressed size is rejected; members are admitted until their declared sizes
  reach ``max_total_bytes``; the reader also counts the bytes it actually
  streams and aborts a member that yields more than it declared.
* **Overlapping entries** (the "quoted-overlap" bomb, CVE-2024-0450): many
  central-directory entries pointing into the same local data. Python 3.11.7's
  ``zipfile`` does not check this, so every member whose local header and data
  overlap another member's, or run into the central directory, is rejected.
* **Too many members**: an archive declaring more than ``max_members`` entries
  is not expanded at all (its central directory is not even parsed), rather
  than imported in part -- a partial import would be a silent surprise, and
  re-importing after splitting the archive would duplicate what was taken.
* **Nested archives** are imported as files but not expanded: one level only.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

# Compression methods Python's zipfile decodes: stored, deflated, bzip2, lzma.
SUPPORTED_COMPRESSION = frozenset({0, 8, 12, 14})
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 1_000
    max_total_bytes: int = 500 * 1024 * 1024  # uncompressed, over the members admitted
    max_ratio: float = 100.0  # uncompressed / compressed, per member
    # Small files compress far beyond 100:1 (a page of repeated lines); below
    # this size the ratio says nothing dangerous, the total cap bounds them.
    ratio_min_bytes: int = 1024 * 1024


class Reason(StrEnum):
    """Why a member (or a whole archive) was not imported; stored as the error code."""

    UNSAFE_PATH = "unsafe_path"
    SYMLINK = "symlink"
    ENCRYPTED = "encrypted"
    UNSUPPORTED_COMPRESSION = "unsupported_compression"
    COMPRESSION_RATIO = "compression_ratio"
    SIZE_LIMIT = "size_limit"
    OVERLAPPING_ENTRY = "overlapping_entry"
    DUPLICATE_NAME = "duplicate_name"
    CORRUPT_MEMBER = "corrupt_member"
    TOO_MANY_MEMBERS = "too_many_members"
    CORRUPT_ARCHIVE = "corrupt_archive"
    NESTED_ARCHIVE = "nested_archive"  # imported, but not expanded


@dataclass(frozen=True)
class MemberEntry:
    """One central-directory entry, as numbers (see ``zipfile.ZipInfo``)."""

    index: int
    name: str
    flag_bits: int = 0
    external_attr: int = 0
    compress_type: int = 8
    compress_size: int = 0
    file_size: int = 0
    header_offset: int = 0
    # Where the member's local header plus data ends; None when the local
    # header could not be read (a corrupt or hostile offset).
    data_end: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True)
class Verdict:
    action: Literal["extract", "reject", "ignore"]
    reason: Reason | None = None
    detail: str = ""

    @property
    def rejected(self) -> bool:
        return self.action == "reject"


EXTRACT = Verdict("extract")


def reject(reason: Reason, detail: str) -> Verdict:
    return Verdict("reject", reason, detail)


def path_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative member path, or None if it is."""
    if not name or "\x00" in name:
        return "empty name or NUL byte"
    # Windows tools write backslashes; treat them as separators too.
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        return "absolute path"
    if ".." in unified.split("/"):
        return "parent directory (..) in path"
    if not any(part not in ("", ".") for part in unified.split("/")):
        return "path names no file"
    return None


def is_symlink(external_attr: int) -> bool:
    """Unix tools keep the file mode in the high 16 bits of ``external_attr``."""
    return stat.S_ISLNK(external_attr >> 16)


def judge_member(entry: MemberEntry, limits: ArchiveLimits) -> Verdict:
    """The rules that need only the entry itself (not budget, overlaps or names seen)."""
    if entry.is_dir:
        return Verdict("ignore", detail="directory")
    problem = path_problem(entry.name)
    if problem is not None:
        return reject(Reason.UNSAFE_PATH, f"unsafe member path {entry.name!r}: {problem}")
    if is_symlink(entry.external_attr):
        return reject(Reason.SYMLINK, f"{entry.name} is a symbolic link")
    if entry.flag_bits & 0x1:
        return reject(Reason.ENCRYPTED, f"{entry.name} is encrypted")
    if entry.compress_type not in SUPPORTED_COMPRESSION:
        return reject(Reason.UNSUPPORTED_COMPRESSION, f"{entry.name} uses compression method {entry.compress_type}")
    if entry.file_size >= limits.ratio_min_bytes:
        ratio = entry.file_size / entry.compress_size if entry.compress_size > 0 else float("inf")
        if ratio > limits.max_ratio:
            return reject(
                Reason.COMPRESSION_RATIO,
                f"{entry.name} declares {entry.file_size} bytes from {entry.compress_size} "
                f"(ratio {ratio:.0f}:1 > {limits.max_ratio:.0f}:1)",
            )
    if entry.file_size > limits.max_total_bytes:
        return reject(Reason.SIZE_LIMIT, f"{entry.name} declares {entry.file_size} bytes > {limits.max_total_bytes}")
    return EXTRACT


def find_overlaps(entries: Sequence[MemberEntry], central_directory_start: int) -> frozenset[int]:
    """Indexes of entries whose [header_offset, data_end) overlaps another's or
    runs past the start of the central directory (or whose local header was unreadable).

    Sorted by offset, an entry overlaps if it starts before the furthest end
    seen so far; the entry that reached that end is marked too, so both sides
    of an overlap are refused, whichever the central directory lists first.
    """
    bad: set[int] = set()
    spans = sorted(entries, key=lambda e: (e.header_offset, e.index))
    furthest_end = -1
    furthest_index: int | None = None
    for e in spans:
        if e.data_end is None:
            bad.add(e.index)
            continue
        if e.data_end > central_directory_start or e.header_offset < 0:
            bad.add(e.index)
        if e.header_offset < furthest_end and furthest_index is not None:
            bad.add(e.index)
            bad.add(furthest_index)
        if e.data_end > furthest_end:
            furthest_end = e.data_end
            furthest_index = e.index
    return frozenset(bad)


def plan(
    entries: Sequence[MemberEntry],
    limits: ArchiveLimits,
    *,
    central_directory_start: int,
) -> list[tuple[MemberEntry, Verdict]]:
    """A verdict for every entry, in central-directory order.

    Members are admitted while the sum of their declared sizes stays within
    ``max_total_bytes``; a member the budget cannot hold is rejected and later,
    smaller ones may still fit. The reader holds each member to its declared
    size while streaming, so the declared sum bounds the bytes written.
    """
    overlaps = find_overlaps(entries, central_directory_start)
    seen: set[str] = set()
    budget = limits.max_total_bytes
    out: list[tuple[MemberEntry, Verdict]] = []
    for e in entries:
        verdict = judge_member(e, limits)
        if verdict.action == "extract":
            key = e.name.replace("\\", "/")
            if e.index in overlaps:
                verdict = reject(
                    Reason.OVERLAPPING_ENTRY, f"{e.name} overlaps another member's data (overlapping-entry zip bomb)"
                )
            elif key in seen:
                verdict = reject(Reason.DUPLICATE_NAME, f"{e.name} appears more than once in the archive")
            elif e.file_size > budget:
                verdict = reject(
                    Reason.SIZE_LIMIT,
                    f"{e.name} ({e.file_size} bytes) exceeds what is left of the archive's "
                    f"{limits.max_total_bytes}-byte limit",
                )
            else:
                budget -= e.file_size
            seen.add(key)
        out.append((e, verdict))
    return out


def too_many_members(count: int, limits: ArchiveLimits) -> Verdict | None:
    if count > limits.max_members:
        return reject(Reason.TOO_MANY_MEMBERS, f"archive has {count} entries (limit {limits.max_members})")
    return None
