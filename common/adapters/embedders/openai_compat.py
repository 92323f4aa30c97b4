"""Any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint (OpenAI, Azure
OpenAI's compatible route, vLLM, Ollama, LiteLLM, text-embeddings-inference).

Plain ``urllib`` with a timeout: the request is ``{"model", "input": [...]}``
and the answer's ``data[i].embedding`` are put back in ``index`` order.
429 and 503 become RetryableError with the server's ``Retry-After``; other
5xx, timeouts and resets retryable; 400/401/403/404 permanent.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from common.core.errors import ErrorKind, MalformedModelOutput, PermanentError, RetryableError
from common.core.retry import parse_retry_after
from common.ports.breaker import CircuitBreaker
from common.ports.clock import Clock
from common.ports.embedder import Task


class OpenAICompatibleEmbedder:
    dependency = "embeddings"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        clock: Clock,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout_s: float = 60.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self.model = f"openai:{model}"
        self.batch_size = batch_size
        self._clock = clock
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._breaker = breaker

    def embed(self, texts: Sequence[str], *, task: Task) -> list[list[float]]:
        if len(texts) > self.batch_size:
            raise ValueError(f"at most {self.batch_size} texts per call, got {len(texts)}")
        if not texts:
            return []
        if self._breaker is not None:
            self._breaker.admit()
        try:
            body = self._post({"model": self._model, "input": list(texts)})
        except (RetryableError, PermanentError) as err:
            if self._breaker is not None and isinstance(err, RetryableError):
                self._breaker.record_failure(err)
            raise
        if self._breaker is not None:
            self._breaker.record_success()
        try:
            data = sorted(body["data"], key=lambda d: int(d["index"]))
            vectors = [[float(x) for x in d["embedding"]] for d in data]
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedModelOutput(
                f"the embeddings endpoint answered an unexpected shape: {exc}", raw_output=str(body)[:2000]
            ) from None
        if len(vectors) != len(texts):
            raise MalformedModelOutput(
                f"the embeddings endpoint returned {len(vectors)} vectors for {len(texts)} texts", raw_output=""
            )
        return vectors

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self._url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout_s) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise RetryableError(
                f"could not reach the embeddings endpoint {self._url}: {exc}", kind=ErrorKind.NETWORK
            ) from None

    def _http_error(self, exc: urllib.error.HTTPError) -> Exception:
        what = f"the embeddings endpoint answered {exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}"
        delay = parse_retry_after(exc.headers.get("Retry-After"), now=self._clock.now())
        if exc.code == 429:
            return RetryableError(what, kind=ErrorKind.RATE_LIMITED, retry_after=delay, code="embed_rate_limited")
        if exc.code == 503:
            return RetryableError(what, kind=ErrorKind.UNAVAILABLE, retry_after=delay, code="embed_unavailable")
        if exc.code >= 500 or exc.code == 408:
            return RetryableError(what, kind=ErrorKind.SERVER, code="embed_server_error")
        return PermanentError(
            what,
            code="embed_rejected",
            hint="Check SLUICE_EMBED_URL, SLUICE_EMBED_API_KEY and the collection's embedding model.",
        )
