"""MIME types from content, not from what an e-mail claims.

An attachment's declared type is whatever the sender's mail client guessed (or
chose to say); what Sluice does with a file -- extract it as a PDF, expand it
as an archive -- follows its first bytes instead. The declared type (then the
file name's extension) is the fallback for formats not recognised here.
"""

from __future__ import annotations

import mimetypes

PDF = "application/pdf"
ZIP = "application/zip"
OCTET_STREAM = "application/octet-stream"

# How many leading bytes :func:`sniff` looks at; callers pass at least this.
HEAD_BYTES = 2048

# Zip containers that are documents, not archives to expand.
_ZIP_DOCUMENT_EXTENSIONS = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".epub": "application/epub+zip",
}
_ZIP_DOCUMENT_TYPES = frozenset(_ZIP_DOCUMENT_EXTENSIONS.values())

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _base_type(declared: str | None) -> str | None:
    if not declared:
        return None
    base = declared.split(";", 1)[0].strip().lower()
    return base if "/" in base else None


def _extension(name: str | None) -> str:
    if not name or "." not in name:
        return ""
    return "." + name.rsplit(".", 1)[1].lower()


def _zip_document(head: bytes, declared: str | None, name: str | None) -> str | None:
    """The document type of a zip container that is an office document, or None for a plain zip."""
    if declared in _ZIP_DOCUMENT_TYPES:
        return declared
    by_ext = _ZIP_DOCUMENT_EXTENSIONS.get(_extension(name))
    if by_ext is not None:
        return by_ext
    # ODF stores an uncompressed "mimetype" member first; OOXML usually starts
    # with [Content_Types].xml. Either names the container as a document.
    if head[30:38] == b"mimetype":
        odf = head[38:120].split(b"PK", 1)[0].decode("ascii", "replace").strip()
        return odf if "/" in odf else "application/vnd.oasis.opendocument"
    if b"[Content_Types].xml" in head[:200]:
        return "application/vnd.openxmlformats-officedocument"
    return None


def sniff(head: bytes, *, declared: str | None = None, name: str | None = None) -> str:
    """The MIME type of a file whose first bytes are ``head`` (pass :data:`HEAD_BYTES` or more).

    PDF (``%PDF-`` within the first KiB, as readers accept), zip, PNG, JPEG,
    TIFF and GIF come from the bytes; anything else keeps the declared type,
    or the extension's, or ``application/octet-stream``.
    """
    declared_base = _base_type(declared)
    # Signatures at offset 0 first: a stored zip holding a PDF has "%PDF-"
    # within its first KiB too.
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_document(head, declared_base, name) or ZIP
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if b"%PDF-" in head[:1024]:
        return PDF
    if declared_base is not None and declared_base not in (ZIP, "application/x-zip-compressed", PDF):
        # A type the bytes contradict (says PDF or zip but is not) is not trusted.
        return declared_base
    guessed = mimetypes.guess_type(name or "")[0]
    if guessed is not None and guessed not in (ZIP, PDF):
        return guessed
    return OCTET_STREAM


def is_archive(mime: str) -> bool:
    """Whether a sniffed type is an archive Sluice expands (zip, not zip-based documents)."""
    return mime == ZIP
