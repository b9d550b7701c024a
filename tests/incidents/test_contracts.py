from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from incidents import (
    ActionKind,
    ActionRequest,
    ActionType,
    Decision,
    IncidentContext,
    InvalidAction,
    ReleaseAction,
    RollbackAction,
    ScaleAction,
    ScaleChange,
    describe_decision,
    format_rfc3339,
    read_action,
)

EXAMPLE_CONTEXT = {
    "schema": "incident-context/v1",
    "observed_at": "2026-01-10T14:32:40Z",
    "service": {"name": "demo-app-a", "project": "local", "region": "local"},
    "alert": {
        "name": "HighErrorRate",
        "status": "firing",
        "severity": "critical",
        "starts_at": "2026-01-10T14:32:00Z",
        "fingerprint": "8f3c1a2b9d0e4f56",
        "labels": {"service": "demo-app-a"},
        "annotations": {"summary": "error rate 5.2% > 2%"},
    },
    "thresholds": {"error_rate": 0.02, "latency_p95_ms": 1000, "min_requests": 100},
    "metrics": {
        "window_seconds": 300,
        "requests_in_window": 6241,
        "request_rate_rps": 20.8,
        "error_rate": 0.052,
        "latency_p95_ms": 245,
        "baseline": {"request_rate_rps": 19.5, "error_rate": 0.003, "latency_p95_ms": 180},
    },
    "revisions": [
        {
            "name": "demo-app-a-00003",
            "created_at": "2026-01-10T14:27:10Z",
            "traffic_percent": 100,
            "ready": True,
            "latest": True,
            "metrics": {"request_rate_rps": 20.8, "error_rate": 0.052, "latency_p95_ms": 245},
        },
        {
            "name": "demo-app-a-00002",
            "created_at": "2026-01-08T09:00:00Z",
            "traffic_percent": 0,
            "ready": True,
            "latest": False,
            "metrics": {"request_rate_rps": 0.0, "error_rate": None, "latency_p95_ms": None},
            "history": {"error_rate": 0.003, "latency_p95_ms": 180, "served_until": "2026-01-10T14:27:20Z"},
        },
    ],
    "scaling": {"min_instances": 0, "max_instances": 10, "current_instances": 3, "concurrency": 80},
    "logs": [
        {
            "timestamp": "2026-01-10T14:32:15Z",
            "severity": "ERROR",
            "revision": "demo-app-a-00003",
            "message": "500 Internal Server Error - Database timeout",
        }
    ],
    "recent_actions": [
        {"action": "ROLLBACK", "at": "2026-01-09T03:02:00Z", "target_revision": "demo-app-a-00001"}
    ],
    "some_future_field": {"ignored": True},
}


def test_contract_example_round_trips_with_utc_z_times() -> None:
    context = IncidentContext.model_validate(EXAMPLE_CONTEXT)
    dumped = context.to_json_dict()
    assert dumped["schema"] == "incident-context/v1"
    assert dumped["observed_at"] == "2026-01-10T14:32:40Z"
    assert dumped["revisions"][1]["history"]["served_until"] == "2026-01-10T14:27:20Z"
    assert "some_future_field" not in dumped  # consumers ignore unknown fields
    assert IncidentContext.model_validate(json.loads(json.dumps(dumped))) == context
    assert context.revision("demo-app-a-00002").history.error_rate == 0.003  # type: ignore[union-attr]
    assert context.revision("missing") is None


