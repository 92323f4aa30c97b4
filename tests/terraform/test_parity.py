"""terraform/ against topology.yaml, the registry and the store's indexes.

The Terraform builds every resource with for_each over the decoded topology,
so these tests check the wiring of those loops (python-hcl2), evaluate the
loops with ``terraform console`` where the binary exists (no provider is
needed for locals), and show that a topology change the Terraform does not
handle fails here. ``terraform fmt -check`` and checkov run too.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("hcl2", reason="python-hcl2 is a dev dependency (pip install python-hcl2)")

from common import topology as topology_module
from common.bootstrap import STORE_INDEXES
from common.service.registry import PUBLISHES
from tests.terraform import parity

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topology.yaml"
TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="the terraform binary is not installed")


@pytest.fixture(scope="module")
def tf() -> parity.Terraform:
    return parity.load()


@pytest.fixture
def topology() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TOPOLOGY.read_text())
    return loaded


def _mutated(tmp_path: Path, topology: dict[str, Any], change: Any) -> dict[str, Any]:
    """Apply ``change`` to a copy of the topology, write it to tmp and read it back (as Terraform would)."""
    changed = copy.deepcopy(topology)
    change(changed)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    reread: dict[str, Any] = yaml.safe_load(path.read_text())
    return reread


def test_the_terraform_handles_everything_the_topology_declares(tf: parity.Terraform, topology: dict[str, Any]) -> None:
    assert parity.check(topology, tf, PUBLISHES) == []


def test_each_kind_of_topology_item_has_its_resources(tf: parity.Terraform) -> None:
    expected = {
        ("google_cloudfunctions2_function", "function"): "functions",
        ("google_service_account", "function"): "functions",
        ("google_storage_bucket_object", "bundle"): "functions",
        ("google_pubsub_topic", "topic"): "topics",
        ("google_pubsub_subscription", "push"): "subscriptions",
        ("google_pubsub_subscription", "dead_letter"): "dead_letter_topics",
        ("google_cloud_scheduler_job", "schedule"): "schedules",
        ("google_storage_bucket", "bucket"): "buckets",
        ("google_storage_notification", "finalize"): "finalize_buckets",
    }
    assert {ref: tf.for_each(*ref) for ref in expected} == {ref: f"${{local.{v}}}" for ref, v in expected.items()}


def test_functions_run_python311_with_the_topologys_sizes(tf: parity.Terraform) -> None:
    fn = tf.resources[("google_cloudfunctions2_function", "function")]
    build, service = fn["build_config"][0], fn["service_config"][0]
    assert parity.unquote(build["runtime"]) == "python311"
    assert build["entry_point"] == "${each.value.entry_point}"
    assert service["max_instance_count"] == "${each.value.max_instances}"
    assert service["max_instance_request_concurrency"] == "${each.value.concurrency}"
    assert service["timeout_seconds"] == "${each.value.timeout_s}"
    assert service["available_memory"] == "${each.value.memory}"
    assert "google_service_account.function[each.key].email" in service["service_account_email"]
    env = tf.locals["runtime_env"]
    assert 'SLUICE_BACKEND = "gcp"' in env and "SLUICE_PROJECT = var.project" in env


def test_source_zips_are_named_by_their_content_hash(tf: parity.Terraform) -> None:
    archive = tf.data[("archive_file", "bundle")]
    obj = tf.resources[("google_storage_bucket_object", "bundle")]
    assert parity.unquote(archive["source_dir"]) == "${local.build_dir}/${each.key}"
    assert "data.archive_file.bundle[each.key].output_sha256" in obj["name"]
    fn = tf.resources[("google_cloudfunctions2_function", "function")]
    storage = fn["build_config"][0]["source"][0]["storage_source"][0]
    assert storage["object"] == "${google_storage_bucket_object.bundle[each.key].name}"


def test_subscriptions_carry_the_topologys_retry_and_dead_letter_policy(tf: parity.Terraform) -> None:
    push = tf.resources[("google_pubsub_subscription", "push")]
    assert push["ack_deadline_seconds"] == "${each.value.ack_deadline_s}"
    retry = push["retry_policy"][0]
    assert parity.unquote(retry["minimum_backoff"]) == "${each.value.min_backoff_s}s"
    assert parity.unquote(retry["maximum_backoff"]) == "${each.value.max_backoff_s}s"
    (dead_letter,) = push["dynamic"]
    content = parity.unquote(dead_letter)["dead_letter_policy"]["content"][0]
    assert content["max_delivery_attempts"] == "${each.value.max_delivery_attempts}"
    assert "dead_letter_policy.value" in content["dead_letter_topic"]
    oidc = push["push_config"][0]["oidc_token"][0]
    assert "google_service_account.pubsub_push.email" in oidc["service_account_email"]


def test_the_api_is_not_public(tf: parity.Terraform) -> None:
    invokers = tf.resources[("google_cloud_run_v2_service_iam_member", "api_invoker")]
    assert invokers["member"] == "${each.value.member}"
    assert "allUsers" not in json.dumps(list(tf.resources.values()))
    assert '!contains(["allUsers", "allAuthenticatedUsers"], m)' in tf.text  # var.api_invoker_members refuses them


def test_firestore_indexes_are_the_composite_store_indexes(tf: parity.Terraform) -> None:
    written = parity.unquote(tf.locals["firestore_composite_indexes"])
    in_terraform = {(v["collection"], tuple(v["fields"])) for v in written.values()}
    wanted = {
        (collection, tuple(f.strip() for f in spec.split(",")))
        for collection, specs in STORE_INDEXES.items()
        for spec in specs
        if "," in spec
    }
    assert in_terraform == wanted
    ttl = tf.resources[("google_firestore_field", "ttl")]
    assert parity.unquote(ttl["field"]) == "expire_at"


# -- the check catches what the Terraform would miss ---------------------------------


def test_a_subscriber_function_without_a_service_account_mapping_fails(
    tf: parity.Terraform, topology: dict[str, Any], tmp_path: Path
) -> None:
    def add_ocr(t: dict[str, Any]) -> None:
        t["functions"]["ocr"] = {**t["functions"]["extract"], "source": "functions/ocr", "trigger": "ocr"}
        t["topics"]["ocr"] = {
            "kinds": ["ocr.page"],
            "subscription": {**t["topics"]["extract"]["subscription"], "function": "ocr"},
        }

    problems = parity.check(_mutated(tmp_path, topology, add_ocr), tf, PUBLISHES)
    assert "function 'ocr' has no service-account mapping in terraform/access.tf (function_access)" in problems
    assert "topic 'ocr' pushes to 'ocr', which has no service-account mapping" in problems


def test_a_top_level_key_the_terraform_ignores_fails(
    tf: parity.Terraform, topology: dict[str, Any], tmp_path: Path
) -> None:
    mutated = _mutated(tmp_path, topology, lambda t: t.update(watches={"inbox": {"topic": "gmail-notifications"}}))
    assert parity.check(mutated, tf, PUBLISHES) == ["topology key 'watches' is not read by the Terraform (locals.tf)"]


def test_a_new_field_the_terraform_ignores_fails(
    tf: parity.Terraform, topology: dict[str, Any], tmp_path: Path
) -> None:
    def add_fields(t: dict[str, Any]) -> None:
        t["topics"]["export"]["subscription"]["filter"] = 'attributes.kind = "export.run"'
        t["schedules"]["cleanup-hourly"]["time_zone"] = "Europe/Paris"
        t["buckets"]["exports"]["storage_class"] = "NEARLINE"

    problems = parity.check(_mutated(tmp_path, topology, add_fields), tf, PUBLISHES)
    assert problems == [
        "schedules.*.time_zone is not carried by the Terraform's locals (ignored)",
        "buckets.*.storage_class is not carried by the Terraform's locals (ignored)",
        "topics.*.subscription.filter is not carried by local.subscriptions (ignored)",
    ]


def test_new_topics_subscriptions_and_schedules_are_handled_by_the_loops(
    tf: parity.Terraform, topology: dict[str, Any], tmp_path: Path
) -> None:
    def add(t: dict[str, Any]) -> None:
        t["topics"]["reports-dlq"] = {"kinds": [], "dead_letter": True}
        t["topics"]["cleanup"]["subscription"]["dead_letter_topic"] = "reports-dlq"
        t["schedules"]["nightly-sweep"] = {"cron": "0 2 * * *", "topic": "cleanup", "kind": "cleanup.sweep"}

    assert parity.check(_mutated(tmp_path, topology, add), tf, PUBLISHES) == []


def test_a_published_kind_the_terraform_does_not_grant_fails(tf: parity.Terraform, topology: dict[str, Any]) -> None:
    publishes = {**PUBLISHES, "export": frozenset({"export.run"})}
    assert parity.check(topology, tf, publishes) == [
        "access.tf: export publishes [], registry.PUBLISHES says ['export.run']"
    ]


def test_a_resource_not_looping_over_the_topology_fails(tf: parity.Terraform, topology: dict[str, Any]) -> None:
    broken = copy.deepcopy(tf)
    broken.resources[("google_cloud_scheduler_job", "schedule")]["for_each"] = '${{"cleanup-hourly" = {}}}'
    broken.text += '\nlocals { x = "cleanup-hourly" }\n'
    assert parity.check(topology, broken, PUBLISHES) == [
        "google_cloud_scheduler_job.schedule must be for_each = local.schedules (one per topology item)",
        "topology name 'cleanup-hourly' is hard-coded in the Terraform",
    ]


# -- terraform itself ------------------------------------------------------------------


def _terraform(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM is not None
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    return subprocess.run(
        [TERRAFORM, *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )


@needs_terraform
def test_terraform_fmt_is_clean() -> None:
    result = _terraform("fmt", "-check", "-recursive", "terraform", cwd=REPO)
    assert result.returncode == 0, f"terraform fmt would change: {result.stdout}{result.stderr}"


def _console(tmp_path: Path, topology_file: Path, expr: str) -> Any:
    """Evaluate ``expr`` (a jsonencode) over the real locals (they need no provider) against a topology file."""
    work = tmp_path / "tf"
    work.mkdir()
    for name in ("variables.tf", "locals.tf", "access.tf"):
        shutil.copy(parity.TERRAFORM_DIR / name, work / name)
    init = _terraform("init", "-backend=false", "-input=false", cwd=work)
    assert init.returncode == 0, init.stderr
    variables = ("-var", "project=p", "-var", f"topology_file={topology_file}")
    out = _terraform("console", *variables, cwd=work, stdin=expr + "\n")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith('"'))
    return json.loads(json.loads(line))


def _evaluate_locals(tmp_path: Path, topology_file: Path) -> dict[str, Any]:
    """Evaluate the real locals' loops against a topology file."""
    expr = (
        "jsonencode({functions = keys(local.functions), topics = keys(local.topics),"
        " subscriptions = keys(local.subscriptions), dead_letter = keys(local.dead_letter_topics),"
        " schedules = keys(local.schedules), buckets = keys(local.buckets), finalize = local.finalize_buckets,"
        " publishers = keys(local.topic_publishers)})"
    )
    evaluated: dict[str, Any] = _console(tmp_path, topology_file, expr)
    return evaluated


