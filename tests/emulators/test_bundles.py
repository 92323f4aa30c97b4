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


def test_every_function_lists_its_requirements_and_gets_only_those() -> None:
    assert set(bundle.functions()) == set(bundle.FUNCTION_REQUIREMENTS)
    upload = {line.split("==")[0] for line in bundle.pinned_requirements("import_upload")}
    extract = {line.split("==")[0] for line in bundle.pinned_requirements("extract")}
    assert {"pypdfium2", "google-genai"} <= extract and not {"pypdfium2", "google-genai"} & upload
    assert "xlsxwriter" not in extract and "xlsxwriter" in {
        line.split("==")[0] for line in bundle.pinned_requirements("export")
    }


def test_every_bundle_installs_into_its_own_clean_venv_and_imports_main(tmp_path: Path) -> None:
    staged = bundle.stage_all(tmp_path / "build")
    assert set(staged) >= {"extract", "export", "import_upload", "cleanup"}
    for path in staged.values():
        assert (path / "main.py").is_file() and (path / "topology.yaml").is_file()
        assert (path / "common" / "entrypoints.py").is_file() and not (path / "common").is_symlink()
    # One clean virtualenv per distinct requirements list: a bundle imports with
    # only what its own requirements.txt installs.
    groups: dict[str, list[str]] = {}
    for name, path in staged.items():
        groups.setdefault((path / "requirements.txt").read_text(), []).append(name)
    # Import main, then every handler the function serves (what its first call imports).
    probe = (
        "import sys; sys.path.insert(0, '.'); import main, common; "
        "assert common.__file__.startswith(sys.argv[1]), common.__file__; "
        "assert callable(main.handle); "
        "from common.service.registry import HANDLERS, resolve; "
        "[resolve(sys.argv[2], kind) for kind in HANDLERS.get(sys.argv[2], {})]; print('ok')"
    )
    for i, names in enumerate(groups.values()):
        venv = tmp_path / f"venv{i}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
            cwd=staged[names[0]],
            check=True,
            timeout=540,
        )
        for name in names:
            path = staged[name]
            out = subprocess.run(
                [str(py), "-I", "-c", probe, str(path), name], cwd=path, capture_output=True, text=True, timeout=120
            )
            assert out.returncode == 0 and out.stdout.strip() == "ok", f"{name}: {out.stderr[-2000:]}"
