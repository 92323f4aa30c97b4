"""Does terraform/ handle everything topology.yaml declares? (read with python-hcl2)

The Terraform decodes the topology itself (``yamldecode``) and builds each kind
of resource with ``for_each`` over a projection of it (``locals.tf``). So
parity means: every top-level key of the topology is read; every field an item
declares is carried by its projection and used by a resource; each resource
iterates over the right projection; each function has an access entry whose
published kinds match ``common/service/registry.PUBLISHES``; and no topology
name is hard-coded. :func:`check` returns the problems found (none: parity).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

TERRAFORM_DIR = Path(__file__).resolve().parents[2] / "terraform"


def unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals' quotes: strip them (recursively)."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if not k.startswith("__")}
    return value


@dataclass
class Terraform:
    locals: dict[str, Any]
    resources: dict[tuple[str, str], dict[str, Any]]
    data: dict[tuple[str, str], dict[str, Any]]
    text: str

    def local_text(self, name: str) -> str:
        value = self.locals.get(name)
        return value if isinstance(value, str) else json.dumps(value)

    def for_each(self, kind: str, name: str, *, data: bool = False) -> str | None:
        body = (self.data if data else self.resources).get((kind, name))
        return None if body is None else body.get("for_each")


def load(directory: Path = TERRAFORM_DIR) -> Terraform:
    tf = Terraform(locals={}, resources={}, data={}, text="")
    texts = []
    for path in sorted(directory.glob("*.tf")):
        text = path.read_text()
        texts.append(text)
        parsed = hcl2.loads(text)
        for block in parsed.get("locals", []):
            tf.locals.update({k: v for k, v in block.items() if not k.startswith("__")})
        for section, target in (("resource", tf.resources), ("data", tf.data)):
            for block in parsed.get(section, []):
                for kind, named in block.items():
                    for name, body in named.items():
                        target[(unquote(kind), unquote(name))] = body
    tf.text = "\n".join(texts)
    return tf


@dataclass(frozen=True)
class Entity:
    """A part of the topology: its projection local and the resources built from it."""

    key: str  # top-level topology key
    local: str  # the projection in locals.tf
    resources: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...] = ()


ENTITIES = (
    Entity(
        "functions",
        "functions",
        (
            ("google_cloudfunctions2_function", "function"),
            ("google_service_account", "function"),
            ("google_storage_bucket_object", "bundle"),
            ("google_project_iam_member", "datastore"),
        ),
        data=(("archive_file", "bundle"),),
    ),
    Entity("topics", "topics", (("google_pubsub_topic", "topic"),)),
    Entity("schedules", "schedules", (("google_cloud_scheduler_job", "schedule"),)),
    Entity("buckets", "buckets", (("google_storage_bucket", "bucket"),)),
)
# Nested and derived parts: (projection local, resources that must iterate over it).
DERIVED = {
    "subscriptions": (("google_pubsub_subscription", "push"),),
    "dead_letter_topics": (("google_pubsub_subscription", "dead_letter"),),
    "dead_letter_targets": (("google_pubsub_topic_iam_member", "dead_letter_publisher"),),
    "finalize_buckets": (("google_storage_notification", "finalize"),),
    "pushed_functions": (("google_cloud_run_v2_service_iam_member", "push_invoker"),),
    "topic_publishers": (("google_pubsub_topic_iam_member", "function_publisher"),),
    "bucket_grants": (("google_storage_bucket_iam_member", "function"),),
    "secret_grants": (("google_secret_manager_secret_iam_member", "accessor"),),
    # Operators: one alert set per subscription (monitoring.tf).
    "dead_lettered_subscriptions": (("google_monitoring_alert_policy", "dead_letters"),),
}
# Alert policies every subscription gets (for_each = local.subscriptions).
SUBSCRIPTION_ALERTS = (
    ("google_monitoring_alert_policy", "oldest_unacked"),
    ("google_monitoring_alert_policy", "queue_depth"),
    ("google_monitoring_alert_policy", "stage_error_ratio"),
)
# Alert policies over the whole deployment.
GLOBAL_ALERTS = (
    ("google_monitoring_alert_policy", "run_over_timeout"),
    ("google_monitoring_alert_policy", "model_rate_limited"),
    ("google_monitoring_alert_policy", "function_crashes"),
)
DASHBOARD = ("google_monitoring_dashboard", "operations")
SUBSCRIPTION_RESOURCE = ("google_pubsub_subscription", "push")


def _loop_vars(tf: Terraform, key: str) -> dict[str, str]:
    """Locals that iterate over ``local.topology.<key>``, with their loop variable."""
    pattern = re.compile(rf"for \w+, (\w+) in (?:try\()?local\.topology\.{key}\b")
    found = {}
    for name in tf.locals:
        m = pattern.search(tf.local_text(name))
        if m:
            found[name] = m.group(1)
    return found


def _used_paths(tf: Terraform, key: str) -> set[str]:
    """Attribute paths of the topology's items (``max_instances``, ``subscription.function``) the locals read."""
    paths: set[str] = set()
    for name, var in _loop_vars(tf, key).items():
        paths.update(re.findall(rf"\b{var}\.([a-z_]+(?:\.[a-z_]+)*)", tf.local_text(name)))
    return paths


