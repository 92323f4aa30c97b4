"""Hand-made zip archives for the safety tests: every header field under the test's control.

``zipfile`` refuses (or silently fixes) most of what hostile archives do, so
the bombs are written byte by byte here: local headers, data, central
directory and end record, with sizes, flags, modes and offsets as given.
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

_LOCAL = struct.Struct("<4s5H3L2H")  # 30 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # 46 bytes
_END = struct.Struct("<4s4H2LH")  # 22 bytes


@dataclass
class Raw:
    """One member as written. ``data`` is the stored (already compressed) bytes."""

    name: str
    data: bytes
    method: int = 0  # 0 stored, 8 deflated
    file_size: int | None = None  # declared uncompressed size (default: len(data), for stored)
    crc: int | None = None  # default: crc32(data) (right for stored members)
    flags: int = 0
    mode: int | None = None  # unix mode for external_attr (e.g. S_IFLNK | 0o777)
    # Point this central-directory entry at another member's local header
    # (by index) instead of writing its own: the overlapping-entry bomb.
    same_header_as: int | None = None


def deflated(name: str, content: bytes) -> Raw:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return Raw(
        name=name,
        data=c.compress(content) + c.flush(),
        method=8,
        file_size=len(content),
        crc=zlib.crc32(content),
    )


def deflated_zeros(name: str, size_mib: int) -> Raw:
    """A real deflate stream of ``size_mib`` MiB of zeros, built in milliseconds:
    after a full flush the compressor's state is reset, so every further MiB of
    zeros compresses to the same bytes and can be repeated instead of recomputed.
    (The CRC is left 0: the bomb must be refused before a byte is inflated.)"""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    data = block * size_mib + c.flush()
    return Raw(name=name, data=data, method=8, file_size=size_mib << 20, crc=0)


def build(members: Sequence[Raw]) -> bytes:
    out = io.BytesIO()
    offsets: list[int] = []
    for m in members:
        if m.same_header_as is not None:
            offsets.append(offsets[m.same_header_as])
            continue
        offsets.append(out.tell())
        name = m.name.encode("utf-8")
        out.write(
            _LOCAL.pack(
                b"PK\x03\x04",
                20,
                m.flags | 0x800,
                m.method,
                0,
                0x21,
                _crc(m),
                len(m.data),
                _size(m),
                len(name),
                0,
            )
        )
        out.write(name)
        out.write(m.data)
    cd_start = out.tell()
    for m, offset in zip(members, offsets, strict=True):
        target = members[m.same_header_as] if m.same_header_as is not None else m
        name = m.name.encode("utf-8")
        attr = (m.mode << 16) if m.mode is not None else 0
        out.write(
            _CENTRAL.pack(
                b"PK\x01\x02",
                (3 << 8) | 20,  # made by unix, so external_attr holds a mode
                20,
                m.flags | 0x800,
                target.method,
                0,
                0x21,
                _crc(target),
                len(target.data),
                _size(m if m.file_size is not None else target),
                len(name),
                0,
                0,
                0,
                0,
                attr,
                offset,
            )
        )
        out.write(name)
    cd_size = out.tell() - cd_start
    out.write(_END.pack(b"PK\x05\x06", 0, 0, len(members), len(members), cd_size, cd_start, 0))
    return out.getvalue()


def _crc(m: Raw) -> int:
    return m.crc if m.crc is not None else zlib.crc32(m.data)


def _size(m: Raw) -> int:
    return m.file_size if m.file_size is not None else len(m.data)


def with_zipfile(entries: Sequence[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    """An archive written by Python's own zipfile (deflated), names kept exactly as given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries:
            zf.writestr(name, content)
    return buf.getvalue()


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def pdf(text: str) -> bytes:
    return f"%PDF-1.4\n% {text}\n%%EOF\n".encode()
