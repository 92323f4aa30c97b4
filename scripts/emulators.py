"""Start and stop Google's emulators by hand (the test suite starts its own).

    .venv/bin/python scripts/emulators.py start    # prints the export lines
    eval "$(.venv/bin/python scripts/emulators.py env)"
    .venv/bin/python scripts/emulators.py status
    .venv/bin/python scripts/emulators.py stop     # by the PIDs recorded at start

State (PIDs, ports) and logs live in ``build/emulators/``; each server is
stopped by its own PID, nothing is killed by name.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.emulators import harness  # noqa: E402  (after the path is set)

STATE_DIR = REPO / "build" / "emulators"
STATE = STATE_DIR / "state.json"


def _load() -> harness.Emulators | None:
    try:
        return harness.Emulators.from_json(STATE.read_text())
    except FileNotFoundError:
        return None


def _exports(emu: harness.Emulators) -> str:
    return "\n".join(f"export {k}={v}" for k, v in emu.env().items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--project", default=harness.DEFAULT_PROJECT)
    args = parser.parse_args(argv)

    running = _load()
    if args.command == "start":
        if running is not None:
            print(f"already started (state in {STATE}); stop it first", file=sys.stderr)
            return 1
        try:
            emu = harness.start(STATE_DIR / "logs", project=args.project)
        except harness.EmulatorUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        STATE.write_text(emu.to_json())
        for server in emu.servers.values():
            print(f"# {server.name}: pid {server.pid}, {server.host}, log {server.log}", file=sys.stderr)
        print(_exports(emu))
        return 0
    if running is None:
        print("not started", file=sys.stderr)
        return 0 if args.command == "stop" else 1
    if args.command == "env":
        print(_exports(running))
    elif args.command == "status":
        for server in running.servers.values():
            alive = _alive(server.pid)
            print(f"{server.name:10} pid {server.pid:<8} {server.host:22} {'running' if alive else 'GONE'}")
    else:
        running.stop()
        STATE.unlink()
        print("stopped", file=sys.stderr)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
