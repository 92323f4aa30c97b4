"""Stage each Cloud Function as a deployable bundle (``make bundle``-style).

``build/<function>/`` holds ``main.py`` (the function's own), a real copy of
``common/`` and ``topology.yaml`` (no symlinks, no path shims), and a
``requirements.txt`` pinned to the versions this environment runs: the
libraries that function's code path imports (``BASE`` plus its entry in
``FUNCTION_REQUIREMENTS``, with pyproject's constraints), with their whole
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
# What every function needs on the gcp backend: the core, the framework, the
# cloud adapters' clients and the tracing/metrics exporters.
BASE: Final = (
    "pydantic",
    "pydantic-settings",
    "pyyaml",
    "functions-framework",
    "opentelemetry-sdk",
    "google-auth",
    "google-cloud-firestore",
    "google-cloud-pubsub",
    "google-cloud-storage",
    "google-cloud-tasks",
    "opentelemetry-exporter-gcp-trace",
    "opentelemetry-exporter-gcp-monitoring",
)
GOOGLE_APIS: Final = ("google-api-python-client", "google-auth-httplib2", "cryptography")
# Beyond BASE, the libraries each function's code path imports (a test fails
# when a function has no entry, and installs each bundle on its own).
FUNCTION_REQUIREMENTS: Final[dict[str, tuple[str, ...]]] = {
    "api": ("pyjwt", *GOOGLE_APIS),
    "automation": GOOGLE_APIS,
    "cleanup": GOOGLE_APIS,
    "enrich": ("google-genai", *GOOGLE_APIS),
    "export": ("xlsxwriter", *GOOGLE_APIS),
    "extract": ("pypdfium2", "pypdf", "google-genai"),
    # Audits render pages (pypdfium2) and match logos (OpenCV); grammar calls Gemini.
    "audit": ("pypdfium2", "opencv-python-headless", "numpy", "google-genai"),
    "import_drive": GOOGLE_APIS,
    "import_gmail": GOOGLE_APIS,
    "import_upload": (),
    # The report's PDF (reportlab); Gemini and Vertex embeddings (google-genai); vector search (numpy).
    "research": ("reportlab", "google-genai", "numpy"),
    # The text layer (pypdfium2), Vertex embeddings (google-genai), vector search (numpy).
    "ingest": ("pypdfium2", "pypdf", "google-genai", "numpy"),
}


def functions() -> list[str]:
    """Functions with an entrypoint to deploy (``functions/<name>/main.py``)."""
    return sorted(p.parent.name for p in (REPO / "functions").glob("*/main.py"))


def _extras(project: dict[str, object], *names: str) -> list[str]:
    extras = project.get("optional-dependencies") or {}
    assert isinstance(extras, dict)
    return [r for name in names for r in extras.get(name, [])]


def _roots(pyproject: Path, function: str) -> list[Requirement]:
    """The function's requirements, with the version constraints pyproject gives them."""
    if function not in FUNCTION_REQUIREMENTS:
        raise RuntimeError(f"scripts/bundle.py: no requirements listed for function {function!r}")
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = {
        canonicalize_name(r.name): r
        for r in map(Requirement, [*project["dependencies"], *_extras(project, "gcp", "audit")])
    }
    wanted = [canonicalize_name(n) for n in (*BASE, *FUNCTION_REQUIREMENTS[function])]
    missing = [n for n in wanted if n not in declared]
    if missing:
        raise RuntimeError(f"pyproject.toml declares no {', '.join(missing)} (needed by {function})")
    return [declared[n] for n in dict.fromkeys(wanted)]


def pinned_requirements(function: str, pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The runtime closure of ``function``'s requirements at their installed versions."""
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    pins: dict[str, str] = {}
    pending: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset()) for r in _roots(pyproject, function)]
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
    return {name: stage(name, out, pinned_requirements(name)) for name in functions()}


if __name__ == "__main__":
    for name, path in stage_all().items():
        print(f"{name}: {path}")