@needs_terraform
def test_the_loops_yield_one_instance_per_topology_item(tmp_path: Path, topology: dict[str, Any]) -> None:
    def add(t: dict[str, Any]) -> None:
        t["topics"]["reports-dlq"] = {"kinds": [], "dead_letter": True}
        t["schedules"]["nightly-sweep"] = {"cron": "0 2 * * *", "topic": "cleanup", "kind": "cleanup.sweep"}

    mutated = _mutated(tmp_path, topology, add)
    got = _evaluate_locals(tmp_path, tmp_path / "topology.yaml")
    topics = mutated["topics"]
    assert got["functions"] == sorted(mutated["functions"])
    assert got["topics"] == sorted(topics)
    assert got["subscriptions"] == sorted(n for n, t in topics.items() if t.get("subscription"))
    assert got["dead_letter"] == sorted(n for n, t in topics.items() if t.get("dead_letter"))
    assert got["schedules"] == sorted(mutated["schedules"]) and "nightly-sweep" in got["schedules"]
    assert got["buckets"] == sorted(mutated["buckets"])
    assert got["finalize"] == {n: b["finalize"] for n, b in mutated["buckets"].items() if b.get("finalize")}
    # Each subscriber may publish to its own dead-letter topic (entrypoints dead-letter unprocessable messages).
    for t in topics.values():
        sub = t.get("subscription")
        if sub and sub.get("dead_letter_topic"):
            assert f"{sub['function']}/{sub['dead_letter_topic']}" in got["publishers"]


