"""Alertmanager v4 webhook payloads as Alertmanager sends them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any


def alert(
    *,
    service: str = "demo-app-a",
    alertname: str = "HighErrorRate",
    status: str = "firing",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    severity: str = "critical",
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {"alertname": alertname, "service": service, "severity": severity, **(extra_labels or {})}
    if not service:
        labels.pop("service")
    fingerprint = hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:16]
    starts = starts_at or datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{alertname} on {service}", "description": "error ratio 8.0% > 2%"},
        "startsAt": starts.isoformat().replace("+00:00", "Z"),
        "endsAt": (ends_at.isoformat().replace("+00:00", "Z") if ends_at else "0001-01-01T00:00:00Z"),
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    overall = status or ("firing" if any(a["status"] == "firing" for a in alerts) else "resolved")
    first = alerts[0]["labels"]
    name = first.get("alertname", "")
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "truncatedAlerts": 0,
        "status": overall,
        "receiver": "remediator",
        "groupLabels": {"alertname": name},
        "commonLabels": first,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }
