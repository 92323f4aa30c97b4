"""Any OpenAI-compatible chat endpoint as a text-model adapter (:class:`common.ports.textmodel.TextModel`).

``POST {base_url}/chat/completions`` with ``response_format`` ``json_schema``:
OpenAI itself, and local servers that speak its protocol (vLLM, llama.cpp's
server, Ollama, LM Studio), so a user can point Sluice at a model on their
own machine. Plain HTTP with the standard library: one request per call, no
client-side retries (Sluice's retry policy decides), the shared rate limiter
and a circuit breaker (``openai``) around every call.

Answers are checked against the schema here too (strict mode): a local
server may ignore ``response_format``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message
from typing import Any

from common.adapters.gcp.gemini import RateLimiter
from common.core import jsonschema_subset
from common.core.errors import ErrorKind, MalformedModelOutput, PermanentError, RetryableError, SluiceError
from common.core.retry import MAX_SERVER_DELAY_S, parse_retry_after
from common.ports.breaker import CircuitBreaker
from common.ports.clock import Clock
from common.ports.textmodel import Generation, Usage

_MAX_ANSWER_BYTES = 16 * 1024 * 1024


class OpenAIChatModel:
    name = "openai"
    dependency = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        clock: Clock,
        api_key: str | None = None,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._clock = clock
        self._api_key = api_key
        self._limiter = limiter
        self._breaker = breaker
        self._timeout_s = timeout_s

    def __repr__(self) -> str:  # never the key
        return f"OpenAIChatModel(base_url={self.base_url!r}, model={self.model!r})"

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
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": dict(schema), "strict": strict},
            },
        }
        if max_output_tokens is not None:
            body["max_tokens"] = max_output_tokens
        if self._limiter is not None:
            self._limiter.acquire()
        if self._breaker is not None:
            self._breaker.admit()
        t0 = time.perf_counter()
        try:
            payload = self._post(body)
        except SluiceError as err:
            if self._breaker is not None and isinstance(err, RetryableError):
                self._breaker.record_failure(err)
            raise
        if self._breaker is not None:
            self._breaker.record_success()
        latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        raw = _answer_text(payload)
        usage: dict[str, Any] = payload["usage"] if isinstance(payload.get("usage"), dict) else {}
        return Generation(
            value=jsonschema_subset.parse_answer(raw, schema if strict else None),
            raw=raw,
            model=self.model,
            model_version=str(payload["model"]) if payload.get("model") else None,
            usage=Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))),
            latency_ms=latency_ms,
        )

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as resp:
                content = resp.read(_MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc.code, exc.headers, exc.read(65536)) from None
        except OSError as exc:  # URLError is an OSError: refused, DNS, reset, timeout
            raise RetryableError(
                f"could not reach the model server at {self.base_url}: {exc}",
                kind=ErrorKind.NETWORK,
                code="model_network",
            ) from None
        try:
            payload = json.loads(content)
        except ValueError:
            raise RetryableError(
                "the model server answered with something other than JSON", kind=ErrorKind.SERVER
            ) from None
        if not isinstance(payload, dict):
            raise RetryableError("the model server's answer is not a JSON object", kind=ErrorKind.SERVER)
        return payload

    def _http_error(self, status: int, headers: Message, content: bytes) -> SluiceError:
        message = _error_message(content)
        what = f"the model server answered {status}{': ' + message if message else ''}"
        delay = parse_retry_after(headers.get("retry-after"), now=self._clock.now())
        delay = min(delay, MAX_SERVER_DELAY_S) if delay is not None else None
        if status == 429:
            if self._limiter is not None:
                self._limiter.penalise(duration_s=delay)
            return RetryableError(what, kind=ErrorKind.RATE_LIMITED, retry_after=delay, code="model_rate_limited")
        if status == 503:
            return RetryableError(what, kind=ErrorKind.UNAVAILABLE, retry_after=delay, code="model_unavailable")
        if status >= 500 or status in (408, 409):
            return RetryableError(what, kind=ErrorKind.SERVER, retry_after=delay, code="model_server_error")
        if status in (401, 403):
            return PermanentError(
                what, kind=ErrorKind.AUTH, code="model_auth", hint="Check SLUICE_OPENAI_API_KEY for this server."
            )
        if status == 404:
            return PermanentError(
                what,
                code="model_not_found",
                hint=f"Check the model name ({self.model}) and SLUICE_OPENAI_BASE_URL ({self.base_url}).",
            )
        return PermanentError(what, code="model_rejected_input", hint="The model server refused the request.")


def _answer_text(payload: Mapping[str, Any]) -> str:
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedModelOutput("the model gave no answer (no choices)", raw_output="")
    choice = choices[0]
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if message.get("refusal"):
        raise PermanentError(
            f"the model refused: {message['refusal']}", code="model_blocked", hint="Rephrase the prompt."
        )
    if not isinstance(content, str):
        raise MalformedModelOutput("the model's answer has no text", raw_output="")
    if choice.get("finish_reason") == "length":
        raise MalformedModelOutput("the model's answer was cut off at the output token limit", raw_output=content)
    return content


def _error_message(content: bytes) -> str:
    try:
        payload = json.loads(content or b"{}")
    except ValueError:
        return content[:200].decode("utf-8", "replace")
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))
    return str(error or "")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
