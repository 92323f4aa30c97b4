"""Configuration: one typed object, explicit backend, no silent fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from common.bootstrap import bootstrap
from common.config import Settings
from common.core.errors import ConfigError


def test_there_is_no_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_BACKEND", raising=False)
    with pytest.raises(ValidationError, match="backend"):
        Settings()


def test_an_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_BACKEND", "aws")
    with pytest.raises(ValidationError):
        Settings()


def test_settings_come_from_sluice_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLUICE_BACKEND", "local")
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SLUICE_MODEL_RPM", "120")
    s = Settings()
    assert (s.backend, s.data_dir, s.model_rpm) == ("local", tmp_path, 120)


def test_the_gcp_backend_does_not_fall_back_to_local(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gcp backend"):
        bootstrap(Settings(backend="gcp", data_dir=tmp_path))
    assert not (tmp_path / "state.db").exists()


def test_cloud_topic_names_are_prefixed_and_local_ones_are_not() -> None:
    assert Settings(backend="gcp", prefix="acme-").topic_name("extract") == "acme-extract"
    assert Settings(backend="local").topic_name("extract") == "extract"


def test_the_gemini_extractor_needs_a_project(tmp_path: Path) -> None:
    deps = bootstrap(Settings(backend="local", data_dir=tmp_path, extractor="gemini"))
    with pytest.raises(ConfigError, match="SLUICE_PROJECT"):
        deps.extractor("gemini")


def test_the_gemini_extractor_is_built_lazily_from_settings(tmp_path: Path) -> None:
    deps = bootstrap(Settings(backend="local", data_dir=tmp_path, project="p1", gemini_model="gemini-x"))
    extractor = deps.extractor("gemini")
    assert extractor.name == "gemini"
    assert deps.extractor("gemini") is extractor, "built once, reused"