def test_priority_queues_take_their_rates_from_the_model_quota(tf: parity.Terraform) -> None:
    assert tf.for_each("google_cloud_tasks_queue", "priority") == "${local.task_queue_limits}"
    limits = json.dumps(tf.resources[("google_cloud_tasks_queue", "priority")]["rate_limits"])
    assert "each.value.max_dispatches_per_second" in limits and "each.value.max_concurrent_dispatches" in limits
    assert "local.topology.model_quota.requests_per_minute" in tf.local_text("task_queue_limits")
    # The extract stage's token bucket paces to the same quota.
    assert "SLUICE_MODEL_RPM" in tf.locals["runtime_env"]


@needs_terraform
@pytest.mark.parametrize("rpm", [None, 1200, 90_000])
def test_terraform_derives_the_same_queue_rates_as_the_topology(
    tmp_path: Path, topology: dict[str, Any], rpm: int | None
) -> None:
    def quota(t: dict[str, Any]) -> None:
        if rpm is not None:
            t["model_quota"]["requests_per_minute"] = rpm

    _mutated(tmp_path, topology, quota)
    path = tmp_path / "topology.yaml"
    got = _console(tmp_path, path, "jsonencode(local.task_queue_limits)")
    expected = topology_module.load(path).task_queue_limits()
    assert set(got) == set(expected)
    for name, limit in expected.items():
        assert got[name]["max_dispatches_per_second"] == pytest.approx(limit.max_dispatches_per_second)
        assert got[name]["max_concurrent_dispatches"] == limit.max_concurrent_dispatches
        assert got[name]["max_attempts"] == topology["task_queues"][name]["max_attempts"]


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / ".venv-checkov").exists(), reason="checkov is not installed (run scripts/checkov.sh)")
def test_checkov_finds_no_failed_check() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "checkov.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Failed checks: 0" in result.stdout


