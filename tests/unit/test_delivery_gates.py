"""What stands between a change and the cloud: the tool check in front of
``make test`` and the Cloud Build gate in front of ``terraform apply``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = ROOT / "scripts" / "require.sh"


def _bin_without(tmp_path: Path, *absent: str) -> Path:
    """A PATH folder with the tools require.sh uses, less ``absent``."""
    folder = tmp_path / "bin"
    folder.mkdir()
    # python3 is this interpreter: a pyenv shim on PATH would need pyenv itself.
    (folder / "python3").symlink_to(sys.executable)
    for tool in ("bash", "sed", "ls", "head", "java", "terraform"):
        found = shutil.which(tool)
        if found and tool not in absent:
            (folder / tool).symlink_to(found)
    return folder


def _require(tmp_path: Path, target: str, *absent: str, sdk: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(_bin_without(tmp_path, *absent)),
        "SLUICE_GCLOUD_SDK": str(sdk or os.environ.get("SLUICE_GCLOUD_SDK", "/usr/lib/google-cloud-sdk")),
    }
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(REQUIRE), target], env=env, capture_output=True, text=True, check=False)


def test_a_missing_terraform_stops_make_test_with_one_line_saying_why(tmp_path: Path) -> None:
    done = _require(tmp_path, "test", "terraform")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert len(lines) == 1
    assert lines[0].startswith("  - terraform: ") and "install:" in lines[0]


def test_missing_emulator_jars_are_named_with_their_install_command(tmp_path: Path) -> None:
    done = _require(tmp_path, "test", sdk=tmp_path / "no-sdk")
    assert done.returncode == 2
    assert "Pub/Sub emulator jar" in done.stderr
    assert "Firestore emulator jar" in done.stderr
    assert "google-cloud-cli-pubsub-emulator" in done.stderr


def test_make_run_does_not_need_the_test_tools(tmp_path: Path) -> None:
    done = _require(tmp_path, "run", "terraform", "java", sdk=tmp_path / "no-sdk")
    assert done.returncode == 0, done.stderr


def test_make_test_checks_its_tools_before_anything_else() -> None:
    makefile = (ROOT / "Makefile").read_text()
    test_rule = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert test_rule.split(":", 1)[1].split()[0] == "require-test"


def _steps() -> dict[str, dict[str, Any]]:
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return {step["id"]: step for step in build["steps"]}


def _waits_on(steps: dict[str, dict[str, Any]], step_id: str) -> set[str]:
    """Every step ``step_id`` waits for, directly or through others."""
    seen: set[str] = set()
    todo = list(steps[step_id].get("waitFor", []))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(steps[current].get("waitFor", []))
    return seen


def test_cloud_build_runs_every_test_tier_before_terraform_apply() -> None:
    steps = _steps()
    script = " ".join(steps["test"]["args"])
    pytest_line = next(line for line in script.splitlines() if "pytest" in line)
    # No marker filter and no folder list: the whole suite, emulator and slow tiers included.
    assert pytest_line.strip() == ".venv/bin/pytest -q"
    assert "emulators" in steps["test"]["name"]
    assert {"lint", "checkov", "test"} <= _waits_on(steps, "terraform")
