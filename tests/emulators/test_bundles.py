"""Each function's staged bundle installs into a clean virtualenv and imports.

The bundles share one pinned requirements list, so one clean virtualenv
(nothing from this repository or its environment) installs it once; each
bundle's ``main`` is then imported there from the bundle's own directory, so
a missing file or dependency in a bundle fails here instead of at deploy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bundle  # scripts/bundle.py, the code `make bundle` runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_every_bundle_installs_into_a_clean_venv_and_imports_main(tmp_path: Path) -> None:
    staged = bundle.stage_all(tmp_path / "build")
    assert set(staged) >= {"extract", "export", "import_upload", "cleanup"}
    requirements = {(path / "requirements.txt").read_text() for path in staged.values()}
    assert len(requirements) == 1, "bundles were expected to share one pinned requirements list"
    for path in staged.values():
        assert (path / "main.py").is_file() and (path / "topology.yaml").is_file()
        assert (path / "common" / "entrypoints.py").is_file() and not (path / "common").is_symlink()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    first = next(iter(staged.values()))
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=first,
        check=True,
        timeout=540,
    )
    probe = (
        "import sys; sys.path.insert(0, '.'); import main, common; "
        "assert common.__file__.startswith(sys.argv[1]), common.__file__; "
        "assert callable(main.handle); print('ok')"
    )
    for name, path in staged.items():
        out = subprocess.run(
            [str(py), "-I", "-c", probe, str(path)], cwd=path, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0 and out.stdout.strip() == "ok", f"{name}: {out.stderr[-2000:]}"
