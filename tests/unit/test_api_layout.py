"""The API's routes decode, call a service and map its outcome: they never write the store or blobs."""

from __future__ import annotations

import ast
from pathlib import Path

ROUTES = Path(__file__).resolve().parents[2] / "common" / "api" / "routes"
# Methods of the store, a transaction and the blob store that change state.
WRITES = frozenset(
    {"transaction", "create", "put", "update", "delete", "tx_put", "tx_create", "put_stream", "put_bytes"}
)


def _writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
            receiver = ast.unparse(node.func.value)
            if any(part in receiver for part in ("store", "blobs", "repo", "t")) and receiver != "request":
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_route_module_writes_the_store_or_blobs_itself() -> None:
    modules = sorted(ROUTES.glob("*.py"))
    assert len(modules) >= 10
    assert [w for m in modules for w in _writes(m)] == []
