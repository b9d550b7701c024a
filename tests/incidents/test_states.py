from __future__ import annotations

import pytest

from incidents import ACTIVE_STATUSES, FINAL_STATUSES, IllegalTransition, IncidentStatus, check_transition
from incidents.states import TRANSITIONS

S = IncidentStatus


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (S.OPEN, S.ANALYZING),
        (S.ANALYZING, S.DECIDED),
        (S.DECIDED, S.QUEUED),
        (S.DECIDED, S.AWAITING_APPROVAL),
        (S.DECIDED, S.SUPPRESSED),
        (S.DECIDED, S.ESCALATED),
        (S.AWAITING_APPROVAL, S.QUEUED),
        (S.QUEUED, S.ACTING),
        (S.ACTING, S.VERIFYING),
        (S.VERIFYING, S.RESOLVED),
        (S.VERIFYING, S.ESCALATED),
        (S.ACTING, S.FAILED),
        (S.OPEN, S.CLOSED),
        (S.ESCALATED, S.CLOSED),
    ],
)
def test_allowed_transitions(source: IncidentStatus, target: IncidentStatus) -> None:
    assert check_transition(source, target) is target


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (S.OPEN, S.ACTING),  # no action without a decision
        (S.OPEN, S.RESOLVED),
        (S.DECIDED, S.ACTING),  # must be queued first
        (S.SUPPRESSED, S.QUEUED),
        (S.VERIFYING, S.ACTING),  # never a second automatic action
        (S.RESOLVED, S.OPEN),
        (S.CLOSED, S.ANALYZING),
        (S.FAILED, S.QUEUED),
        (S.ESCALATED, S.QUEUED),
    ],
)
def test_illegal_transitions_raise(source: IncidentStatus, target: IncidentStatus) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition(source, target, incident_id=7)
    assert raised.value.incident_id == 7
    assert f"{source.value} -> {target.value}" in str(raised.value)


@pytest.mark.parametrize(
    ("source", "target"), [(S.ESCALATED, S.QUEUED), (S.SUPPRESSED, S.QUEUED), (S.OPEN, S.DECIDED)]
)
def test_some_transitions_belong_to_humans_alone(source: IncidentStatus, target: IncidentStatus) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(source, target)
    assert check_transition(source, target, by_human=True) is target


def test_humans_cannot_jump_arbitrarily_either() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(S.RESOLVED, S.QUEUED, by_human=True)
    with pytest.raises(IllegalTransition):
        check_transition(S.OPEN, S.ACTING, by_human=True)


def test_unknown_status_is_illegal() -> None:
    with pytest.raises(IllegalTransition):
        check_transition("open", "exploded")


def test_final_statuses_have_no_way_out_and_every_status_is_classified() -> None:
    for status in FINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()
    assert set(IncidentStatus) == ACTIVE_STATUSES | FINAL_STATUSES
    assert not ACTIVE_STATUSES & FINAL_STATUSES
    # Every active status can eventually end: a path exists to a final status.
    for status in ACTIVE_STATUSES:
        seen, frontier = set(), {status}
        while frontier:
            current = frontier.pop()
            seen.add(current)
            frontier |= set(TRANSITIONS[current]) - seen
        assert seen & FINAL_STATUSES, status


def test_a_human_may_escalate_or_close_any_active_incident_and_remediator_may_not() -> None:
    for status in ACTIVE_STATUSES:
        assert check_transition(status, S.CLOSED, by_human=True) is S.CLOSED
        if status is not S.ESCALATED:
            assert check_transition(status, S.ESCALATED, by_human=True) is S.ESCALATED
    for source, target in [(S.ACTING, S.CLOSED), (S.VERIFYING, S.CLOSED), (S.QUEUED, S.ESCALATED)]:
        with pytest.raises(IllegalTransition):
            check_transition(source, target)
