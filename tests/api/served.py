"""The API app served over real HTTP on 127.0.0.1 (werkzeug's threaded server),
and a helper that releases N client threads at once at a barrier."""

from __future__ import annotations

import http.client
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.serving import make_server


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Served:
    host: str
    port: int

    def request(
        self, method: str, path: str, *, token: str, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            data = None if json_body is None else json.dumps(json_body).encode()
            h = {"Authorization": f"Bearer {token}", **(headers or {})}
            if data is not None:
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw) if raw else None)
        finally:
            conn.close()


@contextmanager
def serve(app: Flask) -> Iterator[Served]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
    thread.start()
    try:
        yield Served("127.0.0.1", server.server_port)
    finally:
        server.shutdown()
        thread.join(timeout=10)


def at_once(n: int, fn: Callable[[int], Answer], *, repeat: int = 1) -> list[Answer]:
    """Call ``fn(i)`` from ``n`` threads released together at a barrier, each
    ``repeat`` times in a row (a client retrying at once keeps the pressure on)."""
    barrier = threading.Barrier(n)
    answers: list[Answer | BaseException | None] = [None] * (n * repeat)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for k in range(repeat):
                answers[i * repeat + k] = fn(i)
        except BaseException as exc:
            answers[i * repeat] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    # Switch threads far more often than the default 5 ms, so that requests
    # interleave inside the handlers rather than one by one.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    out: list[Answer] = []
    for a in answers:
        if not isinstance(a, Answer):
            raise AssertionError(f"a client thread failed: {a!r}")
        out.append(a)
    return out
