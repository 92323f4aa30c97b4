"""Reading zip archives defensively: the I/O half of :mod:`common.core.archives`.

:func:`open_archive` checks the end-of-central-directory record *before*
``zipfile`` parses the central directory (an archive claiming a million entries
is refused without building a million ``ZipInfo`` objects), reads each
member's local header to learn where its data really ends (for overlap
detection), and returns an :class:`OpenedArchive` carrying the plan.
Members are then streamed one at a time through :class:`MemberStream`, which
counts and hashes the bytes and aborts past the member's declared size.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, BinaryIO

from common.core import archives as rules
from common.core.archives import ArchiveLimits, MemberEntry, Reason, Verdict

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes, just before the EOCD
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_LOCAL_HEADER_LEN = 30
# A central-directory entry is 46 bytes plus its name, extra field and comment;
# a directory much larger than this per allowed member hides more entries than
# its count admits (zipfile parses by size, not by count).
_MAX_CD_BYTES_PER_MEMBER = 2048

CHUNK = 1024 * 1024


class MemberTooLarge(Exception):
    """A member yielded more bytes than it declared (or than the budget allows)."""


class CorruptMember(Exception):
    """A member's data could not be decoded (bad CRC, truncated or invalid stream)."""


@dataclass(frozen=True)
class CentralDirectory:
    entries: int
    size: int
    offset: int


def read_central_directory(f: BinaryIO) -> CentralDirectory | None:
    """The counts the end-of-central-directory record declares (zip64 aware), or None if absent."""
    f.seek(0, io.SEEK_END)
    size = f.tell()
    tail_len = min(size, _EOCD.size + 0xFFFF)
    tail_start = size - tail_len
    f.seek(tail_start)
    tail = f.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < _EOCD.size:
        return None
    _sig, _disk, _cd_disk, _n_disk, entries, cd_size, cd_offset, _comment = _EOCD.unpack_from(tail, pos)
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        locator_at = tail_start + pos - _ZIP64_LOCATOR.size
        if locator_at >= 0:
            f.seek(locator_at)
            locator = f.read(_ZIP64_LOCATOR.size)
            if len(locator) == _ZIP64_LOCATOR.size and locator[:4] == b"PK\x06\x07":
                _s, _d, z64_offset, _t = _ZIP64_LOCATOR.unpack(locator)
                f.seek(z64_offset)
                record = f.read(_ZIP64_EOCD.size)
                if len(record) == _ZIP64_EOCD.size and record[:4] == b"PK\x06\x06":
                    fields = _ZIP64_EOCD.unpack(record)
                    entries, cd_size, cd_offset = int(fields[7]), int(fields[8]), int(fields[9])
    return CentralDirectory(entries=int(entries), size=int(cd_size), offset=int(cd_offset))


def _local_data_end(f: BinaryIO, info: zipfile.ZipInfo) -> int | None:
    """Where the member's local header plus compressed data ends, from its *local* header
    (whose name and extra lengths may differ from the central directory's)."""
    if info.header_offset < 0:
        return None
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER_LEN)
    if len(header) < _LOCAL_HEADER_LEN or header[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    return info.header_offset + _LOCAL_HEADER_LEN + int(name_len) + int(extra_len) + info.compress_size


def _entry(index: int, info: zipfile.ZipInfo, f: BinaryIO) -> MemberEntry:
    return MemberEntry(
        index=index,
        name=info.filename,
        flag_bits=info.flag_bits,
        external_attr=info.external_attr,
        compress_type=info.compress_type,
        compress_size=info.compress_size,
        file_size=info.file_size,
        header_offset=info.header_offset,
        data_end=_local_data_end(f, info),
    )


class MemberStream(io.BufferedIOBase):
    """A member's bytes, counted and hashed as they pass; at most ``limit`` of them.

    ``zipfile`` stops at the declared size on its own; counting here does not
    trust that (declared sizes lie, and the limit also carries the archive's
    remaining budget). Decoding errors surface as :class:`CorruptMember` so a
    caller can tell them from errors of wherever the bytes are written.
    """

    def __init__(self, raw: IO[bytes], *, limit: int, name: str) -> None:
        super().__init__()
        self._raw = raw
        self._limit = limit
        self._name = name
        self._head = b""
        self.count = 0
        self._sha = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def readable(self) -> bool:
        return True

    def _pull(self, size: int) -> bytes:
        try:
            data = self._raw.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError, lzma.LZMAError, OSError) as exc:
            # Python's bz2 raises OSError for invalid data.
            raise CorruptMember(f"{self._name}: {exc}") from exc
        self.count += len(data)
        if self.count > self._limit:
            raise MemberTooLarge(f"{self._name} yields more than {self._limit} bytes")
        self._sha.update(data)
        return data

    def peek_head(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer if the member is shorter), replayed by later reads."""
        while len(self._head) < size:
            more = self._pull(size - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:size]

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        if self._head:
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._pull(size)

    def read1(self, size: int = -1, /) -> bytes:
        return self.read(size if size >= 0 else CHUNK)


class OpenedArchive:
    """A parsed archive and a verdict for each of its entries."""

    def __init__(self, zf: zipfile.ZipFile, plan: list[tuple[MemberEntry, Verdict]]) -> None:
        self._zf = zf
        self._infos = zf.infolist()
        self.plan = plan

    @contextmanager
    def open_member(self, entry: MemberEntry) -> Iterator[MemberStream]:
        """Stream one planned member, held to its declared size."""
        info = self._infos[entry.index]
        try:
            raw = self._zf.open(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError) as exc:
            # RuntimeError: zipfile's "encrypted, password required" (bit 0 is
            # checked before, but the local header may say otherwise).
            raise CorruptMember(f"{entry.name}: {exc}") from exc
        with raw:
            yield MemberStream(raw, limit=entry.file_size, name=entry.name)

    def close(self) -> None:
        self._zf.close()

    def __enter__(self) -> OpenedArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_archive(f: BinaryIO, limits: ArchiveLimits) -> OpenedArchive | Verdict:
    """The archive with its plan, or the verdict that refuses expanding it at all."""
    cd = read_central_directory(f)
    if cd is None:
        return rules.reject(Reason.CORRUPT_ARCHIVE, "no zip end-of-central-directory record")
    refused = rules.too_many_members(cd.entries, limits)
    if refused is not None:
        return refused
    if cd.size > limits.max_members * _MAX_CD_BYTES_PER_MEMBER:
        return rules.reject(
            Reason.TOO_MANY_MEMBERS,
            f"central directory of {cd.size} bytes is larger than {limits.max_members} entries need",
        )
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        return rules.reject(Reason.CORRUPT_ARCHIVE, f"not a readable zip archive: {exc}")
    infos = zf.infolist()
    refused = rules.too_many_members(len(infos), limits)  # the count in the EOCD may lie
    if refused is not None:
        zf.close()
        return refused
    entries = [_entry(i, info, f) for i, info in enumerate(infos)]
    plan = rules.plan(entries, limits, central_directory_start=zf.start_dir)
    return OpenedArchive(zf, plan)
