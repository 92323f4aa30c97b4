"""The OpenAPI document, stats, dead letters, automations, integrations and imports."""

from __future__ import annotations

import re

import pytest

from common.api.routes import ROUTES
from common.core.breaker import BreakerConfig
from common.core.errors import ErrorKind, RetryableError
from common.core.messages import ExtractTask
from common.obs import metrics
from common.service.breaker import Breakers
from tests.api.conftest import Env, pdf


def test_openapi_document_covers_every_route_from_the_same_table(env: Env) -> None:
    r = env.app.test_client().get("/v1/openapi.json")  # no token needed
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["openapi"] == "3.1.0"
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["operationId"] == route.operation_id
        for name in re.findall(r"{([^}]+)}", route.path):
            assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"])
        if route.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    text = r.get_data(as_text=True)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in doc["components"]["schemas"], ref
    # JobCreate is a union over the job kinds; each variant refuses unknown properties.
    assert doc["components"]["schemas"]["JobCreate"]["discriminator"]["propertyName"] == "kind"
    job_create = doc["components"]["schemas"]["JobCreate_Extract"]
    assert job_create["additionalProperties"] is False
    assert {"name"} <= set(job_create["required"])
    # Every Flask route of the app is in the document (nothing undocumented).
    rules = {
        (rule.rule, m)
        for rule in env.app.url_map.iter_rules()
        for m in rule.methods or ()
        if m in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    }
    documented = {(rt.flask_rule(), rt.method) for rt in ROUTES}
    # The console's page and files are not API routes.
    api_rules = {r for r in rules if not r[0].startswith(("/static", "/console/")) and r[0] != "/"}
    assert api_rules == documented


