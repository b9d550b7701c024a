"""Alertmanager's webhook payload (version 4), validated, and recorded idempotently.

An alert's identity is its fingerprint plus `startsAt`: Alertmanager re-sends the same alert on every
group interval, and an HA pair sends everything twice, so both simply find the row already there.
Everything a payload changes is written in one transaction before the webhook answers 2xx.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from analyzer.exceptions import PayloadInvalid
from incidents import ACTIVE_STATUSES, AlertInfo, IncidentStatus, UtcDateTime
from incidents.db import Store
from incidents.models import Incident
from incidents.repository import ActionRepository, IncidentRepository

ACTOR = "alertmanager"
# Incidents in these statuses end when every alert resolves: no action has touched Cloud Run yet
# (or, for escalated ones, a human owns them and the alert is gone).
CLOSED_WHEN_ALERTS_RESOLVE = frozenset(
    {
        IncidentStatus.OPEN,
        IncidentStatus.ANALYZING,
        IncidentStatus.DECIDED,
        IncidentStatus.AWAITING_APPROVAL,
        IncidentStatus.QUEUED,
        IncidentStatus.SUPPRESSED,
        IncidentStatus.ESCALATED,
    }
)


class WebhookAlert(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: UtcDateTime = Field(alias="startsAt")
    ends_at: UtcDateTime | None = Field(default=None, alias="endsAt")
    generator_url: str | None = Field(default=None, alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=64)

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if "alertname" not in labels:
            raise ValueError("labels must include alertname")
        return labels

    @field_validator("ends_at", mode="before")
    @classmethod
    def _zero_time_is_none(cls, value: Any) -> Any:
        # Alertmanager sends 0001-01-01T00:00:00Z for "not ended".
        if isinstance(value, str) and value.startswith("0001-01-01"):
            return None
        return value

    @property
    def service(self) -> str | None:
        return self.labels.get("service") or None

    def to_alert_info(self) -> AlertInfo:
        return AlertInfo(
            name=self.labels["alertname"],
            status=self.status,
            severity=self.labels.get("severity"),
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            fingerprint=self.fingerprint,
            labels=self.labels,
            annotations=self.annotations,
            generator_url=self.generator_url,
        )


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str
    group_key: str | None = Field(default=None, alias="groupKey")
    alerts: list[WebhookAlert] = Field(min_length=1)


def parse_payload(body: bytes) -> WebhookPayload:
    """Validate an Alertmanager v4 payload; `PayloadInvalid` names the first problem found."""
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "json_invalid":
            raise PayloadInvalid(f"malformed JSON: {error['msg']}", field="body") from None
        if location == "version":
            raise PayloadInvalid(
                'not an Alertmanager v4 webhook payload: version must be "4"', field="version"
            ) from None
        raise PayloadInvalid(f"{location}: {error['msg']}", field=location) from None


class RecentNotifications:
    """Notifications already durably recorded, so an exact repeat is answered without the database.

    Alertmanager repeats every group on each group interval, and an HA pair doubles that: in a storm
    most deliveries are repeats. The key is (fingerprint, startsAt, status): a repeat of a recorded
    notification changes nothing, so answering it from memory is the same answer, sooner. Bounded,
    oldest forgotten first; each analyzer process has its own (a miss only costs a database read).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, datetime, str], None] = OrderedDict()

    @staticmethod
    def key(alert: WebhookAlert) -> tuple[str, datetime, str]:
        return (alert.fingerprint, alert.starts_at, alert.status)

    def __contains__(self, alert: WebhookAlert) -> bool:
        return self.key(alert) in self._seen

    def remember(self, alerts: list[WebhookAlert]) -> None:
        for alert in alerts:
            self._seen[self.key(alert)] = None
            self._seen.move_to_end(self.key(alert))
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


@dataclass
class IngestResult:
    received: int = 0
    new: int = 0
    duplicate: int = 0
    resolved: int = 0
    ignored: int = 0
    opened_incidents: list[int] = field(default_factory=list)
    joined_incidents: list[int] = field(default_factory=list)
    closed_incidents: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "new": self.new,
            "duplicate": self.duplicate,
            "resolved": self.resolved,
            "ignored": self.ignored,
            "opened_incidents": self.opened_incidents,
            "joined_incidents": sorted(set(self.joined_incidents)),
            "closed_incidents": self.closed_incidents,
        }


