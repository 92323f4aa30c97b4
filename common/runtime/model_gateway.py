"""The model gateway: worker processes' model calls, made by the supervisor.

``sluice serve --processes N`` runs the stages in N child processes. A child
killed with -9 (out of memory, a parser's crash, an operator) used to take its
model calls in flight with it: the model answered, and was paid for, but nobody
received the answer, and the retried item called again. So the children call
Vertex AI through this gateway, an HTTP forwarder in the supervisor's process,
which outlives them:

* **An answer nobody received is kept** (an *orphan*): its caller's connection
  was closed when the answer came (the process died), so the answer waits, for
  ``keep_s``, for the same request, which the retried item makes, and is served
  to it once instead of calling the model again.
* **Identical requests in flight share one call** (the retried item asking
  while the dead child's call is still under way joins it).
* **A caller may ask first for a kept answer only** (header ``X-Sluice-Kept-Only:
  1``), before it takes a token of the quota: a retried item then spends no
  quota on an answer the model already gave (404 when there is none).
* Anything else passes through unchanged: the request (with its credentials)
  to ``upstream``, the answer (status, body, content type) back. Only 2xx
  answers are kept or shared; a 429 or an error goes to its own caller alone.

A request is known by its path, credentials and body (the document, the prompt
and the settings travel in the body), so "the same request" is the same call.
Memory is bounded: at most ``max_kept_bytes`` of orphans, oldest dropped first.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import select
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

# Headers not forwarded (hop-by-hop, or set again by the client that forwards).
_HOP = frozenset(
    {"x-sluice-kept-only", "host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}
)


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


# A request carrying this header ("1") asks only for a kept answer (or one under way):
# the gateway never calls the model for it, and answers 404 when it has none.
KEPT_ONLY_HEADER = "X-Sluice-Kept-Only"
_NOT_KEPT = Answer(
    404, "application/json", b'{"error": {"code": 404, "message": "no kept answer", "status": "NOT_FOUND"}}'
)


@dataclass
class _Call:
    """One upstream call under way, and those waiting on it."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None
    followers: int = 0  # requests that joined it: they carry its answer on


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Every handler thread of every child may connect at once: the default backlog
    # of 5 would have the kernel reset their connections.
    request_queue_size = 1024


