"""The text-model port's two adapters, each through its real client code against a local fake server.

Gemini: google-genai against tests/fakes/vertex.py. OpenAI-compatible: the
stdlib HTTP client against tests/fakes/openai_chat.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.oauth2.credentials import Credentials

from common.adapters.gcp.gemini_text import GeminiTextModel
from common.adapters.local.clock import ManualClock
from common.adapters.openai_chat import OpenAIChatModel
from common.core.errors import ConfigError, ErrorKind, MalformedModelOutput, PermanentError, RetryableError
from common.ports.textmodel import TextModel
from tests.fakes import openai_chat, vertex
from tests.fakes.openai_chat import FakeOpenAI, chat_answer, too_many_requests
from tests.support import make_pipeline

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}, "score": {"type": "number"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}


class Limiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.penalties: list[float | None] = []

    def acquire(self, cost: float = 1.0) -> object:
        self.acquired += 1
        return None

    def penalise(self, *, duration_s: float | None = None) -> None:
        self.penalties.append(duration_s)


@pytest.fixture
def fake_vertex() -> Iterator[vertex.FakeVertex]:
    with vertex.FakeVertex() as fake:
        yield fake


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def gemini(fake: vertex.FakeVertex, limiter: Limiter | None = None) -> GeminiTextModel:
    return GeminiTextModel(
        project="p",
        location="europe-west1",
        model="gemini-2.5-flash",
        clock=ManualClock(),
        limiter=limiter,
        credentials=Credentials(token="test"),  # type: ignore[no-untyped-call]
        http_base_url=fake.base_url,
    )


def openai(fake: FakeOpenAI, limiter: Limiter | None = None, api_key: str | None = None) -> OpenAIChatModel:
    return OpenAIChatModel(
        base_url=fake.base_url, model="local-model", clock=ManualClock(), limiter=limiter, api_key=api_key
    )


# -- Gemini on Vertex AI ------------------------------------------------------------------


def test_gemini_sends_the_schema_as_structured_output_and_returns_the_validated_value(
    fake_vertex: vertex.FakeVertex,
) -> None:
    fake_vertex.push(vertex.answer({"label": "spam", "score": 0.9}, input_tokens=120, output_tokens=12))
    limiter = Limiter()
    model: TextModel = gemini(fake_vertex, limiter)
    out = model.generate("Is this spam? BUY NOW", SCHEMA, system="You label mail.")
    assert out.value == {"label": "spam", "score": 0.9}
    assert (out.usage.input_tokens, out.usage.output_tokens) == (120, 12)
    sent = fake_vertex.requests[0]
    assert sent.model == "gemini-2.5-flash"
    assert sent.user_text == "Is this spam? BUY NOW"
    assert sent.system_instruction == "You label mail."
    config = sent.generation_config
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == SCHEMA
    assert limiter.acquired == 1


def test_gemini_answer_breaking_the_schema_is_malformed_in_strict_mode_only(fake_vertex: vertex.FakeVertex) -> None:
    bad = {"label": "maybe", "score": 1}
    fake_vertex.push(vertex.answer(bad), vertex.answer(bad))
    model = gemini(fake_vertex)
    with pytest.raises(MalformedModelOutput, match="maybe"):
        model.generate("x", SCHEMA)
    assert model.generate("x", SCHEMA, strict=False).value == bad


def test_gemini_429_is_rate_limited_with_the_servers_delay_and_penalises_the_limiter(
    fake_vertex: vertex.FakeVertex,
) -> None:
    fake_vertex.push(vertex.rate_limited(retry_delay="12s"))
    limiter = Limiter()
    with pytest.raises(RetryableError) as err:
        gemini(fake_vertex, limiter).generate("x", SCHEMA)
    assert err.value.kind is ErrorKind.RATE_LIMITED
    assert err.value.retry_after == 12.0
    assert limiter.penalties == [12.0]


def test_gemini_text_that_is_not_json_is_malformed(fake_vertex: vertex.FakeVertex) -> None:
    fake_vertex.push(vertex.answer("Sure! Here is the JSON: {"))
    with pytest.raises(MalformedModelOutput) as err:
        gemini(fake_vertex).generate("x", SCHEMA)
    assert err.value.raw_output.startswith("Sure!")


# -- any OpenAI-compatible endpoint -----------------------------------------------------------


def test_openai_sends_a_json_schema_response_format_and_returns_the_validated_value(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(chat_answer({"label": "ham", "score": 0.1}, prompt_tokens=50, completion_tokens=9))
    model: TextModel = openai(fake_openai, api_key="sk-local")
    out = model.generate("Hello Bob", SCHEMA, system="You label mail.", temperature=0.2)
    assert out.value == {"label": "ham", "score": 0.1}
    assert (out.usage.input_tokens, out.usage.output_tokens) == (50, 9)
    assert out.model_version == "fake-model-001"
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-local"
    assert sent.body["model"] == "local-model"
    assert sent.body["temperature"] == 0.2
    assert sent.body["response_format"]["type"] == "json_schema"
    assert sent.schema == SCHEMA
    assert (sent.system_text, sent.user_text) == ("You label mail.", "Hello Bob")


def test_openai_429_is_rate_limited_with_retry_after_and_penalises_the_limiter(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(too_many_requests(retry_after="7"))
    limiter = Limiter()
    with pytest.raises(RetryableError) as err:
        openai(fake_openai, limiter).generate("x", SCHEMA)
    assert err.value.kind is ErrorKind.RATE_LIMITED
    assert err.value.retry_after == 7.0
    assert limiter.penalties == [7.0]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, RetryableError), (503, RetryableError), (401, PermanentError), (404, PermanentError), (400, PermanentError)],
)
def test_openai_http_failures_are_classified(fake_openai: FakeOpenAI, status: int, expected: type[Exception]) -> None:
    fake_openai.push(openai_chat.error(status, "nope"))
    with pytest.raises(expected) as err:
        openai(fake_openai).generate("x", SCHEMA)
    assert "nope" in str(err.value)


def test_openai_answer_cut_off_or_breaking_the_schema_is_malformed(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(chat_answer('{"label": "sp', finish="length"), chat_answer({"label": "spam"}))
    model = openai(fake_openai)
    with pytest.raises(MalformedModelOutput, match="cut off"):
        model.generate("x", SCHEMA)
    with pytest.raises(MalformedModelOutput, match="score: missing"):
        model.generate("x", SCHEMA)


def test_openai_unreachable_server_is_a_retryable_network_error() -> None:
    with FakeOpenAI() as fake:
        url = fake.base_url
    model = OpenAIChatModel(base_url=url, model="m", clock=ManualClock(), timeout_s=2)
    with pytest.raises(RetryableError) as err:
        model.generate("x", SCHEMA)
    assert err.value.kind is ErrorKind.NETWORK


# -- the composition root ------------------------------------------------------------------


def test_with_no_text_model_configured_the_composition_root_says_how_to_set_one(tmp_path: Path) -> None:
    from common.bootstrap import text_model

    deps = make_pipeline(tmp_path).deps
    with pytest.raises(ConfigError) as err:
        text_model(deps.settings, deps)
    assert err.value.message == "no text model is configured"
    assert "SLUICE_TEXT_MODEL" in err.value.hint


def test_the_configured_openai_endpoint_is_reached_through_the_shared_rate_limiter(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    from common.bootstrap import text_model

    deps = make_pipeline(tmp_path).deps
    settings = deps.settings.model_copy(
        update={"text_model": "openai", "openai_base_url": fake_openai.base_url, "openai_model": "llama"}
    )
    fake_openai.push(chat_answer({"label": "ham", "score": 0}))
    model = text_model(settings, deps, model="qwen")
    assert model.generate("x", SCHEMA).value == {"label": "ham", "score": 0}
    assert fake_openai.requests[0].body["model"] == "qwen"
    assert type(model._limiter).__name__ == "LeasedRateLimiter"  # type: ignore[attr-defined]