async def ingest(
    store: Store, payload: WebhookPayload, *, now: datetime, recent: RecentNotifications | None = None
) -> IngestResult:
    """Record every alert of the payload in one transaction."""
    result = IngestResult(received=len(payload.alerts))
    by_service: dict[str, list[WebhookAlert]] = defaultdict(list)
    for alert in payload.alerts:
        if alert.service is None:
            result.ignored += 1  # Remediator only acts on alerts that name a service
        elif recent is not None and alert in recent:
            result.duplicate += 1
        else:
            by_service[alert.service].append(alert)
    if not by_service:
        return result
    async with store.session() as session:
        incidents = IncidentRepository(session)
        actions = ActionRepository(session)
        # Sorted, so concurrent payloads lock services in the same order and never deadlock.
        for service in sorted(by_service):
            alerts = by_service[service]
            for alert in (a for a in alerts if a.status == "firing"):
                await _record_firing(incidents, service, alert, now=now, result=result)
            for alert in (a for a in alerts if a.status == "resolved"):
                await _record_resolved(incidents, actions, alert, now=now, result=result)
    if recent is not None:  # only once committed: a failed transaction recorded nothing
        recent.remember([alert for alerts in by_service.values() for alert in alerts])
    return result


async def _record_firing(
    incidents: IncidentRepository, service: str, alert: WebhookAlert, *, now: datetime, result: IngestResult
) -> None:
    known = await incidents.get_alert(alert.fingerprint, alert.starts_at)
    if known is not None:
        result.duplicate += 1
        return
    name = alert.labels["alertname"]
    incident, opened = await incidents.open(
        service,
        now=now,
        severity=alert.labels.get("severity"),
        summary=alert.annotations.get("summary"),
        alert_fired_at=alert.starts_at,
        actor=ACTOR,
        message=f"{name} firing for {service}",
    )
    inserted = await incidents.add_alert(
        incident,
        fingerprint=alert.fingerprint,
        starts_at=alert.starts_at,
        alertname=name,
        status="firing",
        severity=alert.labels.get("severity"),
        labels=alert.labels,
        annotations=alert.annotations,
        generator_url=alert.generator_url,
        received_at=now,
    )
    if not inserted:  # a concurrent delivery of the same alert won the race
        result.duplicate += 1
        return
    result.new += 1
    if opened:
        result.opened_incidents.append(incident.id)
    else:
        result.joined_incidents.append(incident.id)
        await incidents.events.add(
            incident.id,
            "alert.joined",
            f"{name} firing for {service} joined the incident",
            actor=ACTOR,
            data={"fingerprint": alert.fingerprint, "starts_at": alert.starts_at.isoformat()},
            at=now,
        )


async def _record_resolved(
    incidents: IncidentRepository,
    actions: ActionRepository,
    alert: WebhookAlert,
    *,
    now: datetime,
    result: IngestResult,
) -> None:
    stored = await incidents.get_alert(alert.fingerprint, alert.starts_at)
    if stored is None:  # never seen firing: Remediator started after it did
        result.ignored += 1
        return
    if stored.status == "resolved":  # a repeated resolved notification
        result.duplicate += 1
        return
    result.resolved += 1
    stored.status = "resolved"
    stored.ends_at = alert.ends_at or now
    incident = await incidents.get(stored.incident_id, for_update=True)
    name = alert.labels["alertname"]
    await incidents.events.add(
        incident.id,
        "alert.resolved",
        f"{name} resolved",
        actor=ACTOR,
        data={"fingerprint": alert.fingerprint, "ends_at": stored.ends_at.isoformat()},
        at=now,
    )
    if await incidents.count_firing_alerts(incident.id) > 0:
        return
    await _close_if_nothing_in_flight(incidents, actions, incident, now=now, result=result)


async def _close_if_nothing_in_flight(
    incidents: IncidentRepository,
    actions: ActionRepository,
    incident: Incident,
    *,
    now: datetime,
    result: IngestResult,
) -> None:
    status = IncidentStatus(incident.status)
    if status not in ACTIVE_STATUSES:
        return
    if status in CLOSED_WHEN_ALERTS_RESOLVE:
        cancelled = await actions.cancel_queued_for_incident(incident.id, now=now)
        reason = "recovered on its own: every alert resolved before any action"
        if status is IncidentStatus.ESCALATED:
            reason = "every alert resolved"
        await incidents.transition(
            incident,
            IncidentStatus.CLOSED,
            actor=ACTOR,
            message=reason,
            now=now,
            reason=reason,
            data={"cancelled_actions": cancelled} if cancelled else None,
        )
        result.closed_incidents.append(incident.id)
    else:
        await incidents.events.add(
            incident.id,
            "alert.all_resolved",
            f"every alert resolved while the incident is {status.value}; verification decides the outcome",
            actor=ACTOR,
            at=now,
        )
