"""Fuzz the job API with schemathesis against a real ``sluice serve``.

Serves a JWKS on loopback, starts ``sluice serve`` trusting that issuer,
mints a token, and runs ``st run`` with the checks the issue names: no 5xx,
responses conform to the OpenAPI schema (status codes and content types
too). Prints schemathesis's summary; exits with its exit code.

    .venv/bin/python scripts/schemathesis_serve.py [--max-examples 25]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

REPO = Path(__file__).resolve().parent.parent
ISSUER, AUDIENCE, KID = "https://issuer.test", "sluice-api", "k1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=25)
    ap.add_argument("--seed", help="replay a run (schemathesis prints its seed)")
    ap.add_argument("--include-path-regex", help="fuzz only the operations whose path matches")
    args = ap.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    jwks = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=jwks.serve_forever, daemon=True).start()
    now = int(time.time())
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "fuzzer", "iat": now, "exp": now + 3600},
        key,
        algorithm="RS256",
        headers={"kid": KID},
    )
    port = _free_port()
    issuers = [{"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": f"http://127.0.0.1:{jwks.server_port}/jwks"}]
    with tempfile.TemporaryDirectory(prefix="sluice-st-") as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SLUICE_API_ISSUERS": json.dumps(issuers),
            # Fuzzing sends far more than a user would; the limiter has its own tests.
            "SLUICE_API_RATE_LIMIT_RPM": "1000000",
            # A Google OAuth client, so the integration routes run for real (no network is used:
            # consent URLs are only built, and no callback carries a state the server issued).
            "SLUICE_GOOGLE_CLIENT_ID": "fuzz.apps.googleusercontent.com",
            "SLUICE_GOOGLE_CLIENT_SECRET": "fuzz-secret",
        }
        serve = subprocess.Popen(
            [sys.executable, "-m", "common.cli", "serve", "--port", str(port), "--data-dir", f"{tmp}/data"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(f"{tmp}/serve.log", "wb"),  # noqa: SIM115 -- lives as long as the server
        )
        try:
            base = f"http://127.0.0.1:{port}/v1"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{base}/openapi.json", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or serve.poll() is not None:
                        print(Path(f"{tmp}/serve.log").read_text(), file=sys.stderr)
                        return 2
                    time.sleep(0.2)
            st = Path(sys.executable).with_name("st")
            return subprocess.call(
                [
                    str(st),
                    "run",
                    f"{base}/openapi.json",
                    "--checks",
                    "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                    "--max-examples",
                    str(args.max_examples),
                    "--workers",
                    "1",
                    "-H",
                    f"Authorization: Bearer {token}",
                    *(["--seed", args.seed] if args.seed else []),
                    *(["--include-path-regex", args.include_path_regex] if args.include_path_regex else []),
                ]
            )
        finally:
            serve.terminate()
            serve.wait(timeout=30)
            jwks.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
