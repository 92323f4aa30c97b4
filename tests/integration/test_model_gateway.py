"""The model gateway a supervisor runs for its worker processes: an answer whose
caller died is kept for the retried request, identical requests in flight share
one call, anything else passes through (real HTTP on both sides)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

from common.runtime.model_gateway import ModelGateway
from tests.fakes.vertex import FakeVertex, RecordedRequest, Reply, answer
from tests.support import REPO_ROOT

PATH = "/v1beta1/projects/p/locations/europe-west1/publishers/google/models/m:generateContent"


def _slow(seconds: float, reply: Reply) -> Any:
    def respond(_req: RecordedRequest) -> Reply:
        time.sleep(seconds)
        return reply

    return respond


@pytest.fixture
def fake() -> Iterator[FakeVertex]:
    with FakeVertex() as f:
        yield f


@pytest.fixture
def gateway(fake: FakeVertex) -> Iterator[ModelGateway]:
    gw = ModelGateway(fake.base_url)
    gw.start()
    yield gw
    gw.stop()


def _post(gw: ModelGateway, doc: str) -> requests.Response:
    body: Any = {"contents": [{"role": "user", "parts": [{"text": doc}]}]}
    return requests.post(gw.url.rstrip("/") + PATH, json=body, headers={"Authorization": "Bearer t"}, timeout=30)


def _post_and_hang_up(gw: ModelGateway, doc: str) -> None:
    """A worker killed mid-call: the request is sent, the connection closed before the answer."""
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": doc}]}]}).encode()
    # The same bytes requests sends for json=: the gateway knows a call by its body.
    url = urlparse(gw.url)
    with socket.create_connection((url.hostname, url.port)) as conn:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer t\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        conn.sendall(head.encode() + body)


def _until(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_call_passes_through_with_its_credentials_and_answer(gateway: ModelGateway, fake: FakeVertex) -> None:
    fake.push(answer({"columns": ["a"], "results": [["1"]]}))

    resp = _post(gateway, "doc-1")

    assert resp.status_code == 200
    assert "candidates" in resp.json()
    (req,) = fake.requests
    assert req.path == PATH
    assert req.headers.get("Authorization") == "Bearer t"


def test_an_answer_whose_caller_died_is_served_once_to_the_same_request_without_calling_again(
    gateway: ModelGateway, fake: FakeVertex
) -> None:
    fake.push(_slow(0.5, answer({"columns": ["a"], "results": [["kept"]]})))

    _post_and_hang_up(gateway, "doc-1")
    _until(lambda: gateway.kept == 1)
    retried = _post(gateway, "doc-1")

    assert retried.status_code == 200
    assert "kept" in retried.text
    assert len(fake.requests) == 1, "the retried item's request is answered without a second model call"
    assert gateway.served_kept == 1

    fake.push(answer({"columns": ["a"], "results": [["fresh"]]}))
    again = _post(gateway, "doc-1")
    assert "fresh" in again.text, "a kept answer is served once"
    assert len(fake.requests) == 2


def test_a_kept_answer_is_served_only_to_the_same_request(gateway: ModelGateway, fake: FakeVertex) -> None:
    fake.push(_slow(0.3, answer({"results": [["for doc-1"]]})), answer({"results": [["for doc-2"]]}))
    _post_and_hang_up(gateway, "doc-1")
    _until(lambda: gateway.kept == 1)

    other = _post(gateway, "doc-2")

    assert "for doc-2" in other.text
    assert gateway.served_kept == 0


def test_a_429_whose_caller_died_is_not_kept(gateway: ModelGateway, fake: FakeVertex) -> None:
    fake.push(_slow(0.3, Reply(429, b'{"error": {"code": 429}}')), answer({"results": [["ok"]]}))
    _post_and_hang_up(gateway, "doc-1")
    _until(lambda: len(fake.requests) == 1)
    time.sleep(0.5)  # the 429 has come back to the gateway

    retried = _post(gateway, "doc-1")

    assert retried.status_code == 200 and gateway.kept == 0
    assert len(fake.requests) == 2, "the retry asks the model again: the quota decides anew"


def test_twenty_identical_requests_at_once_make_one_model_call(gateway: ModelGateway, fake: FakeVertex) -> None:
    fake.default = _slow(0.5, answer({"results": [["shared"]]}))
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def ask() -> None:
        barrier.wait()
        resp = _post(gateway, "doc-1")
        with lock:
            statuses.append(resp.status_code)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert statuses == [200] * 20
    assert len(fake.requests) + gateway.joined == 20
    assert len(fake.requests) < 20, "requests that met one under way shared it"


def test_an_unreachable_upstream_is_a_502_the_retry_policy_decides_on() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    gw = ModelGateway(f"http://127.0.0.1:{port}/", timeout_s=5)
    gw.start()
    try:
        resp = _post(gw, "doc-1")
    finally:
        gw.stop()
    assert resp.status_code == 502
    assert "upstream call failed" in resp.text


def _ask_kept(gw: ModelGateway, doc: str) -> requests.Response:
    body: Any = {"contents": [{"role": "user", "parts": [{"text": doc}]}]}
    headers = {"Authorization": "Bearer t", "X-Sluice-Kept-Only": "1"}
    return requests.post(gw.url.rstrip("/") + PATH, json=body, headers=headers, timeout=30)


def test_asking_only_for_a_kept_answer_never_calls_the_model(gateway: ModelGateway, fake: FakeVertex) -> None:
    resp = _ask_kept(gateway, "doc-1")

    assert resp.status_code == 404
    assert fake.requests == []


def test_asking_only_for_a_kept_answer_gets_the_one_a_dead_caller_left(gateway: ModelGateway, fake: FakeVertex) -> None:
    fake.push(_slow(0.3, answer({"results": [["kept"]]})))
    _post_and_hang_up(gateway, "doc-1")
    _until(lambda: gateway.kept == 1)

    resp = _ask_kept(gateway, "doc-1")

    assert resp.status_code == 200 and "kept" in resp.text
    assert len(fake.requests) == 1


def _extract_in(tmp_path: Path, base_url: str, *, limiter: Any = None) -> Any:
    """The real Gemini extractor on a local document, through ``base_url`` (the gateway)."""
    from google.oauth2.credentials import Credentials

    from common.adapters.gcp.gemini import GeminiExtractor
    from common.adapters.local.clock import ManualClock
    from common.adapters.local.fs_blobs import FsBlobStore
    from common.core.schema import INVOICE_PRESET
    from common.ports.extractor import DocumentRef

    clock = ManualClock()
    blobs = FsBlobStore(tmp_path / "blobs", clock=clock, durable=False)
    data = b"invoice F-1 total 119.00 EUR"
    uri = "local://docs/a.txt"
    blobs.put_bytes(uri, data, content_type="text/plain")
    ex = GeminiExtractor(
        project="p",
        location="europe-west1",
        model="gemini-2.5-flash",
        blobs=blobs,
        clock=clock,
        limiter=limiter,
        credentials=Credentials(token="t"),  # type: ignore[no-untyped-call]
        http_base_url=base_url,
        ask_gateway_first=True,
    )
    return ex.extract(DocumentRef(uri=uri, name="a.txt", mime_type="text/plain", size=len(data)), INVOICE_PRESET)


class NoQuota:
    """A limiter with no token to give."""

    def acquire(self, cost: float = 1.0) -> None:
        from common.core.errors import ErrorKind, RetryableError

        raise RetryableError("no quota left in this test", kind=ErrorKind.THROTTLED)


def test_a_retried_extraction_takes_the_answer_its_killed_first_attempt_left_without_a_token(
    gateway: ModelGateway, fake: FakeVertex, tmp_path: Path
) -> None:
    """The first attempt's process is killed with -9 mid-call; the retry (here, with a
    limiter that has no token to give) gets that call's answer from the gateway."""
    from common.core.schema import INVOICE_PRESET

    row = {"columns": [f.name for f in INVOICE_PRESET], "results": [["F-1", None, 119.0, "EUR", None, None]]}
    fake.push(_slow(1.0, answer(row)))
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
            " from tests.integration.test_model_gateway import _extract_in;"
            " _extract_in(Path(sys.argv[2]), sys.argv[3])",
            str(REPO_ROOT),
            str(tmp_path),
            gateway.url,
        ],
        cwd=REPO_ROOT,
    )
    try:
        _until(lambda: len(fake.requests) == 1)
    finally:
        first.kill()
        first.wait()
    _until(lambda: gateway.kept == 1)

    retried = _extract_in(tmp_path, gateway.url, limiter=NoQuota())

    assert retried.results[0][0] == "F-1"
    assert gateway.not_kept == 1, "the first attempt asked first too, and found nothing"
    assert len(fake.requests) == 1, "one model call for the document"
