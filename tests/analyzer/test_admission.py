"""What the webhook admits, alert by alert: the rules on their own, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from analyzer.admission import (
    ALERTNAME_MAX_CHARS,
    FINGERPRINT_MAX_CHARS,
    SEVERITY_MAX_CHARS,
    AlertLimits,
    AlertRejected,
    admit_alert,
    admit_alerts,
    clean_text,
    parse_rfc3339,
)
from incidents.models import Incident, IncidentAlert
from tests.support.alerts import alert

LIMITS = AlertLimits()


def rejection(raw: Any, limits: AlertLimits = LIMITS) -> AlertRejected:
    with pytest.raises(AlertRejected) as caught:
        admit_alert(raw, limits)
    return caught.value


def with_labels(**labels: str) -> dict[str, Any]:
    base = alert()
    return {**base, "labels": {**base["labels"], **labels}}


def test_the_limits_follow_the_columns_of_the_models() -> None:
    assert ALERTNAME_MAX_CHARS == IncidentAlert.__table__.c.alertname.type.length == 255
    assert SEVERITY_MAX_CHARS == Incident.__table__.c.severity.type.length == 32
    assert FINGERPRINT_MAX_CHARS == IncidentAlert.__table__.c.fingerprint.type.length == 64


def test_an_alertmanager_alert_is_admitted_as_sent() -> None:
    admitted = admit_alert(alert(), LIMITS)
    assert admitted.service == "demo-app-a"
    assert admitted.starts_at == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert admitted.ends_at is None  # Alertmanager's zero time
    assert admitted.annotations["summary"] == "HighErrorRate on demo-app-a"
    assert admitted.to_alert_info().name == "HighErrorRate"


@pytest.mark.parametrize(
    ("service", "admitted"),
    [
        ("demo-app-a", True),
        ("a", True),
        ("a" * 49, True),
        ("a" * 50, False),  # Cloud Run: fewer than 50 characters
        ("a" * 256, False),  # longer than the incidents.service column: PostgreSQL would refuse it
        ("Demo-app", False),  # lowercase only
        ("1st-service", False),  # starts with a letter
        ("service-", False),  # cannot end with a hyphen
        ("demo_app", False),
        ("demo app", False),
        ("demo-app-\uff41", False),  # a fullwidth a
    ],
)
def test_the_service_label_must_be_a_cloud_run_service_name(service: str, admitted: bool) -> None:
    raw = with_labels(service=service)
    if admitted:
        assert admit_alert(raw, LIMITS).service == service
    else:
        error = rejection(raw)
        assert (error.reason, error.field) == ("bad_service_name", "labels.service")
        assert "Cloud Run service name" in error.message


@pytest.mark.parametrize("service", ["demo-app\x00", "demo-app\n"])
def test_control_characters_in_the_service_label(service: str) -> None:
    error = rejection(with_labels(service=service))
    assert (error.reason, error.field) == ("control_character", "labels.service")


@pytest.mark.parametrize(
    ("label", "revision", "admitted"),
    [
        ("revision", "demo-app-a-00002-bad", True),
        ("revision_name", "demo-app-a-00002-bad", True),
        ("revision", "r" * 63, True),
        ("revision", "", True),  # empty: no revision named
        ("revision", "r" * 64, False),  # a DNS label has at most 63 characters
        ("revision", "Demo-app-a-00002", False),
        ("revision_name", "demo-app-a-", False),
        ("revision", "0demo", False),
        ("revision", "demo_app.1", False),
        ("revision", "v1.2.3", False),
    ],
)
def test_revision_labels_must_be_cloud_run_revision_names(label: str, revision: str, admitted: bool) -> None:
    raw = with_labels(**{label: revision})
    if admitted:
        assert admit_alert(raw, LIMITS).labels[label] == revision
    else:
        error = rejection(raw)
        assert (error.reason, error.field) == ("bad_revision_name", f"labels.{label}")
        assert "Cloud Run revision name" in error.message


def test_an_empty_service_label_is_no_service_label() -> None:
    assert admit_alert(with_labels(service=""), LIMITS).service is None


@pytest.mark.parametrize(
    ("labels", "reason", "field"),
    [
        ({"severity": "x" * 33}, "value_too_long", "labels.severity"),
        ({"alertname": "A" * 256}, "value_too_long", "labels.alertname"),
        ({"alertname": ""}, "malformed", "labels.alertname"),
        ({"alertname": "High\x00ErrorRate"}, "control_character", "labels.alertname"),
        ({"team": "pay\x00ments"}, "control_character", "labels.team"),
        ({"team": "pay\tments"}, "control_character", "labels.team"),
        ({"te\x01am": "payments"}, "control_character", "labels"),
        ({"": "payments"}, "malformed", "labels"),
        ({"team": "x" * 1025}, "value_too_long", "labels.team"),
        ({"t" * 1025: "x"}, "value_too_long", "labels"),
    ],
)
def test_labels_that_a_column_or_a_cap_would_refuse(labels: dict[str, str], reason: str, field: str) -> None:
    error = rejection(with_labels(**labels))
    assert (error.reason, error.field) == (reason, field)


def test_label_and_annotation_counts_are_capped() -> None:
    limits = AlertLimits(max_labels=5)
    many = with_labels(**{f"l{n}": "v" for n in range(3)})  # alertname, service, severity + 3
    assert (rejection(many, limits).reason, rejection(many, limits).field) == ("too_many_labels", "labels")
    noisy = {**alert(), "annotations": {f"a{n}": "v" for n in range(6)}}
    assert rejection(noisy, limits).field == "annotations"
    assert admit_alert(with_labels(team="x"), AlertLimits(max_labels=4)).labels["team"] == "x"


def test_annotations_are_cleaned_and_cut_not_refused() -> None:
    raw = {
        **alert(),
        "annotations": {
            "summary": "error\x00 ratio\x1b[31m high",
            "description": "line one\nline two\twith a tab\r\n",
            "runbook": "r" * 5000,
        },
        "generatorURL": "http://prometheus/graph?g0.expr=\x00up" + "x" * 5000,
    }
    admitted = admit_alert(raw, AlertLimits(max_annotation_chars=100))
    assert admitted.annotations["summary"] == "error ratio[31m high"
    assert admitted.annotations["description"] == "line one\nline two\twith a tab\r\n"
    assert len(admitted.annotations["runbook"]) == 100
    assert admitted.annotations["runbook"].endswith("[cut 4900 characters]")
    assert admitted.generator_url is not None
    assert "\x00" not in admitted.generator_url and len(admitted.generator_url) == 100
    bad_name = {**alert(), "annotations": {"sum\x00mary": "x"}}
    assert (rejection(bad_name).reason, rejection(bad_name).field) == ("control_character", "annotations")


@pytest.mark.parametrize(
    ("fingerprint", "admitted"),
    [
        ("8f3c1a2b9d0e4f56", True),
        ("ABCDEF", True),
        ("f" * 64, True),
        ("f" * 65, False),
        ("", False),
        ("not-hex", False),
        ("8f3c\x00", False),
    ],
)
def test_fingerprints_are_hex_within_the_column(fingerprint: str, admitted: bool) -> None:
    raw = {**alert(), "fingerprint": fingerprint}
    if admitted:
        assert admit_alert(raw, LIMITS).fingerprint == fingerprint
    else:
        assert rejection(raw).reason == "bad_fingerprint"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("not an alert", "alert"),
        ({**alert(), "status": "pending"}, "status"),
        ({k: v for k, v in alert().items() if k != "labels"}, "labels"),
        ({**alert(), "labels": {"alertname": "X", "service": 5}}, "labels.service"),
        ({**alert(), "labels": {"service": "demo-app-a"}}, "labels"),
        ({**alert(), "generatorURL": None}, "generatorURL"),
        ({**alert(), "endsAt": None}, "endsAt"),
        ({**alert(), "annotations": None}, "annotations"),
    ],
)
def test_malformed_alerts_name_the_field(raw: Any, field: str) -> None:
    error = rejection(raw)
    assert (error.reason, error.field) == ("malformed", field)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T12:00:00Z", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        # Alertmanager sends nanoseconds; Python keeps microseconds.
        ("2026-11-28T12:00:00.123456789Z", datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-28t13:30:00+01:30", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("0001-01-01T00:00:00+01:00", datetime.min.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59-05:00", datetime.max.replace(tzinfo=UTC)),
        ("0000-06-01T00:00:00Z", datetime.min.replace(tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2026-11-28",
        "2026-11-28 12:00:00Z",
        "2026-11-28T12:00:00",
        "1700000000",
        "2026-02-30T00:00:00Z",
        "2026-11-28T24:00:00Z",
        "2026-11-28T12:00:00+24:00",
        "\uff12\uff10\uff12\uff16-11-28T12:00:00Z",  # fullwidth digits
    ],
)
def test_what_is_not_rfc3339_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="date-time"):
        parse_rfc3339(text)
    assert rejection({**alert(), "startsAt": text}).reason == "bad_timestamp"


def test_each_alert_of_a_payload_is_judged_alone() -> None:
    admitted, rejected = admit_alerts(
        [alert(), with_labels(service="Bad_Name"), "junk", alert(service="payments")], LIMITS
    )
    assert [a.service for a in admitted] == ["demo-app-a", "payments"]
    assert [a.index for a in admitted] == [0, 3]  # to name an alert the store refuses later
    assert [(r.index, r.reason, r.field) for r in rejected] == [
        (1, "bad_service_name", "alerts.1.labels.service"),
        (2, "malformed", "alerts.2.alert"),
    ]


def test_clean_text_keeps_what_a_human_needs() -> None:
    assert clean_text("a\x00b\x07c\td\ne\rf\x7f", 100) == "abc\td\ne\rf"
    assert clean_text("abc", 3) == "abc"
