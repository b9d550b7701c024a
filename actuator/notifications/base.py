"""What a sink is given and what it answers.

A sink is one destination (Slack, one event webhook, PagerDuty). The worker asks `screen` at fan-out
(skip with a reason, or deliver) and calls `deliver` with a `Notification`: the event, the incident as
it was then, and what this sink answered for the incident's earlier events (so Slack can update its
card in place and PagerDuty resolve the page it opened). `deliver` returns `Delivered` or raises
`DeliveryFailed`; it never retries itself: the outbox worker owns retries, backoff and giving up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class Notification:
    event_id: int
    event_type: str
    incident_id: int
    service: str
    severity: str | None
    quiet: bool
    actor: str
    message: str
    occurred_at: datetime
    incident: dict[str, Any]  # the incident as the event announced it (incidents.outbox.incident_snapshot)
    detail: dict[str, Any]  # the timeline line's own data
    alert_names: list[str] = field(default_factory=list)
    # Who approved or rejected the waiting action, up to this event (None: nobody yet).
    approval: dict[str, Any] | None = None
    # This sink's answers to the incident's earlier events, oldest first.
    earlier: list[dict[str, Any]] = field(default_factory=list)
    incident_url: str | None = None
    dashboard_url: str | None = None

    @property
    def status(self) -> str:
        return str(self.incident.get("status"))

    def summary(self) -> dict[str, Any]:
        """The incident summary other systems receive (CloudEvents `data.incident`)."""
        return {
            **self.incident,
            "alert_names": self.alert_names,
            "approval": self.approval,
            "links": {"incident": self.incident_url, "dashboard": self.dashboard_url},
        }


@dataclass(frozen=True, kw_only=True)
class Delivered:
    """`result` is kept on the delivery for later events of the incident; `sent` False means the sink
    found nothing to do (e.g. no open page to resolve), which is recorded as skipped."""

    result: dict[str, Any] | None = None
    sent: bool = True
    note: str | None = None


class Sink(Protocol):
    @property
    def name(self) -> str: ...

    def screen(self, *, event_type: str, severity: str | None, quiet: bool) -> str | None:
        """Why this sink skips the event, or None to deliver it."""
        ...

    async def deliver(self, notification: Notification) -> Delivered: ...
