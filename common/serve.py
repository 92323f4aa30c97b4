"""``sluice serve``: the job API and every stage worker, offline, on the embedded backend.

One process holds the data directory (the same lock ``sluice run`` takes), runs
the API on a threaded werkzeug server bound to 127.0.0.1 and the stages in the
local runtime's worker pools, so the whole product works over HTTP without a
cloud. SIGINT or SIGTERM stops accepting requests, lets in-flight handlers
finish and settles them, then exits 0.

Authentication is explicit here as everywhere: OIDC issuers from
``SLUICE_API_*``, or a development identity (``--dev-identity NAME`` or
``SLUICE_API_DEV_IDENTITY``), announced with a WARNING.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from werkzeug.serving import make_server

from common.core.errors import SluiceError

if TYPE_CHECKING:
    from flask import Flask

    from common.config import Settings
    from common.runtime.local import LocalRuntime
    from common.runtime.supervisor import Supervisor
    from common.service.context import Deps

log = logging.getLogger("sluice.serve")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``sluice serve`` takes (for the CLI's subparser)."""
    from common.cli_support import add_data_dir

    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1; 0 picks a free one (default: 8080)")
    add_data_dir(p)
    p.add_argument(
        "--dev-identity",
        default=None,
        metavar="NAME",
        help="act as this user for requests without a token, local use only (default: none; OIDC tokens only)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="run the stages in N worker processes under a supervisor that replaces any that dies"
        " (default: SLUICE_PROCESSES or 1, the stages in this process)",
    )


def serve(args: argparse.Namespace) -> int:
    from common.cli_support import exit_code, message

    try:
        return _serve(args)
    except SluiceError as err:
        print(f"sluice serve: {message(err)}", file=sys.stderr)
        return exit_code(err)


@dataclass
class Serving:
    """A running ``sluice serve``: its base URL and what it was built from (tests reach in here)."""

    url: str
    deps: Deps
    runtime: LocalRuntime  # runs the stages with one process; with several, idle (its queue gauges still serve)
    supervisor: Supervisor | None = None  # with several processes: the one running them


@contextmanager
def serving(
    data_dir: Path,
    *,
    port: int = 0,
    dev_identity: str | None = None,
    prepare: Callable[[Deps], None] | None = None,
    processes: int | None = None,
) -> Iterator[Serving]:
    """The API (and the console) on 127.0.0.1 plus every stage, until the block ends.

    ``prepare`` sees the dependencies before anything runs (tests wrap the extractor there);
    with several ``processes`` (default: ``SLUICE_PROCESSES``) each worker process calls it
    too, so it must then be a module-level function.
    """
    from common.api.app import create_app
    from common.api.settings import ApiSettings
    from common.bootstrap import local_app
    from common.cli_support import data_dir_lock
    from common.config import Settings
    from common.obs import logging as slog
    from common.runtime.supervisor import Supervisor

    host = "127.0.0.1"
    with data_dir_lock(data_dir):
        # Bind first: with port 0 the signed URLs must name the port chosen.
        server = make_server(host, port, app=_unavailable, threaded=True)
        actual = server.server_port
        settings = Settings(backend="local", data_dir=data_dir, local_api_url=f"http://{host}:{actual}")
        slog.configure(settings.log_level, settings.log_format)
        local = local_app(settings)
        deps, runtime = local.deps, local.runtime
        if prepare is not None:
            prepare(deps)  # before anything runs: the runtime reads the same deps
        api_settings = ApiSettings() if dev_identity is None else ApiSettings(dev_identity=dev_identity)
        app = create_app(deps, api_settings, sender=local.sender)
        _mount_metrics(app, runtime, settings)
        server.app = app
        n = settings.processes if processes is None else processes
        supervisor = None
        if n > 1:
            supervisor = Supervisor(
                data_dir, n, local.bus, local_api_url=settings.local_api_url, prepare=prepare, deps=deps
            )
            supervisor.start()
        else:
            runtime.start()
        thread = threading.Thread(target=server.serve_forever, name="sluice-api", daemon=True)
        thread.start()
        try:
            yield Serving(f"http://{host}:{actual}", deps, runtime, supervisor)
        finally:
            server.shutdown()
            thread.join()
            if supervisor is not None:
                supervisor.stop()
            else:
                runtime.stop()


def _serve(args: argparse.Namespace) -> int:
    port = int(getattr(args, "port", 8080))
    data_dir = Path(args.data_dir)
    dev_identity: str | None = getattr(args, "dev_identity", None)
    processes: int | None = getattr(args, "processes", None)
    if processes is not None and processes < 1:
        from common.cli_support import UsageError

        raise UsageError("--processes must be at least 1")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping on signal %s", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with serving(data_dir, port=port, dev_identity=dev_identity, processes=processes) as served:
            print(
                f"Sluice API on {served.url}/v1, console on {served.url}/ (data in {data_dir}); Ctrl-C stops it",
                flush=True,
            )
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Sluice API stopped", flush=True)
    return 0


def _unavailable(environ: object, start_response: object) -> list[bytes]:  # pragma: no cover - replaced at once
    raise RuntimeError("the API is not built yet")


def main(argv: list[str] | None = None) -> int:
    """``python -m common.serve``: the same as ``sluice serve``."""
    parser = argparse.ArgumentParser(prog="sluice serve")
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def _mount_metrics(app: Flask, runtime: LocalRuntime, settings: Settings) -> None:
    """Prometheus exposition at /metrics (loopback only: sluice serve binds 127.0.0.1), queue gauges included."""
    from flask import Response

    from common.obs import metrics

    metrics.configure("prometheus")
    metrics.set_model_limit(settings.gemini_model, settings.model_rpm / 60)
    metrics.register_queue_probe(runtime.queue_stats)
    app.add_url_rule(
        "/metrics",
        "metrics",
        lambda: Response(metrics.prometheus_text(), content_type=metrics.CONTENT_TYPE),
    )


if __name__ == "__main__":
    sys.exit(main())