class ModelGateway:
    """Forwards model calls to ``upstream``; keeps the answers of callers that died."""

    def __init__(
        self,
        upstream: str,
        *,
        keep_s: float = 600.0,
        max_kept_bytes: int = 256 * 1024 * 1024,
        timeout_s: float = 600.0,
        max_connections: int = 1000,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self._keep_s = keep_s
        self._max_kept = max_kept_bytes
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._orphans: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._kept_bytes = 0
        self._calls: dict[str, _Call] = {}
        self._client: Any = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.forwarded = 0  # upstream calls made
        self.kept = 0  # answers kept for a caller that was gone
        self.served_kept = 0  # requests answered from a kept answer
        self.joined = 0  # requests that shared a call already under way
        self.not_kept = 0  # kept-only requests that found nothing

    # -- serving ------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> str:
        """Listen on a free port of 127.0.0.1; return the URL the children call."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a child's pool reuses its connections

            def do_POST(self) -> None:
                gateway._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return  # a line per model call would drown the workers' own logs

        server = _Server(("127.0.0.1", 0), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="sluice-model-gateway", daemon=True)
        self._thread.start()
        log.info("model gateway listening", extra={"url": self.url, "upstream": self.upstream})
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._client is not None:
            self._client.close()

    # -- one request --------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        # The caller's credentials are part of the call: an answer is kept for the one who asked.
        auth = (req.headers.get("Authorization") or "").encode()
        key = hashlib.sha256(b"POST " + req.path.encode() + b"\n" + auth + b"\n" + body).hexdigest()
        kept = self._take_kept(key)
        if kept is not None:
            self._reply(req, kept, key, keep=False)
            return
        only_kept = req.headers.get(KEPT_ONLY_HEADER) == "1"
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None and only_kept:
                self.not_kept += 1
            elif call is None:
                call = self._calls[key] = _Call()
            else:
                call.followers += 1
                self.joined += 1
        if call is None:
            # Asked before the caller takes a token of the quota: no answer here, so it calls.
            self._reply(req, _NOT_KEPT, key, keep=False)
            return
        if leader:
            try:
                call.answer = self._forward(req, body)
            finally:
                with self._lock:
                    del self._calls[key]
                call.done.set()
        else:
            call.done.wait(self._timeout_s)
        answer = call.answer or Answer(502, "text/plain", b"the model gateway's upstream call failed")
        # Kept only for a leader whose caller is gone and that nobody joined: a follower
        # (the dead caller's retry, asking while the call was under way) takes it on.
        self._reply(req, answer, key, keep=leader and call.followers == 0)

    def _forward(self, req: BaseHTTPRequestHandler, body: bytes) -> Answer:
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP}
        try:
            resp = self._http().post(self.upstream + req.path, content=body, headers=headers)
        except Exception as exc:  # the caller sees a 502, as from any proxy, and its retry policy decides
            log.warning("model gateway: upstream call failed", exc_info=True)
            return Answer(502, "text/plain", f"model gateway: upstream call failed: {type(exc).__name__}".encode())
        with self._lock:
            self.forwarded += 1
        return Answer(resp.status_code, resp.headers.get("content-type", "application/json"), resp.content)

    def _reply(self, req: BaseHTTPRequestHandler, answer: Answer, key: str, *, keep: bool) -> None:
        if keep and 200 <= answer.status < 300 and _gone(req.connection):
            self._keep(key, answer)
            return
        try:
            req.send_response(answer.status)
            req.send_header("Content-Type", answer.content_type)
            req.send_header("Content-Length", str(len(answer.body)))
            req.end_headers()
            req.wfile.write(answer.body)
            req.wfile.flush()
        except OSError:  # gone while the answer was written
            if keep and 200 <= answer.status < 300:
                self._keep(key, answer)
            req.close_connection = True

    # -- kept answers -------------------------------------------------------------

    def _keep(self, key: str, answer: Answer) -> None:
        now = time.monotonic()
        with self._lock:
            self.kept += 1
            self._expire(now)
            self._orphans[key] = (now, answer)
            self._kept_bytes += len(answer.body)
            while self._kept_bytes > self._max_kept and self._orphans:
                _, (_, dropped) = self._orphans.popitem(last=False)
                self._kept_bytes -= len(dropped.body)
        log.info("model gateway: kept an answer whose caller was gone", extra={"bytes": len(answer.body)})

    def _take_kept(self, key: str) -> Answer | None:
        with self._lock:
            self._expire(time.monotonic())
            found = self._orphans.pop(key, None)
            if found is None:
                return None
            self._kept_bytes -= len(found[1].body)
            self.served_kept += 1
            return found[1]

    def _expire(self, now: float) -> None:
        """Drop kept answers older than ``keep_s`` (the caller holds the lock)."""
        while self._orphans:
            key, (at, answer) = next(iter(self._orphans.items()))
            if now - at <= self._keep_s:
                return
            del self._orphans[key]
            self._kept_bytes -= len(answer.body)

    def _http(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    http: Any = importlib.import_module("httpx2")  # google-genai's own, when installed
                except ImportError:
                    http = importlib.import_module("httpx")
                limits = http.Limits(max_connections=self._max_connections)
                self._client = http.Client(timeout=self._timeout_s, limits=limits)
            return self._client


def vertex_endpoint(location: str) -> str:
    """Google's Vertex AI endpoint for ``location``, as google-genai picks it."""
    return (
        "https://aiplatform.googleapis.com/"
        if location == "global"
        else f"https://{location}-aiplatform.googleapis.com/"
    )


def _gone(conn: socket.socket) -> bool:
    """Whether the caller closed its connection (its process died): the socket reads
    as ended. A caller that sent nothing more is simply not readable."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        with contextlib.suppress(BlockingIOError):
            return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        return False
    except OSError:
        return True