def _resource_text(tf: Terraform, refs: Iterable[tuple[str, str]]) -> str:
    return " ".join(json.dumps(tf.resources.get(r, {})) for r in refs)


def _item_fields(items: Mapping[str, Any]) -> set[str]:
    return {f for item in items.values() if isinstance(item, Mapping) for f in item}


def check(topology: Mapping[str, Any], tf: Terraform, publishes: Mapping[str, frozenset[str]]) -> list[str]:  # noqa: C901 (split pending)
    problems: list[str] = []
    read_keys = set(re.findall(r"local\.topology\.(\w+)", " ".join(tf.local_text(n) for n in tf.locals)))
    for key in topology:
        if key not in read_keys:
            problems.append(f"topology key {key!r} is not read by the Terraform (locals.tf)")

    other_locals = {n: tf.local_text(n) for n in tf.locals}
    for entity in ENTITIES:
        items = topology.get(entity.key) or {}
        projection = tf.locals.get(entity.local)
        if projection is None:
            problems.append(f"locals.tf has no projection local.{entity.local} of topology {entity.key}")
            continue
        if entity.local not in _loop_vars(tf, entity.key):
            problems.append(f"local.{entity.local} does not iterate over local.topology.{entity.key}")
        for ref in entity.resources:
            if tf.for_each(*ref) != f"${{local.{entity.local}}}":
                problems.append(f"{ref[0]}.{ref[1]} must be for_each = local.{entity.local} (one per topology item)")
        for ref in entity.data:
            if tf.for_each(*ref, data=True) != f"${{local.{entity.local}}}":
                problems.append(f"data.{ref[0]}.{ref[1]} must be for_each = local.{entity.local}")
        used = _used_paths(tf, entity.key)
        resources_text = _resource_text(tf, entity.resources)
        derived_text = " ".join(t for n, t in other_locals.items() if n != entity.local)
        for field in sorted(_item_fields(items)):
            if field not in used:
                problems.append(f"{entity.key}.*.{field} is not carried by the Terraform's locals (ignored)")
            elif f"each.value.{field}" not in resources_text and not re.search(rf"\.{field}\b", derived_text):
                problems.append(f"{entity.key}.*.{field} is projected but no resource uses it")

    # Subscriptions: nested in topics; each field must reach the push subscription.
    topics = topology.get("topics") or {}
    subs = {n: t["subscription"] for n, t in topics.items() if isinstance(t, Mapping) and t.get("subscription")}
    used = _used_paths(tf, "topics")
    push_text = _resource_text(tf, [SUBSCRIPTION_RESOURCE])
    for field in sorted(_item_fields(subs)):
        if f"subscription.{field}" not in used:
            problems.append(f"topics.*.subscription.{field} is not carried by local.subscriptions (ignored)")
        elif f"each.value.{field}" not in push_text:
            problems.append(f"topics.*.subscription.{field} is not used by the push subscription")
    for local, refs in DERIVED.items():
        if local not in tf.locals:
            problems.append(f"locals has no local.{local}")
        for ref in refs:
            if tf.for_each(*ref) != f"${{local.{local}}}":
                problems.append(f"{ref[0]}.{ref[1]} must be for_each = local.{local}")

    problems += _check_monitoring(tf)
    problems += _check_access(topology, tf, publishes)
    problems += _check_literals(topology, tf)
    return problems


