"""The state machines: every legal move is allowed, every other one refused."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import pytest

from common.core.errors import ErrorKind, IllegalTransition
from common.core.states import (
    EXPORT_MOVES,
    FILE_MOVES,
    OPERATION_MOVES,
    RUN_MOVES,
    TASK_MOVES,
    TERMINAL_RUN_STATES,
    TERMINAL_TASK_STATES,
    ExportStatus,
    FileStatus,
    OperationStatus,
    RunStatus,
    TaskStatus,
    can_move,
    check_transition,
)

MACHINES: dict[str, tuple[type[StrEnum], Mapping[Any, frozenset[Any]]]] = {
    "file": (FileStatus, FILE_MOVES),
    "run": (RunStatus, RUN_MOVES),
    "task": (TaskStatus, TASK_MOVES),
    "export": (ExportStatus, EXPORT_MOVES),
    "operation": (OperationStatus, OPERATION_MOVES),
}

LEGAL = [
    pytest.param(moves, current, target, id=f"{entity}:{current}->{target}")
    for entity, (states, moves) in MACHINES.items()
    for current in states
    for target in states
    if target in moves[current]
]

ILLEGAL = [
    pytest.param(moves, current, target, id=f"{entity}:{current}->{target}")
    for entity, (states, moves) in MACHINES.items()
    for current in states
    for target in states
    if target not in moves[current]
]


@pytest.mark.parametrize("entity", MACHINES)
def test_every_state_of_every_entity_has_a_row_in_its_moves_table(entity: str) -> None:
    states, moves = MACHINES[entity]
    assert set(moves) == set(states)


@pytest.mark.parametrize("entity", MACHINES)
def test_moves_tables_only_name_states_of_their_own_entity(entity: str) -> None:
    states, moves = MACHINES[entity]
    for targets in moves.values():
        assert targets <= set(states)


@pytest.mark.parametrize(("moves", "current", "target"), LEGAL)
def test_legal_transition_returns_the_target_state(
    moves: Mapping[Any, frozenset[Any]], current: StrEnum, target: StrEnum
) -> None:
    assert check_transition(moves, current, target) is target
    assert can_move(moves, current, target)


@pytest.mark.parametrize(("moves", "current", "target"), ILLEGAL)
def test_illegal_transition_raises_naming_both_states(
    moves: Mapping[Any, frozenset[Any]], current: StrEnum, target: StrEnum
) -> None:
    with pytest.raises(IllegalTransition, match=f"^cannot move from {current.value} to {target.value}$"):
        check_transition(moves, current, target)
    assert not can_move(moves, current, target)


def test_the_tables_hold_both_legal_and_illegal_moves_for_each_entity() -> None:
    # Guards the parametrisation itself: an empty table would make the tests above vacuous.
    for entity in MACHINES:
        assert any(str(p.id).startswith(f"{entity}:") for p in LEGAL)
        assert any(str(p.id).startswith(f"{entity}:") for p in ILLEGAL)


def test_illegal_transition_message_is_prefixed_with_the_entity_name() -> None:
    with pytest.raises(IllegalTransition, match=r"^task cannot move from completed to running$"):
        check_transition(TASK_MOVES, TaskStatus.COMPLETED, TaskStatus.RUNNING, what="task")


def test_illegal_transition_is_a_conflict_telling_the_caller_to_reload() -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(RUN_MOVES, RunStatus.CANCELLED, RunStatus.RUNNING)
    assert info.value.kind is ErrorKind.CONFLICT
    assert info.value.code == "illegal_transition"
    assert "reload" in info.value.hint


def test_terminal_task_states_are_completed_failed_and_cancelled() -> None:
    assert frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}) == TERMINAL_TASK_STATES


def test_terminal_run_states_are_completed_failed_and_cancelled() -> None:
    assert frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}) == TERMINAL_RUN_STATES


@pytest.mark.parametrize("state", sorted(TERMINAL_TASK_STATES))
def test_a_terminal_task_can_only_be_reopened_to_pending(state: TaskStatus) -> None:
    assert TASK_MOVES[state] == {TaskStatus.PENDING}


@pytest.mark.parametrize(
    ("moves", "final"),
    [
        pytest.param(FILE_MOVES, FileStatus.DELETED, id="file-deleted"),
        pytest.param(RUN_MOVES, RunStatus.CANCELLED, id="run-cancelled"),
        pytest.param(EXPORT_MOVES, ExportStatus.COMPLETED, id="export-completed"),
        pytest.param(OPERATION_MOVES, OperationStatus.CANCELLED, id="operation-cancelled"),
    ],
)
def test_final_states_allow_no_move_at_all(moves: Mapping[Any, frozenset[Any]], final: StrEnum) -> None:
    assert moves[final] == frozenset()


@pytest.mark.parametrize(
    ("moves", "state"),
    [
        pytest.param(TASK_MOVES, TaskStatus.RUNNING, id="task-takeover"),
        pytest.param(EXPORT_MOVES, ExportStatus.RUNNING, id="export-resume"),
        pytest.param(OPERATION_MOVES, OperationStatus.RUNNING, id="operation-progress"),
    ],
)
def test_running_to_running_is_allowed_where_work_is_taken_over_or_updated(
    moves: Mapping[Any, frozenset[Any]], state: StrEnum
) -> None:
    assert check_transition(moves, state, state) is state


@pytest.mark.parametrize("finished", [RunStatus.COMPLETED, RunStatus.FAILED])
def test_a_finished_run_reopens_to_running_for_a_retry(finished: RunStatus) -> None:
    assert check_transition(RUN_MOVES, finished, RunStatus.RUNNING) is RunStatus.RUNNING