def test_the_static_openapi_copy_matches_the_generated_document(monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    from pathlib import Path

    from common import kinds
    from common.api.openapi import build

    # The static copy describes the built-in kinds; other tests register test-only kinds in this process.
    monkeypatch.setattr(kinds, "names", lambda: sorted(kinds.BUILTIN))

    static = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
    assert json.loads(static.read_text()) == json.loads(json.dumps(build(ROUTES))), (
        "docs/openapi.json is stale: regenerate it with `python -m common.api.openapi > docs/openapi.json`"
    )


def test_stats_count_the_users_records_and_show_the_queues(env: Env) -> None:
    job = env.alice.job()
    env.alice.upload(job["id"], pdf("ok-a.pdf"), pdf("bad-b.pdf"))
    env.drain()
    env.alice.post(f"/v1/jobs/{job['id']}/runs", {})
    env.drain()
    env.bob.job()
    stats = env.alice.get("/v1/stats").get_json()
    assert stats["jobs"] == 1
    assert stats["runs"]["completed"] == 1 and stats["runs"]["running"] == 0
    assert stats["tasks"]["completed"] == 1 and stats["tasks"]["failed"] == 1
    assert stats["pages"] == 1
    subs = {q["subscription"]: q for q in stats["queues"]}
    assert subs["extract--extract"]["depth"] == 0
    assert subs["extract--extract"]["oldest_age_s"] is None
    assert env.bob.get("/v1/stats").get_json()["tasks"]["completed"] == 0


def test_dead_letters_are_listed_per_user_and_can_be_replayed(env: Env) -> None:
    job = env.alice.job()
    env.p.sender.send(ExtractTask(task_id="no-such-task", run_id="run_x", job_id=job["id"]))
    env.drain()
    items = env.alice.get("/v1/dead-letters").get_json()["items"]
    assert len(items) == 1
    dl = items[0]
    assert dl["kind"] == "task.extract" and dl["task_id"] == "no-such-task" and "does not exist" in dl["last_error"]
    assert env.bob.get("/v1/dead-letters").get_json()["items"] == []
    assert env.bob.post(f"/v1/dead-letters/{dl['seq']}/replay").status_code == 404
    assert env.alice.post("/v1/dead-letters/999999/replay").status_code == 404
    r = env.alice.post(f"/v1/dead-letters/{dl['seq']}/replay")
    assert r.status_code == 202 and r.get_json()["seq"] == dl["seq"]
    assert env.alice.get("/v1/dead-letters").get_json()["items"][0]["replayed_at"] is not None
    env.drain()
    assert len(env.alice.get("/v1/dead-letters").get_json()["items"]) == 2, "replayed, and dead again"


def test_automations_crud(env: Env) -> None:
    job = env.alice.job()
    body = {"name": "invoices inbox", "account": "Me@Example.com", "job_id": job["id"], "export": {"format": "csv"}}
    r = env.alice.post("/v1/automations", body)
    assert r.status_code == 201, r.get_json()
    auto = r.get_json()
    assert auto["account"] == "me@example.com" and auto["enabled"] is True and auto["query"] == "has:attachment"
    assert env.alice.get(f"/v1/automations/{auto['id']}").get_json() == auto
    r = env.alice.patch(f"/v1/automations/{auto['id']}", {"enabled": False, "query": "from:billing"})
    assert r.status_code == 200 and r.get_json()["enabled"] is False and r.get_json()["query"] == "from:billing"
    assert [a["id"] for a in env.alice.get("/v1/automations").get_json()["items"]] == [auto["id"]]
    assert env.bob.get(f"/v1/automations/{auto['id']}").status_code == 404
    assert env.bob.patch(f"/v1/automations/{auto['id']}", {"enabled": True}).status_code == 404
    assert env.bob.delete(f"/v1/automations/{auto['id']}").status_code == 404
    busy = env.alice.delete(f"/v1/jobs/{job['id']}")
    assert busy.status_code == 409, "a job an automation uses is not deleted under it"
    assert env.alice.delete(f"/v1/automations/{auto['id']}").status_code == 204
    assert env.alice.get(f"/v1/automations/{auto['id']}").status_code == 404
    assert env.alice.post("/v1/automations", {**body, "job_id": "job_nope"}).status_code == 404
    assert env.alice.post("/v1/automations", {"name": "x"}).status_code == 422


def test_integrations_status_and_disconnect(env: Env) -> None:
    assert env.alice.get("/v1/integrations").get_json() == {"items": []}
    r = env.alice.delete("/v1/integrations/me@example.com")
    assert r.status_code == 404


def test_imports_go_to_the_import_services(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.post(f"/v1/jobs/{job['id']}/imports/drive", {"item_ids": ["folder-1"]})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "reconnect_required", "no Google account"
    r = env.alice.post(f"/v1/jobs/{job['id']}/imports/drive", {"item_ids": []})
    assert r.status_code == 422
    r = env.alice.post(
        f"/v1/jobs/{job['id']}/imports/gmail",
        {"account": "me@example.com", "items": [{"message_id": "m1"}, {"message_id": "m2", "attachment_id": "a"}]},
    )
    assert r.status_code == 202, r.get_json()
    op = r.get_json()
    assert op["kind"] == "import" and op["total"] == 2
    assert env.alice.get(f"/v1/operations/{op['id']}").status_code == 200
    assert env.bob.get(f"/v1/operations/{op['id']}").status_code == 404


def test_stats_and_metrics_show_each_dependencys_circuit_shared_through_the_store(env: Env) -> None:
    # Another instance (its own breaker objects, the same store) saw Vertex fail.
    other = Breakers(env.p.deps.store, env.p.clock, BreakerConfig(failure_threshold=2, cooldown_s=30))
    for _ in range(2):
        other.get("vertex").record_failure(RetryableError("503", kind=ErrorKind.UNAVAILABLE, code="model_unavailable"))
    metrics.configure("memory")
    try:
        circuits = {c["dependency"]: c for c in env.alice.get("/v1/stats").get_json()["circuits"]}
        text = metrics.prometheus_text()
    finally:
        metrics.reset()
    assert set(circuits) == {"vertex", "drive", "gmail", "oauth_token"}
    vertex = circuits["vertex"]
    assert (vertex["state"], vertex["opens"], vertex["last_error"]) == ("open", 1, "model_unavailable")
    assert vertex["open_until"] is not None and vertex["opened_at"] is not None
    assert circuits["drive"]["state"] == "closed" and circuits["drive"]["open_until"] is None
    assert 'sluice_circuit_state{dependency="vertex"} 2' in text.splitlines()
    assert 'sluice_circuit_state{dependency="gmail"} 0' in text.splitlines()
