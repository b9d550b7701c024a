"""PagerDuty Events API v2: page on escalations and unanswered approvals, resolve when it is over.

Wire format (https://github.com/PagerDuty/developer-docs/blob/main/docs/events-API-v2/02-Trigger-Events.md):
`POST https://events.pagerduty.com/v2/enqueue` with `routing_key`, `event_action` (`trigger`,
`acknowledge`, `resolve`), `dedup_key` (at most 255 characters; correlates a resolve with its
trigger), and for a trigger `payload.summary` (at most 1024 characters), `payload.source`,
`payload.severity` (`critical`, `error`, `warning`, `info`), optional `payload.timestamp`,
`payload.component`, `payload.class`, `payload.custom_details`, `links` (`href`, `text`), `client`,
`client_url`. A resolve needs only `routing_key`, `dedup_key` and `event_action`.
Responses (https://github.com/PagerDuty/developer-docs/blob/main/docs/events-API-v2/01-Overview.md):
202 accepted; 400 invalid (do not retry); 429 and 5xx (retry later).

One page per incident: `dedup_key` is `remediator-incident-<id>`, so repeated triggers add to the
open alert instead of opening a second one, and the resolve closes it.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp

from actuator.notifications.base import Delivered, Notification
from actuator.notifications.config import PagerDutyConfig
from actuator.notifications.exceptions import DeliveryFailed
from incidents import format_rfc3339

SINK_NAME: Final = "pagerduty"
TRIGGERS: Final = frozenset({"escalated", "failed", "approval_overdue"})
RESOLVES: Final = frozenset({"resolved", "closed"})
PD_SEVERITIES: Final = ("critical", "error", "warning", "info")


def dedup_key(incident_id: int) -> str:
    return f"remediator-incident-{incident_id}"


def page_is_open(earlier: list[dict[str, Any]]) -> bool:
    actions = [result.get("event_action") for result in earlier if result.get("event_action")]
    return bool(actions) and actions[-1] == "trigger"


def trigger_body(notification: Notification, routing_key: str) -> dict[str, Any]:
    incident = notification.incident
    severity = incident.get("severity")
    summary = f"{notification.service}: {notification.event_type.replace('_', ' ')}: {notification.message}"
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(notification.incident_id),
        "payload": {
            "summary": summary[:1024],
            "source": notification.service,
            # An unknown severity pages as an error: never quieter because a label was missing.
            "severity": severity if severity in PD_SEVERITIES else "error",
            "timestamp": format_rfc3339(notification.occurred_at),
            "component": notification.service,
            "class": ", ".join(notification.alert_names) or None,
            "custom_details": {
                "incident_id": notification.incident_id,
                "status": incident.get("status"),
                "status_reason": incident.get("status_reason"),
                "decision": incident.get("decision"),
                "policy": incident.get("policy"),
            },
        },
        "client": "Remediator",
    }
    if body["payload"]["class"] is None:
        del body["payload"]["class"]
    links = []
    if notification.incident_url:
        links.append(
            {"href": notification.incident_url, "text": f"Remediator incident {notification.incident_id}"}
        )
        body["client_url"] = notification.incident_url
    if notification.dashboard_url:
        links.append({"href": notification.dashboard_url, "text": f"Grafana: {notification.service}"})
    if links:
        body["links"] = links
    return body


class PagerDutySink:
    def __init__(
        self, config: PagerDutyConfig, session: aiohttp.ClientSession, *, timeout: float = 10.0
    ) -> None:
        self.config = config
        self.session = session
        self.timeout = timeout

    @property
    def name(self) -> str:
        return SINK_NAME

    def screen(self, *, event_type: str, severity: str | None, quiet: bool) -> str | None:
        if event_type in TRIGGERS or event_type in RESOLVES:
            return None
        pages, resolves = ", ".join(sorted(TRIGGERS)), ", ".join(sorted(RESOLVES))
        return f"PagerDuty pages only on {pages} and resolves on {resolves}"

    async def deliver(self, notification: Notification) -> Delivered:
        routing_key = self.config.routing_key.reveal()
        if notification.event_type in RESOLVES:
            if not page_is_open(notification.earlier):
                return Delivered(sent=False, note="no open page to resolve")
            body: dict[str, Any] = {
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": dedup_key(notification.incident_id),
            }
        else:
            body = trigger_body(notification, routing_key)
        try:
            async with self.session.post(
                self.config.url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                status = response.status
                detail = (await response.text())[:200]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(
                f"PagerDuty unreachable: {type(exc).__name__}: {exc}"[:300],
                sink=self.name,
                retryable=True,
                incident_id=notification.incident_id,
            ) from None
        if status == 202 or 200 <= status < 300:
            return Delivered(result={"event_action": body["event_action"], "dedup_key": body["dedup_key"]})
        raise DeliveryFailed(
            f"PagerDuty answered HTTP {status}: {detail}",
            sink=self.name,
            retryable=status == 429 or status >= 500,
            incident_id=notification.incident_id,
        )
