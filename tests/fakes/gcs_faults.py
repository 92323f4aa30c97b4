"""A Cloud Storage JSON API endpoint that fails on purpose, for the real
google-cloud-storage client (fake-gcs-server cannot answer 503, 429 or reset
a connection).

A threaded :mod:`http.server` on 127.0.0.1 (free port). Each request takes
the next scripted fault from the queue, else ``default``:

* ``"404"``, ``"429"``, ``"500"``, ``"503"`` -- that status with a JSON error
  body (429 and 503 carry ``Retry-After: RETRY_AFTER``);
* ``"reset"`` -- the connection is reset (RST) without an answer;
* ``"ok"`` -- metadata reads get ``uploads/doc.pdf`` as the object resource,
  media reads (``alt=media``) get ``content`` (:data:`CONTENT` unless set).

``media_only`` applies the fault only to media reads, so that a lookup
succeeds and the download that follows fails (a failure mid-read).

    with FaultyStorage() as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        gcs.default = "503"
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlparse

RETRY_AFTER = 7
CONTENT = b"%PDF-1.4 stored"


def object_resource(content: bytes) -> dict[str, str]:
    return {
        "kind": "storage#object",
        "bucket": "uploads",
        "name": "doc.pdf",
        "size": str(len(content)),
        "generation": "1",
        "metageneration": "1",
        "contentType": "application/pdf",
        "updated": "2026-01-01T00:00:00.000Z",
    }


class FaultyStorage:
    def __init__(self) -> None:
        self.default = "404"
        self.media_only = False
        self.content = CONTENT
        self.script: deque[str] = deque()
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def next_fault(self, method: str, path: str) -> str:
        with self._lock:
            self.requests.append((method, path))
            media = parse_qs(urlparse(path).query).get("alt") == ["media"]
            if self.media_only and not media:
                return "ok"
            return self.script.popleft() if self.script else self.default

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(fake: FaultyStorage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            fault = fake.next_fault(self.command, self.path)
            if fault == "reset":
                # SO_LINGER 0: close() sends RST, as a dropped connection does.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if fault == "ok":
                media = parse_qs(urlparse(self.path).query).get("alt") == ["media"]
                body = fake.content if media else json.dumps(object_resource(fake.content)).encode()
                self._send(200, body, media=media)
                return
            status = int(fault)
            error = {"error": {"code": status, "message": f"scripted {status}", "errors": [{"reason": "scripted"}]}}
            self._send(status, json.dumps(error).encode(), retry_after=status in (429, 503))

        def _send(self, status: int, body: bytes, *, media: bool = False, retry_after: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if media else "application/json")
            self.send_header("Content-Length", str(len(body)))
            if retry_after:
                self.send_header("Retry-After", str(RETRY_AFTER))
            self.end_headers()
            self.wfile.write(body)

        def finish(self) -> None:
            with contextlib.suppress(OSError):  # the socket is gone after a reset
                super().finish()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return Handler
