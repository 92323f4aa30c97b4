"""The kind registry and the extract kind's declaration."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common import kinds
from common.core.errors import PermanentError
from common.core.messages import ExtractTask, StartRun, decode
from common.core.models import Job, SourceFile, SourceType
from common.kinds import extract

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _file(fid: str, name: str, *dups: str) -> SourceFile:
    return SourceFile(
        id=fid,
        owner="o",
        job_id="j",
        source_type=SourceType.UPLOAD,
        external_id=fid,
        name=name,
        duplicate_names=list(dups),
        created_at=NOW,
        updated_at=NOW,
    )


def test_extract_is_the_built_in_kind_and_keeps_its_message_names() -> None:
    kind = kinds.get("extract")
    assert kind is extract.KIND and kind.function == "extract" and kind.unit == "documents"
    assert kind.start_type is StartRun and kind.item_type is ExtractTask


def test_a_job_stored_before_kinds_loads_as_extract() -> None:
    doc = {"id": "j", "owner": "o", "name": "n", "fields": [], "created_at": NOW, "updated_at": NOW}
    job = Job.from_doc(doc)
    assert job.kind == "extract" and job.kind_settings == {}


def test_extract_fans_out_one_item_per_document_keeping_its_other_names() -> None:
    job = Job(id="j", owner="o", name="n", created_at=NOW, updated_at=NOW)
    files = [_file("f1", "a.pdf", "copy/a.pdf"), _file("f2", "b.pdf")]
    specs = extract.fan_out(job, files, extract.ExtractSettings())
    assert [(s.key, s.name, s.duplicate_names) for s in specs] == [
        ("f1", "a.pdf", ("copy/a.pdf",)),
        ("f2", "b.pdf", ()),
    ]
    assert extract.fan_out(job, files, extract.ExtractSettings()) == specs, "a pure function of its inputs"


def test_an_unknown_kind_is_a_permanent_error_naming_the_known_ones() -> None:
    with pytest.raises(PermanentError) as err:
        kinds.get("nope")
    assert err.value.code == "unknown_kind" and "extract" in err.value.message


def test_settings_are_validated_by_the_kinds_model() -> None:
    with pytest.raises(PermanentError) as err:
        kinds.get("extract").validate_settings({"unexpected": 1})
    assert err.value.code == "invalid_settings"


def test_a_registered_kinds_messages_decode_and_route_to_its_function() -> None:
    from tests.kinds import wordcount

    kinds.register(wordcount.KIND)
    msg = decode("wordcount.item", b'{"task_id": "t", "run_id": "r", "job_id": "j"}')
    assert isinstance(msg, wordcount.KIND.item_type) and msg.kind == "wordcount.item"
    assert kinds.by_message("wordcount.start") is wordcount.KIND
    assert kinds.handlers()["wordcount"] == {
        "wordcount.start": "common.service.runs:fan_out_run",
        "wordcount.item": "common.service.runs:run_item",
    }
