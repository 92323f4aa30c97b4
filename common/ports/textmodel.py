"""The text-model port: a prompt and a JSON schema in, a JSON value out (structured generation).

For work that is text in, structured text out -- filling a sheet's columns,
auditing a document's grammar -- rather than reading a document (that is
:mod:`common.ports.extractor`). Adapters:

* :class:`common.adapters.gcp.gemini_text.GeminiTextModel`: Gemini on Vertex AI,
  structured output from the schema (``response_json_schema``);
* :class:`common.adapters.openai_chat.OpenAIChatModel`: any OpenAI-compatible
  chat endpoint (``response_format`` ``json_schema``), a local server included.

Both raise Sluice errors only: RetryableError (rate limits with the server's
delay, outages, network), PermanentError (auth, unknown model, refused input),
and :class:`common.core.errors.MalformedModelOutput` when the answer is not
JSON, or -- with ``strict`` -- breaks the schema (checked by
:mod:`common.core.jsonschema_subset`, because providers treat a schema as a
request, not a guarantee). A caller that validates parts of the answer on its
own (one entry per row, each failing alone) passes ``strict=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Generation:
    """One call's answer: the parsed JSON ``value``, the raw text it came from, and what it cost."""

    value: Any
    raw: str
    model: str
    model_version: str | None = None
    usage: Usage = Usage()
    latency_ms: float | None = None


class TextModel(Protocol):
    name: str  # the adapter ("gemini", "openai")
    model: str  # the model it calls
    dependency: str  # the circuit breaker guarding its calls

    def generate(
        self,
        prompt: str,
        schema: Mapping[str, Any],
        *,
        system: str | None = None,
        temperature: float = 0.0,
        strict: bool = True,
        max_output_tokens: int | None = None,
    ) -> Generation:
        """One structured generation: the model's answer to ``prompt``, shaped by ``schema`` (JSON Schema)."""
        ...
