"""A fake OpenAI-compatible ``/v1/chat/completions`` and ``/v1/embeddings`` endpoint for tests of real HTTP clients.

A threaded :mod:`http.server` on 127.0.0.1 (free port) answering from a queue
of scripted replies (or a ``default`` responder that builds one from the
request), recording every request. Used by the text-model adapter tests and,
with a responder that answers every row, by the enrich tests and bench.

A reply counts as sent only once the whole of it was written to a caller
that was still there: if the caller's connection is closed when the reply is
ready (its process was killed while the model was "thinking"), nothing is
sent, the reply's ``on_sent`` is not called, and ``dropped`` counts it. With
``confirm_receipt`` (the bench) it also waits for the caller to close after
reading: a caller killed with the answer still unread in its socket resets
the connection, and ``unread`` counts that answer instead. So a row counts as
answered when the server delivered a complete answer for it (and, with
``confirm_receipt``, the caller read it), not when the answer was computed.

    with FakeOpenAI() as fake:
        fake.push(chat_answer({"rows": [...]}), too_many_requests(retry_after="3"))
        OpenAIChatModel(base_url=fake.base_url, model="m", clock=...)
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    on_sent: Callable[[], None] | None = field(default=None, compare=False)  # once the caller has it all


@dataclass(frozen=True)
class ChatRequest:
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]

    @property
    def user_text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []) if m.get("role") == "user")

    @property
    def system_text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []) if m.get("role") == "system")

    @property
    def schema(self) -> dict[str, Any]:
        return dict(self.body["response_format"]["json_schema"]["schema"])


Responder = Callable[[ChatRequest], Reply]


class FakeOpenAI:
    def __init__(self, *, latency_s: float = 0.0, confirm_receipt: bool = False) -> None:
        self.latency_s = latency_s  # simulated model time, per request (the bench's 50 ms)
        # After sending, wait for the caller to close its end (see _read_by_caller): a caller killed with
        # the answer unread resets the connection, and the answer is not counted as given.
        self.confirm_receipt = confirm_receipt
        self.unread = 0  # answers sent that the caller never read (it died first)
        self._queue: deque[Reply | Responder] = deque()
        self._lock = threading.Lock()
        self.requests: list[ChatRequest] = []
        self.default: Reply | Responder | None = None
        self.dropped = 0  # replies not sent: the caller had gone (see the module docstring)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def push(self, *replies: Reply | Responder) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _reply(self, req: ChatRequest) -> Reply:
        with self._lock:
            self.requests.append(req)
            nxt = self._queue.popleft() if self._queue else self.default
        if req.path not in ("/v1/chat/completions", "/v1/embeddings"):
            return error(404, f"unknown path {req.path}")
        if nxt is None:
            return error(500, "fake openai: no scripted reply")
        return nxt(req) if callable(nxt) else nxt

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                req = ChatRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"{}"))
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                reply = fake._reply(req)
                if _caller_gone(self.connection):
                    with fake._lock:
                        fake.dropped += 1
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for k, v in {"content-type": "application/json", **reply.headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                self.wfile.flush()
                if fake.confirm_receipt and not _read_by_caller(self.connection):
                    with fake._lock:
                        fake.unread += 1
                    self.close_connection = True
                    return
                if reply.on_sent is not None:
                    reply.on_sent()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _caller_gone(conn: socket.socket) -> bool:
    """Whether the caller closed its end (a killed process's sockets are closed by the kernel)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _read_by_caller(conn: socket.socket, timeout_s: float = 5.0) -> bool:
    """Whether the caller read the answer just sent: a caller that reads it and closes sends FIN (or its
    next request); one that dies with it unread makes its kernel reset the connection (RST). A caller
    that neither closes nor sends within ``timeout_s`` is taken to have read it (counted, to be safe)."""
    try:
        conn.settimeout(timeout_s)
        conn.recv(1, socket.MSG_PEEK)
        return conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    except TimeoutError:
        return True
    except OSError:  # ECONNRESET: the caller's kernel discarded the answer unread
        return False


def chat_answer(payload: Any, *, prompt_tokens: int = 300, completion_tokens: int = 40, finish: str = "stop") -> Reply:
    """A chat completion whose message content is ``payload`` (JSON-encoded unless already a string)."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake-model-001",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(200, json.dumps(body).encode())


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic vector for ``text`` (not semantic): what the embedding fakes answer."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255 - 0.5, 6) for b in digest[:dimensions]]


def embeddings_answer(req: ChatRequest) -> Reply:
    """``/v1/embeddings``: one vector per input, listed in reverse so a client must put them back by ``index``."""
    inputs = req.body["input"]
    data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(inputs)]
    body = {"object": "list", "model": req.body.get("model"), "data": data[::-1], "usage": {"prompt_tokens": 1}}
    return Reply(200, json.dumps(body).encode())


def error(status: int, message: str, *, retry_after: str | None = None) -> Reply:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"error": {"message": message, "type": "fake_error", "code": None}}
    return Reply(status, json.dumps(body).encode(), headers)


def too_many_requests(*, retry_after: str | None = None) -> Reply:
    return error(429, "Rate limit reached", retry_after=retry_after)


_ROW_BLOCK = re.compile(r"^### Row (\d+)\n(.*?)(?=^### Row |\Z)", re.S | re.M)


def rows_in(prompt: str) -> list[tuple[int, str]]:
    """The (row number, rendered prompt) pairs of an enrich batch prompt."""
    return [(int(m.group(1)), m.group(2).strip()) for m in _ROW_BLOCK.finditer(prompt)]


class RowModel:
    """A responder that answers every row of an enrich batch with ``answer(number, text)``
    (None leaves the row out) and counts how often each row's answer was *sent* (see the module
    docstring), keyed by ``key(number, text)`` (the row number unless given)."""

    def __init__(
        self,
        answer: Callable[[int, str], dict[str, Any] | None],
        *,
        key: Callable[[int, str], Any] = lambda number, text: number,
    ) -> None:
        self._answer = answer
        self._key = key
        self._lock = threading.Lock()
        self.answered: dict[Any, int] = {}
        self.first_sent: dict[Any, float] = {}  # time.monotonic() of each row's first answer sent
        self.calls = 0  # calls whose answer was sent

    def __call__(self, req: ChatRequest) -> Reply:
        entries, keys = [], []
        for number, text in rows_in(req.user_text):
            got = self._answer(number, text)
            if got is not None:
                entries.append({"row": number, **got})
                keys.append(self._key(number, text))

        def sent() -> None:
            now = time.monotonic()
            with self._lock:
                self.calls += 1
                for k in keys:
                    self.answered[k] = self.answered.get(k, 0) + 1
                    self.first_sent.setdefault(k, now)

        return replace(chat_answer({"rows": entries}), on_sent=sent)

    def twice(self) -> list[Any]:
        with self._lock:
            return sorted(n for n, k in self.answered.items() if k > 1)
