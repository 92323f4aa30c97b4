"""The gcp backend for the emulator tests: the composition root's own gcp
wiring, with signing credentials the tests provide (no emulator serves signBlob)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.bootstrap import _gcp
from common.config import Settings
from common.ports.clock import Clock
from common.ports.extractor import Extractor
from common.service.context import Deps
from common.topology import Topology


def build_gcp_deps(
    settings: Settings,
    topology: Topology,
    *,
    clock: Clock | None = None,
    extractor_factory: Callable[[str], Extractor] | None = None,
    signing_credentials: Any = None,
) -> Deps:
    return _gcp(settings, topology, clock, extractor_factory, signing_credentials=signing_credentials)
