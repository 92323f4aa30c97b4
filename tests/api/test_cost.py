"""Cost before and after a run, through the API: estimates, budgets, actual usage, operators' stats."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from common.api.auth import owner_id
from common.core.cost import DEFAULT_PRICES
from common.core.schema import DocumentExtraction, FieldSpec
from common.ports.extractor import DocumentRef
from tests.api.conftest import ISSUER, Env, Keys, build_env, mint, pdf
from tests.support import ScriptedExtractor, make_pipeline

FLASH = DEFAULT_PRICES["gemini-2.5-flash"]
TOKENS_IN, TOKENS_OUT = 12_000, 3_000  # what the fake model reports per document


class MeteredGemini(ScriptedExtractor):
    """The scripted model, reporting Gemini's model name and token usage like the real adapter."""

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        found = super().extract(doc, fields, prompt=prompt)
        return found.model_copy(
            update={"model": "gemini-2.5-flash", "input_tokens": TOKENS_IN, "output_tokens": TOKENS_OUT}
        )


def real_pdf(name: str, pages: int) -> tuple[str, bytes]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for _ in range(pages):
        doc.new_page(595, 842)
    buf = io.BytesIO()
    doc.save(buf)
    doc.close()
    return name, buf.getvalue()


def gemini_env(tmp: Path, keys: Keys, *, budget: float = 100.0, **api: Any) -> Env:
    settings = {"extractor": "gemini", "monthly_budget": budget}
    pipeline = make_pipeline(tmp, extractor=MeteredGemini(), settings=settings)
    return build_env(tmp, keys, pipeline=pipeline, **api)


def cost_of(tokens_in: int, tokens_out: int) -> float:
    return tokens_in * FLASH.input_per_million / 1e6 + tokens_out * FLASH.output_per_million / 1e6


def test_an_estimate_gives_items_pages_tokens_and_money_before_a_run(tmp_path: Path, keys: Keys) -> None:
    env = gemini_env(tmp_path, keys)
    job = env.alice.job()
    env.alice.upload(job["id"], real_pdf("ok-three.pdf", 3), real_pdf("ok-two.pdf", 2))
    env.drain()
    r = env.alice.post(f"/v1/jobs/{job['id']}/estimate")
    assert r.status_code == 200, r.get_json()
    est = r.get_json()
    assert (est["model"], est["items"], est["pages"]) == ("gemini-2.5-flash", 2, 5)
    assert est["input_tokens"] == 5 * FLASH.input_tokens_per_page + 2 * FLASH.input_tokens_per_document
    assert est["output_tokens"] == 5 * FLASH.output_tokens_per_page
    assert est["cost"] == pytest.approx(cost_of(est["input_tokens"], est["output_tokens"]))
    assert est["currency"] == "USD"
    assert est["budget"] == {"limit": 100.0, "spent": 0.0, "remaining": 100.0, "allowed": True, "currency": "USD"}
    # The page counts were recorded on the files: later estimates read records only.
    assert sorted(f.pages or 0 for f in env.p.files(job["id"])) == [2, 3]
    assert env.bob.post(f"/v1/jobs/{job['id']}/estimate").status_code == 404
    assert env.alice.get(f"/v1/jobs/{job['id']}/runs").get_json()["items"] == [], "an estimate starts nothing"


def test_an_offline_job_is_estimated_at_no_cost(env: Env) -> None:
    job = env.alice.job()
    env.alice.upload(job["id"], real_pdf("ok-a.pdf", 4))
    env.drain()
    est = env.alice.post(f"/v1/jobs/{job['id']}/estimate").get_json()
    assert (est["model"], est["items"], est["pages"], est["cost"], est["input_tokens"]) == ("offline", 1, 4, 0, 0)


