"""The offline extractor as a model-port adapter: reads the stored document
and runs the text-layer / e-invoice / OCR extractor. No network; any backend."""

from __future__ import annotations

from collections.abc import Sequence

from common.core.errors import BlobNotFound, UnreadableDocument
from common.core.schema import DocumentExtraction, FieldSpec
from common.ports.blobs import BlobStore
from common.ports.extractor import DocumentRef


class OfflineExtractor:
    name = "offline"

    def __init__(self, blobs: BlobStore, *, max_bytes: int, max_pages: int) -> None:
        self._blobs = blobs
        self._max_bytes = max_bytes
        self._max_pages = max_pages

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        from common.extraction.offline import extract_document  # PDF/OCR libraries load on first use

        try:
            data = self._blobs.get_bytes(doc.uri, max_bytes=self._max_bytes)
        except BlobNotFound:
            raise UnreadableDocument(f"{doc.name}: the stored file is missing ({doc.uri})") from None
        except ValueError:
            raise UnreadableDocument(
                f"{doc.name} is larger than {self._max_bytes // (1024 * 1024)} MB",
                hint="Split the document, or raise SLUICE_MAX_DOCUMENT_BYTES.",
            ) from None
        return extract_document(data, fields, filename=doc.name, max_pages=self._max_pages, max_bytes=self._max_bytes)