# -- operators: a dashboard row and an alert set per subscription ------------------------


def test_each_subscription_gets_its_alert_set_and_the_deployment_its_global_alerts(tf: parity.Terraform) -> None:
    for ref in parity.SUBSCRIPTION_ALERTS:
        assert tf.for_each(*ref) == "${local.subscriptions}"
    assert tf.for_each("google_monitoring_alert_policy", "dead_letters") == "${local.dead_lettered_subscriptions}"
    for ref in (*parity.SUBSCRIPTION_ALERTS, *parity.GLOBAL_ALERTS):
        assert tf.resources[ref]["notification_channels"] == "${var.notification_channels}"
    oldest = tf.resources[("google_monitoring_alert_policy", "oldest_unacked")]["conditions"][0]
    threshold = oldest["condition_threshold"][0]
    assert "oldest_unacked_message_age" in threshold["filter"]
    assert "${each.value.resource_name}" in threshold["filter"]
    assert threshold["threshold_value"] == "${var.alert_oldest_unacked_age_s}"
    crashes = tf.resources[("google_logging_metric", "function_crashes")]
    assert "unexpected failure" in crashes["filter"] and "Traceback" in crashes["filter"]


def test_monitoring_that_stops_following_the_subscriptions_fails(
    tf: parity.Terraform, topology: dict[str, Any]
) -> None:
    broken = copy.deepcopy(tf)
    broken.resources[("google_monitoring_alert_policy", "queue_depth")]["for_each"] = "${local.functions}"
    broken.resources[("google_monitoring_alert_policy", "run_over_timeout")]["notification_channels"] = []
    broken.locals["dashboard_tiles"] = "${[]}"
    assert parity.check(topology, broken, PUBLISHES) == [
        "google_monitoring_alert_policy.queue_depth must be for_each = local.subscriptions (one per subscription)",
        "google_monitoring_alert_policy.run_over_timeout must notify var.notification_channels",
        "local.dashboard_tiles has no row per subscription (in sort(keys(local.subscriptions)))",
    ]