def test_a_completed_run_records_its_actual_tokens_and_money(tmp_path: Path, keys: Keys) -> None:
    env = gemini_env(tmp_path, keys)
    job = env.alice.job()
    env.alice.upload(job["id"], pdf("ok-a.pdf"), pdf("ok-b.pdf"), pdf("bad-c.pdf"))
    env.drain()
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    assert run["estimate"]["items"] == 3 and run["usage"] is None
    env.drain()
    done = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert done["status"] == "completed"
    # Two documents were read by the model; the unreadable one reported no usage.
    assert done["usage"]["input_tokens"] == 2 * TOKENS_IN and done["usage"]["output_tokens"] == 2 * TOKENS_OUT
    assert done["usage"]["cost"] == pytest.approx(2 * cost_of(TOKENS_IN, TOKENS_OUT))
    stored = env.p.run(run["id"])
    assert stored.usage is not None and stored.usage.cost == pytest.approx(done["usage"]["cost"])
    stats = env.alice.get("/v1/stats").get_json()
    assert stats["cost"] == pytest.approx(done["usage"]["cost"])
    assert stats["month"]["cost"] == pytest.approx(done["usage"]["cost"]) and stats["month"]["runs"] == 1
    assert stats["month"]["remaining"] == pytest.approx(100.0 - done["usage"]["cost"])
    assert env.bob.get("/v1/stats").get_json()["cost"] == 0


def test_a_run_over_the_monthly_budget_is_refused_saying_how_much_is_left(tmp_path: Path, keys: Keys) -> None:
    env = gemini_env(tmp_path, keys, budget=0.03)
    job = env.alice.job()
    env.alice.upload(job["id"], pdf("ok-a.pdf"))
    env.drain()
    first = env.alice.post(f"/v1/jobs/{job['id']}/runs", {})
    assert first.status_code == 202, first.get_json()
    env.drain()
    spent = env.p.run(first.get_json()["id"]).usage
    assert spent is not None and spent.cost > 0
    # 40 more documents are expected to cost more than what is left of 0.03 USD.
    env.alice.upload(job["id"], *[pdf(f"ok-{i}.pdf") for i in range(40)])
    env.drain()
    estimate = env.alice.post(f"/v1/jobs/{job['id']}/estimate").get_json()
    assert 0.03 - spent.cost < estimate["cost"] < 0.03, "this run alone would fit; not after the first"
    assert estimate["budget"]["allowed"] is False
    r = env.alice.post(f"/v1/jobs/{job['id']}/runs", {})
    assert r.status_code == 402, r.get_json()
    error = r.get_json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["details"]["remaining"] == pytest.approx(0.03 - spent.cost)
    assert error["details"]["spent"] == pytest.approx(spent.cost)
    assert error["details"]["estimate"] == pytest.approx(estimate["cost"])
    assert "left" in error["message"] and "hint" in error["details"]
    runs = env.alice.get(f"/v1/jobs/{job['id']}/runs").get_json()["items"]
    assert len(runs) == 1, "the refused run was not recorded"


def test_an_open_run_reserves_its_estimate_against_the_budget(tmp_path: Path, keys: Keys) -> None:
    env = gemini_env(tmp_path, keys, budget=0.012)
    one, two = env.alice.job("one"), env.alice.job("two")
    for job in (one, two):
        env.alice.upload(job["id"], *[pdf(f"ok-{i}.pdf") for i in range(12)])
    env.drain()
    estimate = env.alice.post(f"/v1/jobs/{one['id']}/estimate").get_json()["cost"]
    assert 0.012 / 2 < estimate < 0.012, "each run fits the budget alone, not both"
    assert env.alice.post(f"/v1/jobs/{one['id']}/runs", {}).status_code == 202  # not drained: still pending
    r = env.alice.post(f"/v1/jobs/{two['id']}/runs", {})
    assert r.status_code == 402
    assert r.get_json()["error"]["details"]["spent"] == pytest.approx(estimate)


