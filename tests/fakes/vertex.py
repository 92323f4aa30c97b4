"""A fake Vertex AI ``generateContent`` (and embedding ``predict``) endpoint for tests of the real google-genai client.

A threaded :mod:`http.server` on 127.0.0.1 (free port) answers
``POST /v1beta1/projects/P/locations/L/publishers/google/models/MODEL:generateContent``
from a queue of scripted replies, and records every request so a test can
assert what the client sent. It answers at once: no test sleeps.

    with FakeVertex() as fake:
        fake.push(answer({"columns": [...], "results": [[...]]}), rate_limited(retry_delay="30s"))
        ... GeminiExtractor(http_base_url=fake.base_url, credentials=fake_credentials()) ...
        assert fake.requests[0].file_uri == "gs://b/doc.pdf"

When the queue is empty the ``default`` reply is used if set (a persistent
429, say); otherwise the request is answered 500 and counted in
``unscripted`` so that a test can tell a missing script from a real 500.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

API_VERSION = "v1beta1"  # what google-genai 3.x uses for Vertex AI
_PATH = re.compile(
    rf"^/{API_VERSION}/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>generateContent|predict)$"
)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]
    project: str | None
    location: str | None
    model: str | None
    # generateContent, or predict (google-genai's embed_content for text-embedding models)
    rpc: str | None = None

    @property
    def embed_texts(self) -> list[str]:
        """The texts of a ``:predict`` embedding request, in order."""
        return [str(i["content"]) for i in self.body.get("instances", [])]

    @property
    def embed_task_types(self) -> list[str | None]:
        return [i.get("task_type") for i in self.body.get("instances", [])]

    def _parts(self) -> Iterator[dict[str, Any]]:
        for content in self.body.get("contents", []):
            yield from content.get("parts", [])

    @property
    def file_parts(self) -> list[tuple[str, str]]:
        """``fileData`` parts as (URI, mime type)."""
        return [
            (_pick(p["fileData"], "fileUri", "file_uri"), _pick(p["fileData"], "mimeType", "mime_type"))
            for p in self._parts()
            if "fileData" in p
        ]

    @property
    def inline_parts(self) -> list[tuple[str, bytes]]:
        """``inlineData`` parts as (mime type, decoded bytes)."""
        return [
            (_pick(p["inlineData"], "mimeType", "mime_type"), _b64(p["inlineData"]["data"]))
            for p in self._parts()
            if "inlineData" in p
        ]

    @property
    def file_uri(self) -> str | None:
        parts = self.file_parts
        return parts[0][0] if parts else None

    @property
    def user_text(self) -> str:
        return "\n".join(p["text"] for p in self._parts() if "text" in p)

    @property
    def system_instruction(self) -> str:
        si = self.body.get("systemInstruction") or {}
        return "\n".join(p.get("text", "") for p in si.get("parts", []))

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict(self.body.get("generationConfig") or {})

    @property
    def response_schema(self) -> dict[str, Any] | None:
        schema = self.generation_config.get("responseSchema")
        return dict(schema) if schema is not None else None


def _b64(text: str) -> bytes:
    """The client sends bytes as URL-safe base64, unpadded; accept either alphabet."""
    text = text.replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _pick(d: Mapping[str, Any], *keys: str) -> str:
    """Proto JSON accepts camelCase and snake_case names; the client sends either."""
    for k in keys:
        if k in d:
            return str(d[k])
    raise KeyError(keys[0])


Responder = Callable[[RecordedRequest], Reply]


class _Server(ThreadingHTTPServer):
    # Many clients connect at once (benchmarks, concurrency tests): the default
    # listen backlog of 5 would reset their connections.
    request_queue_size = 1024


class FakeVertex:
    def __init__(self) -> None:
        self._queue: deque[Reply | Responder] = deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.default: Reply | Responder | None = None
        self.unscripted = 0
        self.abandoned = 0  # answers not sent: the client had closed its connection
        self.delivered: list[tuple[RecordedRequest, int]] = []  # every answer sent, with its status
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoint

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                req, reply = fake._handle(self.command, self.path, dict(self.headers.items()), raw)
                if _peer_closed(self.connection):
                    # The caller is gone (a worker killed mid-call): nobody gets this answer.
                    with fake._lock:
                        fake.abandoned += 1
                    self.close_connection = True
                    return
                with fake._lock:
                    fake.delivered.append((req, reply.status))
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json; charset=UTF-8", **reply.headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-vertex", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    # -- scripting ---------------------------------------------------------------

    def push(self, *replies: Reply | Responder) -> None:
        """Queue replies, answered in order (a callable builds one from the request)."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[RecordedRequest, Reply]:
        m = _PATH.match(path)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        req = RecordedRequest(
            method=method,
            path=path,
            headers=headers,
            body=body,
            project=m["project"] if m else None,
            location=m["location"] if m else None,
            model=m["model"] if m else None,
            rpc=m["method"] if m else None,
        )
        with self._lock:
            self.requests.append(req)
            if m is None:
                return req, error(404, f"fake vertex: unknown path {path}", status_name="NOT_FOUND")
            nxt = self._queue.popleft() if self._queue else self.default
            if nxt is None:
                self.unscripted += 1
                return req, error(500, "fake vertex: no scripted reply", status_name="INTERNAL")
        return req, (nxt(req) if callable(nxt) else nxt)