def test_naive_times_are_taken_as_utc_and_offsets_converted() -> None:
    data = dict(EXAMPLE_CONTEXT, observed_at="2026-01-10T15:32:40+01:00")
    context = IncidentContext.model_validate(data)
    assert context.observed_at == datetime(2026, 1, 10, 14, 32, 40, tzinfo=UTC)
    assert format_rfc3339(datetime(2026, 1, 10, 14, 32, 40, 500000)) == "2026-01-10T14:32:40.500000Z"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "incident-context/v2"}, "schema"),
        ({"thresholds": {"error_rate": 2, "latency_p95_ms": 1000, "min_requests": 1}}, "error_rate"),
        ({"service": {"name": ""}}, "name"),
    ],
)
def test_invalid_context_is_rejected_with_the_field_named(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IncidentContext.model_validate({**EXAMPLE_CONTEXT, **change})


def test_decision_requires_what_its_action_needs() -> None:
    with pytest.raises(ValidationError, match="target_revision"):
        Decision.model_validate({"action": "ROLLBACK", "confidence": 0.9})
    with pytest.raises(ValidationError, match="scale"):
        Decision.model_validate({"action": "SCALE_UP", "confidence": 0.9})
    with pytest.raises(ValidationError, match="min_instances"):
        Decision.model_validate(
            {"action": "SCALE_UP", "confidence": 0.9, "scale": {"min_instances": 5, "max_instances": 2}}
        )
    with pytest.raises(ValidationError):
        Decision.model_validate({"action": "DELETE_EVERYTHING", "confidence": 0.9})
    with pytest.raises(ValidationError):
        Decision.model_validate({"action": "NONE", "confidence": 1.5})
    decision = Decision.model_validate(
        {"action": "ROLLBACK", "target_revision": "demo-app-a-00002", "confidence": 0.92, "engine": "rules"}
    )
    assert decision.to_json_dict()["action"] == "ROLLBACK"


@pytest.mark.parametrize(
    ("request_", "stored_type", "stored_params", "words"),
    [
        (
            RollbackAction(target_revision="a-00001", from_revision="a-00002", decision_engine="rules"),
            "ROLLBACK",
            {"decision_engine": "rules", "target_revision": "a-00001", "from_revision": "a-00002"},
            "roll back a to a-00001",
        ),
        (
            RollbackAction(target_revision="a-00001"),
            "ROLLBACK",
            {"target_revision": "a-00001"},
            "roll back a to a-00001",
        ),
        (
            ScaleAction(min_instances=1, max_instances=8, decision_engine="hybrid"),
            "SCALE_UP",
            {"decision_engine": "hybrid", "min_instances": 1, "max_instances": 8},
            "scale a to min 1 / max 8 instances",
        ),
        (
            ScaleAction(type=ActionKind.SCALE, min_instances=0, max_instances=3),
            "SCALE",
            {"min_instances": 0, "max_instances": 3},
            "scale a to min 0 / max 3 instances",
        ),
        (ReleaseAction(), "RELEASE", {}, "release a to its latest ready revision"),
    ],
)
def test_actions_are_stored_as_type_and_params_and_read_back_the_same(
    request_: ActionRequest, stored_type: str, stored_params: dict, words: str
) -> None:
    assert (request_.type.value, request_.to_params()) == (stored_type, stored_params)
    assert read_action(stored_type, json.loads(json.dumps(stored_params))) == request_
    assert request_.describe("a") == words


@pytest.mark.parametrize(
    ("stored_type", "stored_params", "reason"),
    [
        ("ROLLBACK", {}, "target_revision: Field required"),
        ("ROLLBACK", {"target_revision": ""}, "target_revision: String should have at least 1 character"),
        ("SCALE", {"min_instances": 4, "max_instances": 2}, "min_instances must not exceed max_instances"),
        ("SCALE_UP", {"min_instances": 1, "max_instances": "many"}, "max_instances: Input should be"),
        ("SCALE_UP", None, "min_instances: Field required"),
        ("DELETE_EVERYTHING", {}, "unknown action type 'DELETE_EVERYTHING'"),
        ("INVESTIGATE", {}, "unknown action type 'INVESTIGATE'"),
    ],
)
def test_a_stored_action_that_does_not_validate_is_named_with_its_reason(
    stored_type: str, stored_params: dict | None, reason: str
) -> None:
    with pytest.raises(InvalidAction, match=re.escape(reason)):
        read_action(stored_type, stored_params)


def test_a_decision_asks_for_the_action_it_names_and_describes_it_the_same_way() -> None:
    rollback = Decision(
        action=ActionType.ROLLBACK, target_revision="a-00001", confidence=0.9, engine="gemini"
    )
    assert rollback.action_request(from_revision="a-00002") == RollbackAction(
        target_revision="a-00001", from_revision="a-00002", decision_engine="gemini"
    )
    scale = Decision(
        action=ActionType.SCALE_UP, scale=ScaleChange(min_instances=1, max_instances=6), confidence=0.9
    )
    assert scale.action_request() == ScaleAction(min_instances=1, max_instances=6, decision_engine="rules")
    assert describe_decision(rollback) == "roll back to a-00001"
    assert describe_decision(scale) == "scale to min 1 / max 6 instances"
    for action in (ActionType.INVESTIGATE, ActionType.NONE):
        decision = Decision(action=action, confidence=0.5)
        assert describe_decision(decision) == action.value.lower()
        with pytest.raises(ValueError, match="asks for no action"):
            decision.action_request()
