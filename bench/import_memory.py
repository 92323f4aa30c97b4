"""Memory while importing one large Drive file: streamed, never whole in memory.

A child process serves a fake Drive (``files.get`` metadata, ``alt=media``
with Range requests, bytes generated on the fly from a repeating pattern, so
the server holds no file) and a fake OAuth token endpoint. This process runs
the real import path -- GoogleOAuth, the Google API client, the import_drive
handlers, the local runtime and blob store -- and samples its own RSS every
few milliseconds while the file streams into the uploads bucket.

Target: peak RSS stays under 100 MB above the baseline taken just before the
import (after imports and set-up). The last line is one JSON object with the
figures; the exit status is 1 if the target is missed or the copy is wrong.

    .venv/bin/python bench/import_memory.py [--mb 200] [--chunk-mib 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.adapters.google import GoogleOAuth
from common.adapters.google.drive import GoogleDrive
from common.bootstrap import bootstrap, local_app, with_google_auth
from common.config import Settings
from common.core.models import Operation, SourceFile
from common.core.schema import INVOICE_PRESET
from common.ports.google import DRIVE_READONLY
from common.service import drive_import, integrations, jobs, repo

MiB = 1024 * 1024
LIMIT_MB = 100.0
GOOGLEAPIS = "https://www.googleapis.com"
FILE_ID = "big-file"
PATTERN = bytes(range(256)) * 4096  # 1 MiB; byte i of the file is PATTERN[i % MiB]


# -- the fake Google endpoints (child process) ----------------------------------------


def serve(size: int, md5: str, port_out: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"access_token": "ya29.bench", "expires_in": 3600, "scope": DRIVE_READONLY}).encode()
            self._reply(200, {"content-type": "application/json"}, body)

        def do_GET(self) -> None:
            if "alt=media" not in self.path:
                meta = {"id": FILE_ID, "name": "big.bin", "mimeType": "application/octet-stream"}
                meta |= {"size": str(size), "md5Checksum": md5}
                self._reply(200, {"content-type": "application/json"}, json.dumps(meta).encode())
                return
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("range", ""))
            start, end = (int(m.group(1)), min(int(m.group(2)), size - 1)) if m else (0, size - 1)
            self.send_response(206 if m else 200)
            self.send_header("content-range", f"bytes {start}-{end}/{size}")
            self.send_header("content-length", str(end - start + 1))
            self.end_headers()
            view = memoryview(PATTERN)
            pos = start
            while pos <= end:  # written in pieces straight from the pattern: the server holds no chunk
                offset = pos % MiB
                n = min(MiB - offset, end - pos + 1)
                self.wfile.write(view[offset : offset + n])
                pos += n

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


def pattern_md5(size: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    full, rest = divmod(size, MiB)
    for _ in range(full):
        h.update(PATTERN)
    h.update(PATTERN[:rest])
    return h.hexdigest()


# -- measuring --------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB


class PeakSampler:
    def __init__(self, interval_s: float = 0.005) -> None:
        self.peak = rss_mb()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


class Redirect:
    """Requests for googleapis.com go to the local fake (the client builds real Google URLs)."""

    def __init__(self, base: str) -> None:
        import httplib2

        self._base = base
        self._http = httplib2.Http(timeout=60, proxy_info=None)

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = 5,
        connection_type: Any = None,
    ) -> tuple[Any, bytes]:
        if uri.startswith(GOOGLEAPIS):
            uri = self._base + uri.removeprefix(GOOGLEAPIS)
        resp, content = self._http.request(uri, method, body=body, headers=headers, redirections=redirections)
        return resp, content


class BenchSettings(Settings):
    drive_chunk_bytes: int = drive_import.DEFAULT_CHUNK_BYTES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MiB (default 200)")
    parser.add_argument("--chunk-mib", type=int, default=drive_import.DEFAULT_CHUNK_BYTES // MiB)
    args = parser.parse_args()
    size = args.mb * MiB
    md5 = pattern_md5(size)

    ports: Any = multiprocessing.get_context("fork").Queue()
    server = multiprocessing.get_context("fork").Process(target=serve, args=(size, md5, ports), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{ports.get(timeout=10)}"

    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        settings = BenchSettings(
            backend="local", data_dir=Path(tmp), durable=False, drive_chunk_bytes=args.chunk_mib * MiB
        )
        deps = bootstrap(settings)
        auth = GoogleOAuth(
            deps.store,
            deps.clock,
            key=os.urandom(32),
            client_id="bench",
            client_secret="bench",
            token_uri=f"{base_url}/token",
            transport=lambda: Redirect(base_url),
            token_transport=lambda: Redirect(base_url),
        )
        app = local_app(deps=with_google_auth(deps, auth))
        deps, runtime, sender = app.deps, app.runtime, app.sender
        integrations.connect(
            deps, owner="bench", account="bench@example.com", refresh_token="rt", scopes=[DRIVE_READONLY]
        )
        job = jobs.create_job(deps, owner="bench", name="memory bench", fields=INVOICE_PRESET)
        assert isinstance(deps.drive, GoogleDrive)
        deps.drive.service()  # build the client first: its discovery document is set-up, not import cost

        baseline = rss_mb()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        with PeakSampler() as sampler:
            op = drive_import.start_drive_import(deps, sender, job, "bench", [FILE_ID])
            runtime.drain()
        elapsed = time.perf_counter() - started
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        final = repo.require(deps.store, Operation, op.id)[0]
        [f] = [x for x in repo.scan(deps.store, SourceFile) if x.job_id == job.id]
        stored = deps.blobs.stat(f.blob_uri or "")
        copied_ok = final.done == 1 and stored is not None and stored.size == size
    server.terminate()

    # The sampler can miss a short spike; ru_maxrss cannot (but only sees peaks above set-up's).
    delta = max(sampler.peak - baseline, maxrss_after - maxrss_before)
    figures = {
        "file_mib": args.mb,
        "chunk_mib": args.chunk_mib,
        "range_requests": -(-size // (args.chunk_mib * MiB)),
        "seconds": round(elapsed, 2),
        "mib_per_s": round(args.mb / elapsed, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(sampler.peak, 1),
        "peak_rss_delta_mb": round(delta, 1),
        # ru_maxrss is a lifetime peak: this delta is 0 when set-up peaked higher than the import.
        "ru_maxrss_delta_mb": round(max(0.0, maxrss_after - maxrss_before), 1),
        "limit_mb": LIMIT_MB,
        "copied_ok": copied_ok,
        "ok": copied_ok and delta < LIMIT_MB,
    }
    print(f"imported {args.mb} MiB in {elapsed:.2f} s ({figures['mib_per_s']} MiB/s), {args.chunk_mib} MiB chunks")
    print(
        f"RSS: baseline {baseline:.1f} MB, peak {sampler.peak:.1f} MB, peak delta {delta:.1f} MB (limit {LIMIT_MB:g})"
    )
    print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
