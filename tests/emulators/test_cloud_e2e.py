"""The pipeline, cloud-shaped, on Google's emulators.

One functions-framework process per stage function (``import_upload``,
``extract``, ``export``) serves ``functions/<name>/main.py`` unchanged; the
topology's subscriptions are created as push subscriptions on the Pub/Sub
emulator pointing at them, with their dead-letter topics and maximum
delivery attempts. Uploads land in fake-gcs-server, whose finalize events
reach the uploads topic. Then: upload -> finalize -> SourceFile -> run ->
extract -> fan-in -> export (with a V4 signed URL), and a message that keeps
failing is dead-lettered by Pub/Sub after its attempts.

Retry backoffs are compressed to 1 s so the test does not wait minutes; the
attempts are the topology's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from common.config import Settings
from common.core.messages import ExportRun
from common.core.models import Export, ExportFormat, ExportSpec, Run, SourceFile
from common.core.schema import INVOICE_PRESET
from common.core.states import ExportStatus, FileStatus, RunStatus
from common.ports.store import Filter
from common.service import jobs, repo
from common.service.context import Deps, TopologySender
from common.topology import Topology
from common.topology import load as load_topology
from tests.emulators import harness
from tests.emulators.gcp_deps import build_gcp_deps
from tests.kinds import wordcount

pytestmark = [pytest.mark.emulator, pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "invoices"
# wordcount: the job kind that lives only in the tests (tests/kinds/wordcount.py), as its own function.
FUNCTIONS = ("import_upload", "extract", "export", "wordcount")
PREFIX = "sluice-"
T = TypeVar("T")


@dataclass
class Cloud:
    deps: Deps
    sender: TopologySender
    subscriber: Any
    dead_letters: dict[str, str]  # dead-letter topic -> a pull subscription on it
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


def _wait(what: str, probe: Callable[[], T | None], timeout_s: float, cloud: Cloud | None = None) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        if cloud is not None:
            for name, proc in cloud.processes.items():
                assert proc.poll() is None, f"function {name} exited with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _signing_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "sluice-emulated",
                "client_email": "exports@sluice-emulated.iam.gserviceaccount.com",
                "client_id": "1",
                "private_key": pem,
                "private_key_id": "e2e",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


def _declare(
    emu: harness.Emulators, topo: Topology, settings: Settings, ports: dict[str, int]
) -> tuple[Any, dict[str, str]]:
    from google.api_core import exceptions as gexc
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    admin, subscriber = PublisherClient(), SubscriberClient()
    project = emu.project
    for topic in topo.topics:
        # The uploads topic exists already: fake-gcs-server publishes to it from the start.
        with contextlib.suppress(gexc.AlreadyExists):
            admin.create_topic(name=f"projects/{project}/topics/{settings.topic_name(topic)}")
    dead_letters: dict[str, str] = {}
    for topic, spec in topo.subscribed_topics().items():
        if spec.function not in ports:
            continue
        request: dict[str, Any] = {
            "name": subscriber.subscription_path(project, f"{settings.topic_name(topic)}--{spec.function}"),
            "topic": f"projects/{project}/topics/{settings.topic_name(topic)}",
            "push_config": {"push_endpoint": f"http://127.0.0.1:{ports[spec.function]}/"},
            "ack_deadline_seconds": int(spec.ack_deadline_s),
            "retry_policy": {"minimum_backoff": timedelta(seconds=1), "maximum_backoff": timedelta(seconds=1)},
        }
        if spec.dead_letter_topic is not None:
            dlq = settings.topic_name(spec.dead_letter_topic)
            request["dead_letter_policy"] = {
                "dead_letter_topic": f"projects/{project}/topics/{dlq}",
                "max_delivery_attempts": spec.max_delivery_attempts,
            }
            if dlq not in dead_letters:
                dead_letters[dlq] = subscriber.subscription_path(project, f"{dlq}--inspect")
                subscriber.create_subscription(name=dead_letters[dlq], topic=f"projects/{project}/topics/{dlq}")
        subscriber.create_subscription(request=request)
    # The Cloud Tasks queues, one per priority, as Terraform creates them from the topology.
    from google.cloud import tasks_v2

    from common.adapters.gcp import clients

    tasks = clients.tasks_client()
    location = f"projects/{project}/locations/{emu.location}"
    for queue in topo.task_queues:
        with contextlib.suppress(gexc.AlreadyExists):
            tasks.create_queue(
                parent=location, queue=tasks_v2.Queue(name=f"{location}/queues/{settings.prefix}{queue}")
            )
    return subscriber, dead_letters


@pytest.fixture(scope="module")
def cloud(emulators: harness.Emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    tmp = tmp_path_factory.mktemp("cloud-e2e")
    topology_path = wordcount.topology_file(tmp)
    topo = load_topology(topology_path)
    settings = Settings(
        backend="gcp",
        project=emulators.project,
        prefix=PREFIX,
        uploads_bucket=emulators.events_bucket,
        exports_bucket=f"{PREFIX}exports",
        log_format="text",
    )
    assert settings.topic_name("uploads") == emulators.events_topic, "finalize events must reach the uploads topic"
    deps = build_gcp_deps(settings, topo)
    storage = deps.blobs.client  # type: ignore[attr-defined]
    for bucket in (settings.uploads_bucket, settings.exports_bucket):
        if not storage.bucket(bucket).exists():
            storage.create_bucket(bucket)

    key = _signing_key(tmp / "signer.json")
    ports = {name: harness.free_port() for name in FUNCTIONS}
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SLUICE_BACKEND": "gcp",
        "SLUICE_PROJECT": emulators.project,
        "SLUICE_PREFIX": PREFIX,
        "SLUICE_UPLOADS_BUCKET": settings.uploads_bucket,
        "SLUICE_EXPORTS_BUCKET": settings.exports_bucket,
        "SLUICE_LOG_FORMAT": "text",
        "SLUICE_E2E_SIGNING_KEY": str(key),
        "SLUICE_TOPOLOGY": str(topology_path),
        "SLUICE_KINDS": "tests.kinds.wordcount",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    fframework = Path(sys.executable).with_name("functions-framework")
    try:
        for name, port in ports.items():
            log = (tmp / f"{name}.log").open("wb")
            procs[name] = subprocess.Popen(
                [
                    str(fframework),
                    "--source",
                    str(REPO / "tests" / "emulators" / "function_shim.py"),
                    "--target",
                    "handle",
                    "--signature-type",
                    "cloudevent",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=REPO,
                env={**env, "SLUICE_E2E_FUNCTION": name},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
        for name, port in ports.items():

            def listening(p: int = port) -> bool | None:
                return True if harness.tcp_ok(p) else None

            _wait(f"function {name} on port {port}", listening, 30)
        subscriber, dead_letters = _declare(emulators, topo, settings, ports)
        cloud = Cloud(deps, TopologySender(topo, settings, deps.publisher, deps.clock), subscriber, dead_letters, procs)
        yield cloud
        for sub in subscriber.list_subscriptions(project=f"projects/{emulators.project}"):
            if sub.name.rsplit("/", 1)[-1].startswith(PREFIX):
                subscriber.delete_subscription(subscription=sub.name)
        subscriber.close()
    finally:
        harness.stop_pids([proc.pid for proc in procs.values()])
        for name in procs:
            log_text = (tmp / f"{name}.log").read_text(errors="replace")
            if "Traceback" in log_text:
                sys.stderr.write(f"--- {name} log ---\n{log_text[-4000:]}\n")


def test_upload_to_export_with_a_signed_url(cloud: Cloud) -> None:
    deps = cloud.deps
    job = jobs.create_job(
        deps, owner="alice", name="e2e", fields=INVOICE_PRESET, exports=[ExportSpec(format=ExportFormat.CSV)]
    )
    samples = sorted(SAMPLES.glob("*.pdf"))[:2]
    for i, pdf in enumerate(samples):
        uri = deps.bucket_uri("uploads", f"jobs/{job.id}/files/f{i}/{pdf.name}")
        deps.blobs.put_bytes(uri, pdf.read_bytes(), content_type="application/pdf", metadata={"name": pdf.name})

    def uploaded() -> list[SourceFile] | None:
        files = list(repo.scan(deps.store, SourceFile, filters=[Filter("job_id", "==", job.id)]))
        done = [f for f in files if f.status is FileStatus.UPLOADED]
        return done if len(done) == len(samples) else None

    files = _wait("the finalize events to register both uploads", uploaded, 30, cloud)
    assert sorted(f.name for f in files) == [p.name for p in samples]

    run = jobs.request_run(deps, cloud.sender, job)

    def finished() -> Run | None:
        current = repo.require(deps.store, Run, run.id)[0]
        return current if current.status not in (RunStatus.PENDING, RunStatus.RUNNING) else None

    done = _wait("the run to complete", finished, 90, cloud)
    assert done.status is RunStatus.COMPLETED
    assert done.counters.total == len(samples)

    def exported() -> Export | None:
        found = list(repo.scan(deps.store, Export, filters=[Filter("run_id", "==", run.id)]))
        return found[0] if found and found[0].status is ExportStatus.COMPLETED else None

    export = _wait("the export", exported, 60, cloud)
    assert export.external_id is not None and export.external_id.startswith(f"gs://{deps.settings.exports_bucket}/")
    assert export.url is not None and "X-Goog-Signature=" in export.url
    with urllib.request.urlopen(export.url, timeout=10) as resp:
        csv_text = resp.read().decode("utf-8-sig")
    assert len(csv_text.strip().splitlines()) >= 1 + len(samples), csv_text


def test_a_test_only_kind_runs_on_the_emulators(cloud: Cloud) -> None:
    deps = cloud.deps
    job = jobs.create_job(deps, owner="alice", name="words", fields=[], kind="wordcount", kind_settings={})
    texts = {"a.txt": b"one two three", "b.txt": b"four five"}
    for i, (name, data) in enumerate(texts.items()):
        uri = deps.bucket_uri("uploads", f"jobs/{job.id}/files/w{i}/{name}")
        deps.blobs.put_bytes(uri, data, content_type="text/plain", metadata={"name": name})

    def uploaded() -> list[SourceFile] | None:
        files = list(repo.scan(deps.store, SourceFile, filters=[Filter("job_id", "==", job.id)]))
        done = [f for f in files if f.status is FileStatus.UPLOADED]
        return done if len(done) == len(texts) else None

    _wait("the finalize events to register both texts", uploaded, 30, cloud)
    run = jobs.request_run(deps, cloud.sender, job)

    def finished() -> Run | None:
        current = repo.require(deps.store, Run, run.id)[0]
        return current if current.status not in (RunStatus.PENDING, RunStatus.RUNNING) else None

    done = _wait("the wordcount run to complete", finished, 90, cloud)
    assert done.status is RunStatus.COMPLETED and done.kind == "wordcount"
    assert done.outputs == {"total_words": 5, "files": 2}


def test_a_message_about_a_missing_export_is_dead_lettered_on_its_first_delivery(cloud: Cloud) -> None:
    topo = cloud.deps.topology
    spec = topo.topics["export"].subscription
    assert spec is not None and spec.dead_letter_topic is not None
    dlq_sub = cloud.dead_letters[cloud.deps.settings.topic_name(spec.dead_letter_topic)]
    # An export that does not exist is a permanent error: retrying cannot make
    # it exist, so it goes to the dead-letter topic at once, with its reason.
    # (Pub/Sub's own max-delivery dead-lettering is in test_bus_contract_gcp.py.)
    mid = cloud.sender.send(ExportRun(export_id="exp_missing", run_id="run_missing", job_id="job_missing"))

    def dead() -> Any | None:
        resp = cloud.subscriber.pull(subscription=dlq_sub, max_messages=10, timeout=5)
        for received in resp.received_messages:
            cloud.subscriber.acknowledge(subscription=dlq_sub, ack_ids=[received.ack_id])
            if received.message.message_id == mid or received.message.attributes.get("export_id") == "exp_missing":
                return received
        return None

    got = _wait("the dead letter", dead, 90, cloud)
    attrs = dict(got.message.attributes)
    assert attrs["kind"] == "export.run"
    assert attrs["CloudPubSubDeadLetterSourceDeliveryCount"] == "1"
    assert "exp_missing" in attrs["sluice_error"]
