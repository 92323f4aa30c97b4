from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Pipeline, make_pipeline


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path)