def _peer_closed(conn: socket.socket) -> bool:
    """Whether the client has closed its end (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Quota:
    """A Responder that enforces a requests-per-minute quota, as Vertex AI does.

    A token bucket refilled at ``rpm / 60`` per second holds at most ``burst``
    tokens (default: one second's worth); a request that finds it empty is
    answered 429 ``RESOURCE_EXHAUSTED`` with ``google.rpc.RetryInfo`` saying
    when the next token is due. An admitted request takes ``latency()``
    seconds (the model thinking), then gets ``reply(request)``. Counts what it
    admitted and refused, and how many admitted calls each document received
    (by the hash of its inline bytes or its file URI). This fake sleeps: it is
    for benchmarks, not tests.
    """

    def __init__(
        self,
        rpm: float,
        reply: Responder,
        *,
        burst: float | None = None,
        latency: tuple[float, float] = (0.0, 0.0),
        seed: int = 7,
    ) -> None:
        self.rate = rpm / 60.0
        self.burst = burst if burst is not None else max(1.0, self.rate)
        self._reply = reply
        self._latency = latency
        self._random = random.Random(seed)
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()
        self.admitted = 0
        self.refused = 0
        self.calls_per_document: dict[str, int] = {}
        self.first_admitted_at: float | None = None
        self.last_answered_at: float | None = None
        self.admitted_at: list[float] = []  # wall-clock time of every admission (benchmarks' timelines)

    @staticmethod
    def document_of(req: RecordedRequest) -> str:
        inline = req.inline_parts
        if inline:
            return hashlib.sha256(inline[0][1]).hexdigest()
        return req.file_uri or "?"

    def _admit(self) -> tuple[bool, float]:
        """(admitted, seconds until the next token); takes a token when admitted."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self.admitted += 1
                self.admitted_at.append(time.time())
                if self.first_admitted_at is None:
                    self.first_admitted_at = self.admitted_at[-1]
                return True, 0.0
            self.refused += 1
            return False, (1.0 - self._tokens) / self.rate

    def __call__(self, req: RecordedRequest) -> Reply:
        admitted, wait = self._admit()
        if not admitted:
            return rate_limited(retry_delay=f"{wait:.3f}s")
        with self._lock:
            doc = self.document_of(req)
            self.calls_per_document[doc] = self.calls_per_document.get(doc, 0) + 1
            low, high = self._latency
            delay = self._random.uniform(low, high)
        time.sleep(delay)
        with self._lock:
            self.last_answered_at = time.time()
        return self._reply(req)


# -- reply builders ----------------------------------------------------------------


def answer(
    payload: Any,
    *,
    input_tokens: int = 1200,
    output_tokens: int = 80,
    model_version: str = "gemini-2.5-flash-001",
    finish_reason: str = "STOP",
) -> Reply:
    """A successful generateContent answer whose text is ``payload`` (JSON-encoded
    unless it is already a string, so malformed text can be sent as is)."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": finish_reason,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": input_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": input_tokens + output_tokens,
        },
        "modelVersion": model_version,
        "responseId": "fake-response",
    }
    return Reply(200, json.dumps(body).encode())


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic vector for ``text`` (not semantic)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255 - 0.5, 6) for b in digest[:dimensions]]


def embeddings(req: RecordedRequest) -> Reply:
    """A ``:predict`` answer for a text-embedding model: one vector per instance, in order."""
    dims = int((req.body.get("parameters") or {}).get("outputDimensionality") or 8)
    predictions = [
        {
            "embeddings": {
                "values": fake_vector(t, dims),
                "statistics": {"token_count": len(t.split()), "truncated": False},
            }
        }
        for t in req.embed_texts
    ]
    body = {"predictions": predictions, "metadata": {"billableCharacterCount": sum(map(len, req.embed_texts))}}
    return Reply(200, json.dumps(body).encode())


def error(
    status: int,
    message: str,
    *,
    status_name: str = "UNKNOWN",
    retry_delay: str | None = None,
    retry_after: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Reply:
    """A Google API error body, optionally with ``google.rpc.RetryInfo`` and a ``Retry-After`` header."""
    extra = list(details or [])
    if retry_delay is not None:
        extra.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    err: dict[str, Any] = {"code": status, "message": message, "status": status_name}
    if extra:
        err["details"] = extra
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status, json.dumps({"error": err}).encode(), headers)


def rate_limited(*, retry_delay: str | None = None, retry_after: str | None = None) -> Reply:
    return error(
        429,
        "Resource exhausted. Please try again later.",
        status_name="RESOURCE_EXHAUSTED",
        retry_delay=retry_delay,
        retry_after=retry_after,
    )


def unavailable(*, retry_delay: str | None = None, retry_after: str | None = None) -> Reply:
    return error(
        503,
        "The service is currently unavailable.",
        status_name="UNAVAILABLE",
        retry_delay=retry_delay,
        retry_after=retry_after,
    )
