"""Gemini on Vertex AI as a text-model adapter (:class:`common.ports.textmodel.TextModel`).

Structured output from the caller's JSON schema (``response_json_schema``,
JSON mode). The client, the failure classification and the answer-text
checks are the extractor's (:mod:`common.adapters.gcp.gemini`), so both see
Vertex AI's failures the same way; the shared rate limiter and the
``vertex`` circuit breaker guard every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from common.adapters.gcp.gemini import RateLimiter, _answer_text, build_vertex_client, guarded_vertex_call
from common.adapters.lazy import Lazy
from common.core import jsonschema_subset
from common.ports.breaker import CircuitBreaker
from common.ports.clock import Clock
from common.ports.textmodel import Generation, Usage

if TYPE_CHECKING:  # pragma: no cover
    from google import genai


class GeminiTextModel:
    name = "gemini"
    dependency = "vertex"

    def __init__(
        self,
        *,
        project: str,
        location: str,
        model: str,
        clock: Clock,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        timeout_s: float = 120.0,
        credentials: Any = None,
        http_base_url: str | None = None,
        client_factory: Callable[[], genai.Client] | None = None,
    ) -> None:
        self.project = project
        self.location = location
        self.model = model
        self._clock = clock
        self._limiter = limiter
        self._breaker = breaker
        self._timeout_s = timeout_s
        self._credentials = credentials
        self._base_url = http_base_url
        self._client = Lazy(client_factory or self._build_client)

    def _build_client(self) -> genai.Client:
        return build_vertex_client(
            project=self.project,
            location=self.location,
            credentials=self._credentials,
            base_url=self._base_url,
            timeout_s=self._timeout_s,
        )

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
        from google.genai import types

        config = types.GenerateContentConfig(
            system_instruction=system,
            temperature=temperature,
            response_mime_type="application/json",
            response_json_schema=dict(schema),
            max_output_tokens=max_output_tokens,
        )
        started: list[float] = []

        def call() -> Any:
            started.append(time.perf_counter())  # the model's latency, not the limiter's wait
            return self._client.get().models.generate_content(model=self.model, contents=prompt, config=config)

        response = guarded_vertex_call(
            call,
            clock=self._clock,
            limiter=self._limiter,
            breaker=self._breaker,
            not_found_hint=f"Check SLUICE_TEXT_MODEL's model ({self.model}) and its location ({self.location}).",
        )
        latency_ms = round((time.perf_counter() - started[0]) * 1000, 1)
        raw = _answer_text(response)
        value = jsonschema_subset.parse_answer(raw, schema if strict else None)
        usage = response.usage_metadata
        output_tokens = None
        if usage is not None and usage.candidates_token_count is not None:
            output_tokens = usage.candidates_token_count + (usage.thoughts_token_count or 0)
        return Generation(
            value=value,
            raw=raw,
            model=self.model,
            model_version=response.model_version,
            usage=Usage(usage.prompt_token_count if usage is not None else None, output_tokens),
            latency_ms=latency_ms,
        )
