"""The command line's shape: every option explained, inputs named by their path under the root given."""

from __future__ import annotations

import argparse
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from common.cli import _parser, _served
from common.cli_run import expand
from common.cli_support import UsageError
from tests.support import SAMPLES


def _commands(p: argparse.ArgumentParser, path: str = "sluice") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


def _options() -> Iterator[tuple[str, argparse.Action]]:
    for path, p in _commands(_parser()):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            yield path, action


def test_every_option_and_argument_has_help_text() -> None:
    missing = [f"{path} {a.dest}" for path, a in _options() if not a.help]
    assert missing == []


def test_every_option_with_a_default_says_what_it_is() -> None:
    silent = [
        f"{path} {a.option_strings[0]}"
        for path, a in _options()
        if a.option_strings and a.default not in (None, False) and "default" not in (a.help or "")
    ]
    assert silent == []


def test_every_command_is_there() -> None:
    names = {path for path, _ in _commands(_parser())}
    for cmd in ("run", "export", "import-eml", "jobs", "runs", "dead-letters", "serve", "extract"):
        assert f"sluice {cmd}" in names


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, sample in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / sample, root / rel)


def test_files_in_a_folder_are_named_by_their_path_under_it(tmp_path: Path) -> None:
    _tree(tmp_path / "docs", {"a/x.pdf": "uk_invoice.pdf", "b/x.pdf": "fr_facture.pdf", "top.pdf": "uk_invoice.pdf"})
    assert [i.name for i in expand([tmp_path / "docs"])] == ["a/x.pdf", "b/x.pdf", "top.pdf"]


def test_a_file_given_by_itself_is_named_by_its_name(tmp_path: Path) -> None:
    _tree(tmp_path, {"deep/down/x.pdf": "uk_invoice.pdf"})
    assert [i.name for i in expand([tmp_path / "deep" / "down" / "x.pdf"])] == ["x.pdf"]


def test_names_that_would_collide_across_the_paths_given_keep_the_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, {"one/x.pdf": "uk_invoice.pdf", "two/x.pdf": "fr_facture.pdf", "two/y.pdf": "uk_invoice.pdf"})
    monkeypatch.chdir(tmp_path)
    assert [i.name for i in expand([Path("one"), Path("two")])] == ["one/x.pdf", "two/x.pdf", "y.pdf"]


def test_a_file_reached_twice_is_uploaded_once(tmp_path: Path) -> None:
    _tree(tmp_path, {"docs/x.pdf": "uk_invoice.pdf"})
    assert len(expand([tmp_path / "docs", tmp_path / "docs" / "x.pdf"])) == 1


def test_paths_without_pdfs_are_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="no PDF files found"):
        expand([tmp_path])


class _Handler(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(200 if self.path == "/served" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_link_counts_as_served_only_when_a_server_answers_it() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert _served(f"{base}/served")
        assert not _served(f"{base}/gone")
    finally:
        server.shutdown()
        server.server_close()
    assert not _served(f"{base}/served"), "nobody listens any more"
    assert not _served("gs://bucket/object")
