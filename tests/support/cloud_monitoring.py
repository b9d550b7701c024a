"""Cloud Monitoring's notifications (webhook schema 1.2) and their Pub/Sub push envelopes, as Google
sends them (https://cloud.google.com/monitoring/support/notification-options#webhooks,
https://cloud.google.com/pubsub/docs/push)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

STARTED_AT = int(datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp())
SUBSCRIPTION = "projects/test-project/subscriptions/remediator-cloud-monitoring"


def notification(
    *,
    incident_id: str = "0.nwl1u3ie0gk0",
    state: str = "open",
    service: str | None = "demo-app-a",
    started_at: int = STARTED_AT,
    ended_at: int | None = None,
    policy_name: str = "Remediator: HighErrorRate",
    alert_rule: str | None = "HighErrorRate",
    severity: str = "Critical",
    version: str = "1.2",
) -> dict[str, Any]:
    labels = {
        "project_id": "test-project",
        "revision_name": "demo-app-a-00002-bad",
        "location": "europe-west1",
        "configuration_name": "demo-app-a",
    }
    if service is not None:
        labels["service_name"] = service
    condition: dict[str, Any] = {
        "name": "projects/test-project/alertPolicies/1234/conditions/5678",
        "displayName": "HighErrorRate (Cloud Run request metrics, PromQL)",
    }
    if alert_rule is not None:
        condition["conditionPrometheusQueryLanguage"] = {
            "query": "sum by (service_name) (rate(run_googleapis_com:request_count[5m])) > 0.02",
            "duration": "0s",
            "ruleGroup": "remediator-cloud-run-alerts",
            "alertRule": alert_rule,
        }
    return {
        "version": version,
        "incident": {
            "incident_id": incident_id,
            "scoping_project_id": "test-project",
            "scoping_project_number": 12345,
            "url": f"https://console.cloud.google.com/monitoring/alerting/incidents/{incident_id}?project=test-project",
            "severity": severity,
            "started_at": started_at,
            "ended_at": ended_at,
            "state": state,
            "resource_id": "",
            "resource_name": "test-project demo-app-a",
            "resource_display_name": "demo-app-a",
            "resource_type_display_name": "Cloud Run Revision",
            "resource": {"type": "cloud_run_revision", "labels": labels},
            "metric": {
                "type": "run.googleapis.com/request_count",
                "displayName": "Request Count",
                "labels": {"response_code_class": "5xx"},
            },
            "metadata": {"system_labels": {}, "user_labels": {}},
            "policy_name": policy_name,
            "policy_user_labels": {"managed-by": "remediator"},
            "condition_name": "HighErrorRate (Cloud Run request metrics, PromQL)",
            "condition": condition,
            "threshold_value": "0.02",
            "observed_value": "0.081",
            "documentation": {
                "content": "More than 2% of the requests were answered with a 5xx status.",
                "mime_type": "text/markdown",
                "subject": "HighErrorRate",
            },
            "summary": "The error ratio of demo-app-a is above the threshold of 0.02 with a value of 0.081.",
        },
    }


def push_envelope(
    data: bytes | dict[str, Any] | None, *, message_id: str = "11111111111", **message: Any
) -> dict[str, Any]:
    """What a push subscription POSTs; `data` a notification (as JSON) or raw bytes."""
    body: dict[str, Any] = {
        "attributes": {},
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": "2026-11-28T12:00:05.123Z",
        "publish_time": "2026-11-28T12:00:05.123Z",
        **message,
    }
    if data is not None:
        raw = json.dumps(data).encode() if isinstance(data, dict) else data
        body["data"] = base64.b64encode(raw).decode()
    return {"message": body, "subscription": SUBSCRIPTION}
