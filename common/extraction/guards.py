"""Cheap checks on raw PDF bytes before any PDF library parses them.

The PDF engine inflates compressed streams in native code, where Python has
no say over memory. :func:`scan_streams` therefore inflates every
Flate-compressed stream itself first -- incrementally, a bounded chunk at a
time, discarding the output -- and rejects the file as soon as a stream (or the
whole file) would expand beyond a cap. Memory use of the scan is bounded by
the chunk size whatever the file claims.
"""

from __future__ import annotations

import re
import zlib

from common.core.errors import UnreadableDocument

__all__ = ["MAX_STREAM_BYTES", "MAX_TOTAL_INFLATED", "check_bytes", "scan_streams"]

# Text extraction inflates content streams, fonts, object and xref streams.
# Real invoices stay far below these; a decompression bomb does not.
MAX_STREAM_BYTES = 64 * 1024 * 1024
MAX_TOTAL_INFLATED = 256 * 1024 * 1024
_CHUNK = 64 * 1024  # compressed bytes fed per step
_OUT_CHUNK = 1024 * 1024  # inflated bytes produced per step (bounds memory)

# (a lookbehind for "endstream" makes the scan 30x slower; it is checked by hand)
_STREAM_RE = re.compile(rb"stream(?:\r\n|\n|\r)")
_FLATE_RE = re.compile(rb"/(?:FlateDecode|Fl)(?![A-Za-z])")


def check_bytes(data: bytes, *, max_bytes: int) -> None:
    """Reject empty, oversized, non-PDF and visibly truncated input."""
    if not data:
        raise UnreadableDocument("The document is empty (0 bytes).", hint="Upload the file again.")
    if len(data) > max_bytes:
        raise UnreadableDocument(
            f"The document is {len(data):,} bytes, over the {max_bytes:,}-byte limit.",
            hint="Split the PDF or raise the size limit.",
        )
    if b"%PDF-" not in data[:1024]:
        raise UnreadableDocument(
            "The file is not a PDF (no %PDF- header).",
            hint="Only PDF documents can be extracted.",
        )
    # Every complete PDF (and every incremental update) ends with %%EOF;
    # without it near the end the upload was cut off.
    if b"%%EOF" not in data[-8192:]:
        raise UnreadableDocument(
            "The PDF is truncated or corrupt (no %%EOF end marker).",
            hint="The upload may have been cut off; upload a complete copy.",
        )


def _inflate_size(data: bytes, start: int, layers: int, cap: int) -> int:
    """Bytes that ``layers`` chained Flate decoders produce from ``data[start:]``.

    Stops as soon as ``cap`` is exceeded (returning a value above the cap) or
    the outermost stream ends. A corrupt stream counts what it produced so far.
    """
    decoders = [zlib.decompressobj() for _ in range(layers)]
    view = memoryview(data)  # slicing a memoryview does not copy the file
    produced = 0
    pos = start
    end = len(data)

    def push(level: int, chunk: bytes) -> bool:
        """Feed ``chunk`` to decoder ``level``; False once over the cap."""
        nonlocal produced
        d = decoders[level]
        buf = chunk
        while buf and not d.eof:
            out = d.decompress(buf, _OUT_CHUNK)
            buf = d.unconsumed_tail
            if level + 1 < layers:
                if not push(level + 1, out):
                    return False
            else:
                produced += len(out)
                if produced > cap:
                    return False
            if not out and not buf:
                break
        return True

    try:
        while pos < end and not decoders[0].eof:
            if not push(0, bytes(view[pos : pos + _CHUNK])):
                return produced
            pos += _CHUNK
    except zlib.error:
        pass  # the PDF engine decides what to do with a broken stream
    return produced


def scan_streams(
    data: bytes,
    *,
    max_stream: int = MAX_STREAM_BYTES,
    max_total: int = MAX_TOTAL_INFLATED,
) -> int:
    """Inflate-count every Flate stream; raise UnreadableDocument on a bomb.

    Image streams are skipped: text extraction never decodes them. Returns the
    total inflated size, for diagnostics.
    """
    total = 0
    for m in _STREAM_RE.finditer(data):
        if data[max(0, m.start() - 3) : m.start()] == b"end":
            continue
        head = data[max(0, m.start() - 2048) : m.start()]
        cut = head.rfind(b"obj")
        if cut >= 0:
            head = head[cut:]
        layers = len(_FLATE_RE.findall(head))
        if not layers or b"/Image" in head:
            continue
        size = _inflate_size(data, m.end(), min(layers, 4), max_stream)
        total += size
        if size > max_stream or total > max_total:
            raise UnreadableDocument(
                "The PDF contains compressed data that inflates beyond "
                f"{(max_stream if size > max_stream else max_total) // (1024 * 1024)} MiB "
                "(a decompression bomb or a damaged file); it was not processed.",
                hint="Re-export the document from its source application.",
            )
    return total
