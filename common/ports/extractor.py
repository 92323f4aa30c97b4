"""The extractor port: turn one stored document into rows of a table (the model behind it is the adapter's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from common.core.schema import DocumentExtraction, FieldSpec


@dataclass(frozen=True)
class DocumentRef:
    uri: str  # gs://... or local://...
    name: str
    mime_type: str | None
    size: int | None


class Extractor(Protocol):
    name: str

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        """Raises RetryableError or PermanentError (see common.core.errors)."""
        ...


@runtime_checkable
class Warmable(Protocol):
    """An adapter whose first use does one-off work (imports, a client, its
    connection pool) that it can do ahead, when a worker starts, instead of
    inside the first item it handles while every other handler waits on it."""

    def warm(self) -> None: ...