def test_an_operator_raises_a_users_budget_and_the_run_is_accepted(tmp_path: Path, keys: Keys) -> None:
    env = gemini_env(tmp_path, keys, budget=0.0001)
    job = env.alice.job()
    env.alice.upload(job["id"], pdf("ok-a.pdf"))
    env.drain()
    assert env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).status_code == 402
    alice = owner_id(ISSUER, "alice")
    assert (
        env.alice.client.put(
            f"/v1/admin/budgets/{alice}", json={"monthly_limit": 1000}, headers=env.alice._h(None)
        ).status_code
        == 403
    ), "users cannot set their own budget"
    operator = env.app.test_client()
    token = mint(env.keys, "ops", roles=["sluice.operator"])
    r = operator.put(
        f"/v1/admin/budgets/{alice}", json={"monthly_limit": 1.0}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200 and r.get_json()["monthly_limit"] == 1.0
    assert env.alice.get("/v1/stats").get_json()["month"]["budget"] == 1.0
    assert env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).status_code == 202
    # No budget at all for this user (null): nothing is refused.
    operator.put(
        f"/v1/admin/budgets/{alice}", json={"monthly_limit": None}, headers={"Authorization": f"Bearer {token}"}
    )
    assert env.alice.get("/v1/stats").get_json()["month"]["budget"] is None


def test_global_stats_are_for_operators_only_and_count_everyone(tmp_path: Path, keys: Keys) -> None:
    env = gemini_env(tmp_path, keys, operators=[owner_id(ISSUER, "carol")])
    for user in (env.alice, env.bob):
        job = user.job()
        user.upload(job["id"], pdf(f"ok-{user.sub}.pdf"))
        env.drain()
        user.post(f"/v1/jobs/{job['id']}/runs", {})
        env.drain()
    r = env.alice.get("/v1/admin/stats")
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "operator_only"
    assert env.alice.get("/v1/admin/dead-letters").status_code == 403
    carol = env.user("carol")  # an operator by owner id (SLUICE_API_OPERATORS)
    stats = carol.get("/v1/admin/stats").get_json()
    assert stats["jobs"] == 2 and stats["runs"]["completed"] == 2 and stats["tasks"]["completed"] == 2
    assert stats["input_tokens"] == 2 * TOKENS_IN
    assert stats["cost"] == pytest.approx(2 * cost_of(TOKENS_IN, TOKENS_OUT))
    assert stats["month"]["budget"] is None
    spenders = {s["owner"] for s in stats["top_spenders"]}
    assert spenders == {owner_id(ISSUER, "alice"), owner_id(ISSUER, "bob")}
    assert {q["source"] for q in stats["queues"]} == {"bus"}
    assert carol.get("/v1/stats").get_json()["jobs"] == 0, "an operator's own stats stay their own"


def test_twenty_starts_racing_at_the_edge_of_the_budget_never_spend_past_it(tmp_path: Path, keys: Keys) -> None:
    from tests.api.served import at_once, serve

    settings = {"extractor": "gemini", "monthly_budget": 100.0}
    pipeline = make_pipeline(tmp_path, extractor=MeteredGemini(), settings=settings, durable=True)
    env = build_env(tmp_path, keys, pipeline=pipeline)
    jobs = [env.alice.job(f"job-{i}") for i in range(20)]
    for job in jobs:
        env.alice.upload(job["id"], pdf(f"ok-{job['name']}.pdf"))
    env.drain()
    each = env.alice.post(f"/v1/jobs/{jobs[0]['id']}/estimate").get_json()["cost"]
    assert each > 0
    # Room for exactly five runs' estimates, not six (alice's own budget, as an operator sets it).
    from common.service import cost

    cost.set_budget(env.p.deps, owner_id(ISSUER, "alice"), each * 5.5)
    with serve(env.app) as server:
        answers = at_once(
            20,
            lambda i: server.request("POST", f"/v1/jobs/{jobs[i]['id']}/runs", token=env.alice.token, json_body={}),
        )
    statuses = sorted(a.status for a in answers)
    assert env.p.deps.store.count("runs") == 5, statuses
    assert statuses == [202] * 5 + [402] * 15, [(a.status, a.body) for a in answers if a.status not in (202, 402)]
    for refused in (a for a in answers if a.status == 402):
        assert refused.body["error"]["code"] == "budget_exceeded"
