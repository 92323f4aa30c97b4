"""The pure archive rules (common.core.archives): one rule per test, hand-written entries."""

from __future__ import annotations

import stat

import pytest

from common.core.archives import (
    ArchiveLimits,
    MemberEntry,
    Reason,
    find_overlaps,
    judge_member,
    path_problem,
    plan,
    too_many_members,
)

LIMITS = ArchiveLimits()
MIB = 1 << 20


def entry(name: str = "a.pdf", index: int = 0, **kw: int) -> MemberEntry:
    fields = {"compress_size": 100, "file_size": 200, "header_offset": 0, "data_end": 150}
    fields.update(kw)
    return MemberEntry(index=index, name=name, **fields)


@pytest.mark.parametrize(
    "name",
    [
        "../x.pdf",
        "a/../../x.pdf",
        "/etc/x",
        "\\windows\\x.pdf",
        "C:/x.pdf",
        "c:\\x.pdf",
        "a\\..\\..\\x",
        "",
        "./",
        "a\x00b",
    ],
)
def test_unsafe_member_paths_are_named(name: str) -> None:
    assert path_problem(name) is not None


@pytest.mark.parametrize("name", ["x.pdf", "2024/jan/x.pdf", "./x.pdf", "a..b.pdf", "dir/..x.pdf"])
def test_ordinary_member_paths_pass(name: str) -> None:
    assert path_problem(name) is None


def test_a_zip_slip_member_is_rejected_for_its_path() -> None:
    verdict = judge_member(entry("../x.pdf"), LIMITS)
    assert (verdict.action, verdict.reason) == ("reject", Reason.UNSAFE_PATH)


def test_directories_are_ignored_not_rejected() -> None:
    assert judge_member(entry("docs/"), LIMITS).action == "ignore"


def test_a_symlink_mode_is_rejected() -> None:
    verdict = judge_member(entry("link.pdf", external_attr=(stat.S_IFLNK | 0o777) << 16), LIMITS)
    assert verdict.reason is Reason.SYMLINK


def test_a_regular_file_mode_is_fine() -> None:
    assert judge_member(entry(external_attr=(stat.S_IFREG | 0o644) << 16), LIMITS).action == "extract"


def test_the_encryption_flag_bit_rejects() -> None:
    assert judge_member(entry(flag_bits=0x1), LIMITS).reason is Reason.ENCRYPTED


def test_an_undecodable_compression_method_rejects() -> None:
    assert judge_member(entry(compress_type=99), LIMITS).reason is Reason.UNSUPPORTED_COMPRESSION  # AES


def test_a_declared_ratio_above_the_limit_rejects() -> None:
    verdict = judge_member(entry(file_size=1024 * MIB, compress_size=MIB), LIMITS)
    assert verdict.reason is Reason.COMPRESSION_RATIO
    assert "1024:1" in verdict.detail


def test_a_zero_compressed_size_with_content_is_an_infinite_ratio() -> None:
    assert judge_member(entry(file_size=2 * MIB, compress_size=0), LIMITS).reason is Reason.COMPRESSION_RATIO


def test_small_files_may_compress_well_beyond_the_ratio() -> None:
    assert judge_member(entry(file_size=500_000, compress_size=1_000), LIMITS).action == "extract"


def test_entries_sharing_a_local_header_all_overlap() -> None:
    entries = [entry(f"m{i}", i, header_offset=0, data_end=1000) for i in range(3)]
    assert find_overlaps(entries, central_directory_start=1000) == {0, 1, 2}


def test_an_entry_starting_inside_anothers_data_overlaps_and_so_does_the_other() -> None:
    entries = [entry("a", 0, header_offset=0, data_end=500), entry("b", 1, header_offset=400, data_end=900)]
    assert find_overlaps(entries, central_directory_start=900) == {0, 1}


def test_adjacent_entries_do_not_overlap() -> None:
    entries = [entry("a", 0, header_offset=0, data_end=500), entry("b", 1, header_offset=500, data_end=900)]
    assert find_overlaps(entries, central_directory_start=900) == set()


def test_data_running_into_the_central_directory_is_an_overlap() -> None:
    assert find_overlaps([entry(header_offset=0, data_end=1200)], central_directory_start=1000) == {0}


def test_an_unreadable_local_header_counts_as_overlapping() -> None:
    assert find_overlaps([entry(data_end=None)], central_directory_start=1000) == {0}  # type: ignore[arg-type]


def test_the_total_budget_rejects_the_member_that_does_not_fit_and_admits_later_smaller_ones() -> None:
    limits = ArchiveLimits(max_total_bytes=1000)
    entries = [
        entry("a", 0, file_size=600, compress_size=600, header_offset=0, data_end=700),
        entry("b", 1, file_size=600, compress_size=600, header_offset=700, data_end=1400),
        entry("c", 2, file_size=300, compress_size=300, header_offset=1400, data_end=1800),
    ]
    verdicts = [v for _, v in plan(entries, limits, central_directory_start=1800)]
    assert [v.action for v in verdicts] == ["extract", "reject", "extract"]
    assert verdicts[1].reason is Reason.SIZE_LIMIT


def test_a_name_repeated_in_the_directory_is_imported_once() -> None:
    entries = [entry("a.pdf", 0, header_offset=0, data_end=100), entry("a.pdf", 1, header_offset=100, data_end=200)]
    verdicts = [v for _, v in plan(entries, LIMITS, central_directory_start=200)]
    assert verdicts[0].action == "extract"
    assert verdicts[1].reason is Reason.DUPLICATE_NAME


def test_more_members_than_the_limit_refuses_the_archive() -> None:
    refused = too_many_members(1001, LIMITS)
    assert refused is not None and refused.reason is Reason.TOO_MANY_MEMBERS
    assert too_many_members(1000, LIMITS) is None
