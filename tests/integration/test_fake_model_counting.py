"""The fake model server counts an answer as given only when its caller read it (the enrich bench's
duplicate count rests on this): real client processes, one of them killed with the answer unread."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from tests.fakes.openai_chat import ChatRequest, FakeOpenAI, Reply, RowModel

PROMPT = "### Row 2\nProduct: bread\n### Row 3\nProduct: hammer\n"


def _answer(number: int, text: str) -> dict[str, Any]:
    return {"category": "food" if "bread" in text else "tools"}


def _client(base_url: str, *, read: bool) -> list[str]:
    """A client process that posts one chat request, then reads the answer (or sleeps, never reading it)."""
    body = json.dumps({"messages": [{"role": "user", "content": PROMPT}]})
    code = (
        "import http.client, sys, time, urllib.parse as u\n"
        f"url = u.urlsplit({base_url!r})\n"
        "c = http.client.HTTPConnection(url.hostname, url.port)\n"
        f"c.request('POST', url.path + '/chat/completions', body={body!r}, "
        "headers={'content-type': 'application/json', 'connection': 'close'})\n"
        "print('sent', flush=True)\n" + ("r = c.getresponse(); r.read(); c.close()\n" if read else "time.sleep(60)\n")
    )
    return [sys.executable, "-c", code]


def test_an_answer_read_by_its_caller_counts_once_per_row() -> None:
    rows = RowModel(_answer)
    with FakeOpenAI(confirm_receipt=True) as fake:
        fake.default = rows
        subprocess.run(_client(fake.base_url, read=True), check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while rows.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert rows.answered == {2: 1, 3: 1} and fake.unread == 0


def test_an_answer_sent_to_a_caller_killed_before_reading_it_is_not_counted() -> None:
    rows = RowModel(_answer)
    sent = threading.Event()

    def respond(req: ChatRequest) -> Reply:
        reply = rows(req)
        sent.set()
        return reply

    with FakeOpenAI(confirm_receipt=True) as fake:
        fake.default = respond
        client = subprocess.Popen(_client(fake.base_url, read=False), stdout=subprocess.PIPE)
        assert client.stdout is not None and client.stdout.readline().strip() == b"sent"
        assert sent.wait(10)
        time.sleep(0.2)  # the answer is in the client's socket, unread (not a timing assertion: setup only)
        client.send_signal(signal.SIGKILL)
        client.wait()
        deadline = time.monotonic() + 10
        while fake.unread == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert fake.unread == 1
    assert rows.answered == {} and rows.calls == 0