@needs_terraform
def test_a_new_subscription_gets_a_dashboard_row_and_alerts(tmp_path: Path, topology: dict[str, Any]) -> None:
    def add_ocr(t: dict[str, Any]) -> None:
        t["topics"]["ocr-dlq"] = {"kinds": [], "dead_letter": True}
        sub = {**t["topics"]["extract"]["subscription"], "function": "ocr", "dead_letter_topic": "ocr-dlq"}
        t["topics"]["ocr"] = {"kinds": ["ocr.page"], "subscription": sub}

    mutated = _mutated(tmp_path, topology, add_ocr)
    work = tmp_path / "tf"
    work.mkdir()
    for name in ("variables.tf", "locals.tf", "access.tf", "monitoring_locals.tf"):
        shutil.copy(parity.TERRAFORM_DIR / name, work / name)
    assert _terraform("init", "-backend=false", "-input=false", cwd=work).returncode == 0
    expr = (
        "jsonencode({titles = [for t in local.dashboard_tiles : t.widget.title],"
        " filters = flatten([for t in local.dashboard_tiles : [for d in t.widget.xyChart.dataSets :"
        " d.timeSeriesQuery.timeSeriesFilter.filter]]), dead_lettered = keys(local.dead_lettered_subscriptions)})\n"
    )
    out = _terraform(
        "console", "-var", "project=p", "-var", f"topology_file={tmp_path / 'topology.yaml'}", cwd=work, stdin=expr
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(json.loads(next(x for x in out.stdout.splitlines() if x.startswith('"'))))
    subscriptions = sorted(n for n, t in mutated["topics"].items() if t.get("subscription"))
    assert "ocr" in subscriptions
    for name in subscriptions:
        function = mutated["topics"][name]["subscription"]["function"]
        row = [t for t in got["titles"] if t.startswith(f"{name} ({function}): ")]
        assert len(row) == 3, (name, got["titles"])
        deployed = f'subscription_id="sluice-{name}--{function}"'
        assert sum(deployed in f for f in got["filters"]) == 3
    assert got["dead_lettered"] == sorted(
        n for n in subscriptions if mutated["topics"][n]["subscription"].get("dead_letter_topic")
    )
    # The global widgets come first, the workers spec's among them.
    assert {"P95 runtime per queue", "Failures per queue", "Tokens consumed per day"} <= set(got["titles"][:7])


@needs_terraform
def test_the_api_may_read_every_dead_letter_hold_and_replay_onto_every_dead_lettered_topic(tmp_path: Path) -> None:
    got = _console(
        tmp_path,
        TOPOLOGY,
        "jsonencode({readers = keys(local.dead_letter_readers), replays = keys(local.replay_publishers),"
        " publishers = keys(local.topic_publishers), http = local.http_functions})",
    )
    topo = yaml.safe_load(TOPOLOGY.read_text())
    (api,) = got["http"]
    dead_letter_topics = {t for t, spec in topo["topics"].items() if spec.get("dead_letter")}
    assert set(got["readers"]) == {f"{api}/{t}" for t in dead_letter_topics}
    dead_lettered = {
        t for t, spec in topo["topics"].items() if (spec.get("subscription") or {}).get("dead_letter_topic")
    }
    # Publishing to a dead-lettered topic: granted once, by whichever grant (its commands, or replays).
    granted = set(got["replays"]) | {p for p in got["publishers"] if p.startswith(f"{api}/")}
    assert {f"{api}/{t}" for t in dead_lettered} <= granted
    assert not set(got["replays"]) & set(got["publishers"]), "one binding, one resource"
    assert got["replays"], "the API replays onto at least one topic it does not otherwise publish to"