def _check_monitoring(tf: Terraform) -> list[str]:
    """A dashboard row and an alert set per subscription, all derived from local.subscriptions."""
    problems: list[str] = []
    for ref in SUBSCRIPTION_ALERTS:
        if tf.for_each(*ref) != "${local.subscriptions}":
            problems.append(f"{ref[0]}.{ref[1]} must be for_each = local.subscriptions (one per subscription)")
    if not re.search(r"for \w+, \w+ in local\.subscriptions\b", tf.local_text("dead_lettered_subscriptions")):
        problems.append("local.dead_lettered_subscriptions does not iterate over local.subscriptions")
    for ref in (*SUBSCRIPTION_ALERTS, *GLOBAL_ALERTS, ("google_monitoring_alert_policy", "dead_letters")):
        body = tf.resources.get(ref)
        if body is None:
            problems.append(f"terraform has no {ref[0]}.{ref[1]}")
        elif body.get("notification_channels") != "${var.notification_channels}":
            problems.append(f"{ref[0]}.{ref[1]} must notify var.notification_channels")
    dashboard = tf.resources.get(DASHBOARD)
    if dashboard is None or "local.dashboard_tiles" not in json.dumps(dashboard.get("dashboard_json")):
        problems.append("google_monitoring_dashboard.operations must lay out local.dashboard_tiles")
    if not re.search(r"in sort\(keys\(local\.subscriptions\)\)", tf.local_text("dashboard_tiles")):
        problems.append("local.dashboard_tiles has no row per subscription (in sort(keys(local.subscriptions)))")
    return problems


def _check_access(topology: Mapping[str, Any], tf: Terraform, publishes: Mapping[str, frozenset[str]]) -> list[str]:  # noqa: C901 (split pending)
    problems: list[str] = []
    access = unquote(tf.locals.get("function_access", {}))
    functions = topology.get("functions") or {}
    topics = topology.get("topics") or {}
    buckets = topology.get("buckets") or {}
    secrets = unquote(tf.locals.get("secrets", {}))
    carried = {k for t in topics.values() if isinstance(t, Mapping) for k in t.get("kinds") or []}
    for fn in functions:
        if fn not in access:
            problems.append(f"function {fn!r} has no service-account mapping in terraform/access.tf (function_access)")
    for fn in access:
        if fn not in functions:
            problems.append(f"terraform/access.tf maps function {fn!r}, which topology.yaml does not define")
    for topic, t in topics.items():
        sub = t.get("subscription") if isinstance(t, Mapping) else None
        if sub and sub.get("function") not in access:
            problems.append(f"topic {topic!r} pushes to {sub.get('function')!r}, which has no service-account mapping")
    for fn, entry in access.items():
        sent = set(entry.get("publishes", []))
        for kind in sorted(sent - carried):
            problems.append(f"access.tf: {fn} publishes {kind!r}, which no topology topic carries")
        if fn in publishes and sent != set(publishes[fn]):
            problems.append(
                f"access.tf: {fn} publishes {sorted(sent)}, registry.PUBLISHES says {sorted(publishes[fn])}"
            )
        if (functions.get(fn) or {}).get("trigger") == "http" and not set(publishes.get("commands", ())) <= sent:
            problems.append(
                f"access.tf: the HTTP function {fn} must publish the commands {sorted(publishes['commands'])}"
            )
        for bucket in entry.get("buckets", {}):
            if bucket not in buckets:
                problems.append(f"access.tf: {fn} is granted bucket {bucket!r}, which topology.yaml does not define")
        for secret in entry.get("secrets", []):
            if secret not in secrets:
                problems.append(f"access.tf: {fn} reads secret {secret!r}, which local.secrets does not define")
    for fn in publishes:
        if fn != "commands" and fn not in functions:
            problems.append(f"registry.PUBLISHES names {fn!r}, which topology.yaml does not define")
    return problems


def _check_literals(topology: Mapping[str, Any], tf: Terraform) -> list[str]:
    """Topology names come from the decoded file; a quoted copy of one would drift."""
    names = {n for key in ("functions", "topics", "schedules", "buckets") for n in topology.get(key) or {}}
    # Block labels (resource "type" "name") are Terraform's own names, not topology references.
    body = re.sub(r'(?m)^\s*(?:resource|data|variable|output)\s+"[^\n]*$', "", tf.text)
    # Firestore collection names (firestore_composite_indexes) are the store's, not the topology's.
    body = re.sub(r'(?m)^\s*"[^"\n]+"\s*=\s*\{\s*collection\s*=[^\n]*$', "", body)
    literals = set(re.findall(r'"([A-Za-z0-9_.-]+)"', body))
    return [f"topology name {n!r} is hard-coded in the Terraform" for n in sorted(names & literals)]
