"""Stage each Cloud Function as a deployable bundle (``make bundle``-style).

``build/<function>/`` holds ``main.py`` (the function's own), a real copy of
``common/`` and ``topology.yaml`` (no symlinks, no path shims), and a
``requirements.txt`` pinned to the versions this environment runs: the
runtime dependencies of ``pyproject.toml`` plus its ``gcp`` extra and the
Google Cloud client libraries the adapters import, with their whole
dependency closure, ``name==version`` one a line. Cloud Build installs
exactly that.

    .venv/bin/python scripts/bundle.py        # or: make bundle
"""

from __future__ import annotations

import shutil
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Final

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO: Final = Path(__file__).resolve().parents[1]
# The adapters' client libraries, until pyproject's gcp extra lists them.
ADAPTER_REQUIREMENTS: Final = (
    "google-cloud-firestore",
    "google-cloud-pubsub",
    "google-cloud-storage",
    "google-cloud-tasks",
)


def functions() -> list[str]:
    """Functions with an entrypoint to deploy (``functions/<name>/main.py``)."""
    return sorted(p.parent.name for p in (REPO / "functions").glob("*/main.py"))


def _roots(pyproject: Path) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = [*project["dependencies"], *project.get("optional-dependencies", {}).get("gcp", []), *ADAPTER_REQUIREMENTS]
    return [Requirement(line) for line in lines]


def pinned_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The runtime closure of ``pyproject``'s requirements at their installed versions."""
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    pins: dict[str, str] = {}
    pending: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset()) for r in _roots(pyproject)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        req, parent_extras = pending.pop()
        if req.marker is not None and not any(
            req.marker.evaluate({**env, "extra": extra}) for extra in (parent_extras or {""})
        ):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{req.name} is required but not installed here; install it first") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise RuntimeError(f"installed {req.name} {dist.version} does not satisfy {req}")
        pins[name] = dist.version
        for sub in dist.requires or []:
            pending.append((Requirement(sub), frozenset(req.extras)))
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def stage(function: str, out: Path, requirements: list[str]) -> Path:
    target = out / function
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(REPO / "functions" / function / "main.py", target / "main.py")
    shutil.copytree(REPO / "common", target / "common", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "topology.yaml", target / "topology.yaml")
    (target / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return target


def stage_all(out: Path = REPO / "build") -> dict[str, Path]:
    requirements = pinned_requirements()
    return {name: stage(name, out, requirements) for name in functions()}


if __name__ == "__main__":
    for name, path in stage_all().items():
        print(f"{name}: {path}")
