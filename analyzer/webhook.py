"""Alertmanager's webhook payload (version 4), validated, and recorded idempotently.

An alert's identity is its fingerprint plus `startsAt`: Alertmanager re-sends the same alert on every
group interval, and an HA pair sends everything twice, so both simply find the row already there.
Everything a payload changes is written in one transaction before the webhook answers 2xx, each
alert in a savepoint of its own: should the store refuse one alert's rows (a `DataError`: a value the
admission rules let through but a column does not take), only that savepoint is rolled back and the
alert is skipped with the reason `refused_by_store`; the others are recorded. On PostgreSQL an error
inside a transaction aborts all of it, so without the savepoint one refused row would cost every
alert of the notification (and, as a 500, be retried by Alertmanager for ever).

What counts as refused: a SQLAlchemy `DataError` (SQLite's), or any error carrying a PostgreSQL
SQLSTATE of class 22, "data exception" (https://www.postgresql.org/docs/current/errcodes-appendix.html:
22001 value too long, 22P05 untranslatable character such as a NUL in JSONB, ...): SQLAlchemy's
asyncpg dialect translates those to a plain `DBAPIError`, not to `DataError`. Anything else (the
store unreachable, a bug) fails the notification as before, and Alertmanager retries a 5xx.

What a firing alert does (incidents/lifecycle.py has the rules):

    new identity, no active incident        opens one
    new identity, active incident           joins it; a new alert name, or an alert firing again after
                                            all had resolved, sends an escalated, suppressed or
                                            waiting incident back to analysis
    new identity, incident escalated for    the escalated incident closes, a new one (linked) opens
      longer than the hold limit
    known identity, its incident resolved   a recurrence once the verification grace has passed: a new
      by Remediator                         incident linked to the resolved one; before, a repeat
    known identity that had resolved        it fired again: as a new alert for the service
    anything else known                     a repeat: nothing changes
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DataError, DBAPIError

from analyzer.admission import REFUSED_BY_STORE, AlertLimits, Rejection, WebhookAlert, admit_alerts
from analyzer.exceptions import PayloadInvalid
from incidents import (
    ACTIVE_STATUSES,
    ActionRepository,
    Incident,
    IncidentRepository,
    IncidentStatus,
    Store,
)
from incidents.lifecycle import (
    LifecycleConfig,
    Relation,
    Trigger,
    held_too_long,
    is_final,
    open_following,
    recurrence_due,
    request_reanalysis,
    supersede_escalated,
)
from incidents.states import REANALYSABLE_STATUSES

ACTOR = "alertmanager"
log = logging.getLogger("analyzer.webhook")
# Incidents in these statuses end when every alert resolves: no action has touched Cloud Run yet.
# An escalated incident waits for the grace first (a human owns it, and an alert that fires again
# soon belongs with it): the lifecycle watcher closes it (`close_quiet_escalations`).
CLOSED_WHEN_ALERTS_RESOLVE = frozenset(
    {
        IncidentStatus.OPEN,
        IncidentStatus.ANALYZING,
        IncidentStatus.DECIDED,
        IncidentStatus.AWAITING_APPROVAL,
        IncidentStatus.QUEUED,
        IncidentStatus.SUPPRESSED,
    }
)


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: any number without a fractional part (5.0 is one), never a string or a
    boolean. Pydantic's strict int refuses 5.0 and its lax int takes "5"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


class WebhookPayload(BaseModel):
    """The envelope of an Alertmanager v4 payload; its alerts are checked one by one (`admission`).

    Strict: every field the OpenAPI document describes must have the type it names there.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: JsonInteger = Field(default=0, ge=0, alias="truncatedAlerts")
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[Any] = Field(min_length=1)


@dataclass(frozen=True, kw_only=True)
class ParsedPayload:
    received: int
    alerts: list[WebhookAlert]
    rejected: list[Rejection]


def parse_payload(body: bytes, limits: AlertLimits | None = None) -> ParsedPayload:
    """Validate an Alertmanager v4 payload, each alert on its own.

    `PayloadInvalid` names the first problem of the envelope (not JSON, not version 4, no alerts,
    more alerts than `limits.max_alerts`). Alerts that cannot be recorded are returned as rejections
    beside the others.
    """
    limits = limits or AlertLimits()
    try:
        envelope = WebhookPayload.model_validate_json(body)
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
    if len(envelope.alerts) > limits.max_alerts:
        # 400, like any other breach of the document's schema (maxItems); 413 is for the body's bytes.
        raise PayloadInvalid(
            f"{len(envelope.alerts)} alerts in one payload, more than the limit of {limits.max_alerts} "
            "(REMEDIATOR_MAX_ALERTS_PER_PAYLOAD; Alertmanager's max_alerts can cap what it sends)",
            field="alerts",
        )
    admitted, rejected = admit_alerts(envelope.alerts, limits)
    return ParsedPayload(received=len(envelope.alerts), alerts=admitted, rejected=rejected)


class RecentNotifications:
    """Notifications already durably recorded, so an exact repeat is answered without the database.

    Alertmanager repeats every group on each group interval, and an HA pair doubles that: in a storm
    most deliveries are repeats. The key is (fingerprint, startsAt, status): a repeat of a recorded
    notification changes nothing for `ttl`, so answering it from memory is the same answer, sooner.
    After `ttl` a repeat is read from the store again: a still-firing alert whose incident Remediator
    resolved in the meantime is a recurrence, which only the store can tell (keep `ttl` under
    Alertmanager's repeat_interval). Bounded, oldest forgotten first; each analyzer process has its
    own (a miss only costs a database read).
    """

    def __init__(self, capacity: int = 100_000, *, ttl: timedelta = timedelta(seconds=20)) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._seen: OrderedDict[tuple[str, datetime, str], datetime] = OrderedDict()

    @staticmethod
    def key(alert: WebhookAlert) -> tuple[str, datetime, str]:
        return (alert.fingerprint, alert.starts_at, alert.status)

    def seen(self, alert: WebhookAlert, *, now: datetime) -> bool:
        remembered = self._seen.get(self.key(alert))
        return remembered is not None and now - remembered < self.ttl

    def remember(self, alerts: list[WebhookAlert], *, now: datetime) -> None:
        for alert in alerts:
            self._seen[self.key(alert)] = now
            self._seen.move_to_end(self.key(alert))
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


@dataclass
class IngestResult:
    received: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # Admitted alerts whose rows the store refused (each rolled back alone); also in `rejected`.
    refused: list[Rejection] = field(default_factory=list)
    new: int = 0
    duplicate: int = 0
    resolved: int = 0
    ignored: int = 0
    opened_incidents: list[int] = field(default_factory=list)
    joined_incidents: list[int] = field(default_factory=list)
    closed_incidents: list[int] = field(default_factory=list)
    # Incidents sent back to analysis by what this payload brought (a new alert name, a re-fire).
    reanalysed_incidents: list[int] = field(default_factory=list)
    # Why each was (the Trigger's value), in the same order.
    reanalysis_triggers: list[str] = field(default_factory=list)
    # Opened incidents that are recurrences of a resolved one (also in `opened_incidents`).
    recurred_incidents: list[int] = field(default_factory=list)

    @property
    def to_analyse(self) -> list[int]:
        """Incidents the analysis pool should take up once the payload is committed."""
        return [*self.opened_incidents, *self.reanalysed_incidents]

    @property
    def recorded(self) -> int:
        """Alerts this payload recorded or found recorded: anything but a rejection."""
        return self.new + self.duplicate + self.resolved + self.ignored

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
            "reanalysed_incidents": self.reanalysed_incidents,
            "rejected": [rejection.as_dict() for rejection in self.rejected],
        }


def _by_index(rejection: Rejection) -> int:
    return rejection.index


async def ingest(
    store: Store,
    payload: ParsedPayload,
    *,
    now: datetime,
    recent: RecentNotifications | None = None,
    actor: str = ACTOR,
    lifecycle: LifecycleConfig | None = None,
) -> IngestResult:
    """Record every admitted alert of the payload in one transaction; `actor` names the sender in
    the timeline.

    The whole payload is tried first as it is (one round trip per statement, nothing more); only
    when the store refuses a row is it recorded again, each alert in a savepoint of its own, so the
    refused ones are skipped with a reason and the others kept.
    """
    lifecycle = lifecycle or LifecycleConfig()
    result = IngestResult(received=payload.received, rejected=list(payload.rejected))
    by_service: dict[str, list[WebhookAlert]] = defaultdict(list)
    for alert in payload.alerts:
        if alert.service is None:
            result.ignored += 1  # Remediator only acts on alerts that name a service
        elif recent is not None and recent.seen(alert, now=now):
            result.duplicate += 1
        else:
            by_service[alert.service].append(alert)
    if not by_service:
        return result
    try:
        recorded = await _record(
            store, by_service, now=now, result=result, alone=False, actor=actor, lifecycle=lifecycle
        )
    except DBAPIError as exc:
        if not refused_by_store(exc):
            raise
        recorded = await _record(
            store, by_service, now=now, result=result, alone=True, actor=actor, lifecycle=lifecycle
        )
    if recent is not None:  # only once committed: a failed transaction recorded nothing
        recent.remember(recorded, now=now)
    return result


async def _record(
    store: Store,
    by_service: dict[str, list[WebhookAlert]],
    *,
    now: datetime,
    result: IngestResult,
    alone: bool,
    actor: str,
    lifecycle: LifecycleConfig,
) -> list[WebhookAlert]:
    """One transaction over every alert; with `alone`, each alert in a savepoint, and an alert whose
    rows the store refuses is rolled back by itself and listed in `result.refused`. `result` is only
    added to once the transaction committed. Returns the alerts recorded."""
    totals = IngestResult()
    recorded: list[WebhookAlert] = []
    async with store.session() as session:
        incidents = IncidentRepository(session)
        actions = ActionRepository(session)
        # Sorted, so concurrent payloads lock services in the same order and never deadlock.
        for service in sorted(by_service):
            # Firing before resolved: a resolved notification in the same payload finds its alert.
            for alert in sorted(by_service[service], key=lambda a: a.status != "firing"):
                part = IngestResult()
                try:
                    async with session.begin_nested() if alone else contextlib.nullcontext():
                        if alert.status == "firing":
                            await _record_firing(
                                incidents,
                                service,
                                alert,
                                now=now,
                                result=part,
                                actor=actor,
                                lifecycle=lifecycle,
                            )
                        else:
                            await _record_resolved(
                                incidents, actions, alert, now=now, result=part, actor=actor
                            )
                except DBAPIError as exc:
                    if not alone or not refused_by_store(exc):
                        raise
                    totals.refused.append(_refused(alert, exc))
                    continue
                _merge(totals, part)
                recorded.append(alert)
    _merge(result, totals)
    result.refused.extend(totals.refused)
    result.rejected.extend(totals.refused)
    result.rejected.sort(key=_by_index)  # in the payload's order, as the answer lists them
    return recorded


def refused_by_store(error: DBAPIError) -> bool:
    """Whether the store refused a value (a data exception), rather than failed."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return isinstance(error, DataError) or (isinstance(sqlstate, str) and sqlstate.startswith("22"))


def _refused(alert: WebhookAlert, error: DBAPIError) -> Rejection:
    # The driver's own words (e.g. "value too long for type character varying(32)"), first line only.
    text = str(error.orig if error.orig is not None else error).strip()
    cause = text.splitlines()[0][:200] if text else type(error).__name__
    return Rejection(
        index=alert.index,
        reason=REFUSED_BY_STORE,
        field=f"alerts.{alert.index}",
        message=f"the incident store refused the alert: {cause}",
    )


def _merge(result: IngestResult, part: IngestResult) -> None:
    """Add what one alert's savepoint recorded, once it is released."""
    result.new += part.new
    result.duplicate += part.duplicate
    result.resolved += part.resolved
    result.ignored += part.ignored
    result.opened_incidents.extend(part.opened_incidents)
    result.joined_incidents.extend(part.joined_incidents)
    result.closed_incidents.extend(part.closed_incidents)
    result.reanalysed_incidents.extend(part.reanalysed_incidents)
    result.reanalysis_triggers.extend(part.reanalysis_triggers)
    result.recurred_incidents.extend(part.recurred_incidents)


async def _record_firing(
    incidents: IncidentRepository,
    service: str,
    alert: WebhookAlert,
    *,
    now: datetime,
    result: IngestResult,
    actor: str,
    lifecycle: LifecycleConfig,
) -> None:
    known = await incidents.get_alert(alert.fingerprint, alert.starts_at)
    if known is not None:
        owner = await incidents.get(known.incident_id)
        if known.status == "firing" and not is_final(owner):
            result.duplicate += 1  # the incident it belongs to is still going on
            return
        if known.status == "firing" and not recurrence_due(owner, now=now, grace=lifecycle.recurrence_grace):
            # Still firing after its incident ended: within the grace after a verified recovery, the
            # tail of the fault that was fixed; after a close without action, the same fault.
            result.duplicate += 1
            return
        if known.status == "firing":
            await _record_recurrence(incidents, owner, alert, now=now, result=result, actor=actor)
            return
        # It had resolved and fires again with the same identity: a new alert for the service.
        firing_again = True
    else:
        firing_again = False
    await _record_new_alert(
        incidents,
        service,
        alert,
        now=now,
        result=result,
        lifecycle=lifecycle,
        firing_again=firing_again,
        actor=actor,
    )


async def _record_recurrence(
    incidents: IncidentRepository,
    previous: Incident,
    alert: WebhookAlert,
    *,
    now: datetime,
    result: IngestResult,
    actor: str,
) -> None:
    name = alert.labels["alertname"]
    recovered = previous.verified_at or previous.resolved_at or now
    reason = (
        f"{name} still firing {int((now - recovered).total_seconds())}s after incident {previous.id}'s "
        "recovery was verified"
    )
    rows = list(await incidents.list_alert_records(alert.fingerprint, alert.starts_at))
    incident, opened = await open_following(
        incidents, previous, rows[-1:], relation=Relation.RECURRED, reason=reason, now=now, actor=actor
    )
    result.new += 1
    if opened:
        result.opened_incidents.append(incident.id)
        result.recurred_incidents.append(incident.id)
        log.info(
            "incident recurred after resolution: %s",
            reason,
            extra={"incident_id": incident.id, "previous_incident_id": previous.id},
        )
    else:
        result.joined_incidents.append(incident.id)


async def _record_new_alert(
    incidents: IncidentRepository,
    service: str,
    alert: WebhookAlert,
    *,
    now: datetime,
    result: IngestResult,
    lifecycle: LifecycleConfig,
    firing_again: bool,
    actor: str,
) -> None:
    name = alert.labels["alertname"]
    active = await incidents.get_active_by_service(service, for_update=True)
    superseded: Incident | None = None
    if active is not None and held_too_long(active, now=now, limit=lifecycle.escalated_hold_limit):
        held = int(lifecycle.escalated_hold_limit.total_seconds() // 60)
        await supersede_escalated(
            incidents,
            active,
            now=now,
            reason=f"escalated for more than {held} min when {name} fired; a new incident takes it",
            actor=actor,
        )
        result.closed_incidents.append(active.id)
        superseded, active = active, None
    names_before = (
        {row.alertname for row in await incidents.list_alerts(active.id)} if active is not None else set()
    )
    all_resolved_before = active is not None and await incidents.count_firing_alerts(active.id) == 0
    incident, opened = await incidents.open(
        service,
        now=now,
        severity=alert.labels.get("severity"),
        summary=alert.annotations.get("summary"),
        alert_fired_at=alert.starts_at,
        actor=actor,
        message=f"{name} firing for {service}" + (" again" if firing_again else ""),
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
    if not inserted:
        # A concurrent delivery of the same alert won the race, or (fired again) it is already part of
        # this incident: it is firing again there.
        known = await incidents.get_alert(alert.fingerprint, alert.starts_at)
        if not firing_again or known is None or known.incident_id != incident.id or known.status == "firing":
            result.duplicate += 1
            return
        known.status, known.ends_at = "firing", None
    result.new += 1
    if opened:
        result.opened_incidents.append(incident.id)
        if superseded is not None:
            incident.previous_incident_id = superseded.id
            incident.previous_relation = Relation.SUPERSEDED.value
            await incidents.events.add(
                superseded.id,
                "incident.followed",
                f"incident {incident.id} {Relation.SUPERSEDED.describe()}",
                actor=actor,
                data={"incident_id": incident.id, "relation": Relation.SUPERSEDED.value},
                at=now,
            )
        return
    result.joined_incidents.append(incident.id)
    await incidents.events.add(
        incident.id,
        "alert.joined",
        f"{name} firing for {service} " + ("again, " if firing_again else "") + "joined the incident",
        actor=actor,
        data={"fingerprint": alert.fingerprint, "starts_at": alert.starts_at.isoformat()},
        at=now,
    )
    if IncidentStatus(incident.status) not in REANALYSABLE_STATUSES:
        return
    if name not in names_before:
        trigger, reason = Trigger.ALERT_JOINED, f"{name} joined the incident"
    elif all_resolved_before:
        trigger, reason = Trigger.ALERT_REFIRED, f"{name} fired again after every alert had resolved"
    else:
        return
    session = incidents.session
    if await request_reanalysis(session, incident.id, reason, trigger=trigger, actor=actor, now=now):
        result.reanalysed_incidents.append(incident.id)
        result.reanalysis_triggers.append(trigger.value)
        log.info(
            "incident sent back to analysis: %s",
            reason,
            extra={"incident_id": incident.id, "trigger": trigger.value},
        )


async def _record_resolved(
    incidents: IncidentRepository,
    actions: ActionRepository,
    alert: WebhookAlert,
    *,
    now: datetime,
    result: IngestResult,
    actor: str,
) -> None:
    # Every record of the alert: the incident it opened, and any it recurred into.
    records = await incidents.list_alert_records(alert.fingerprint, alert.starts_at)
    if not records:  # never seen firing: Remediator started after it did
        result.ignored += 1
        return
    firing = [record for record in records if record.status == "firing"]
    if not firing:  # a repeated resolved notification
        result.duplicate += 1
        return
    result.resolved += 1
    name = alert.labels["alertname"]
    for stored in firing:
        stored.status = "resolved"
        stored.ends_at = alert.ends_at or now
        incident = await incidents.get(stored.incident_id, for_update=True)
        await incidents.events.add(
            incident.id,
            "alert.resolved",
            f"{name} resolved",
            actor=actor,
            data={"fingerprint": alert.fingerprint, "ends_at": stored.ends_at.isoformat()},
            at=now,
        )
        if await incidents.count_firing_alerts(incident.id) > 0:
            continue
        await _close_if_nothing_in_flight(incidents, actions, incident, now=now, result=result, actor=actor)


async def _close_if_nothing_in_flight(
    incidents: IncidentRepository,
    actions: ActionRepository,
    incident: Incident,
    *,
    now: datetime,
    result: IngestResult,
    actor: str,
) -> None:
    status = IncidentStatus(incident.status)
    if status not in ACTIVE_STATUSES:
        return
    if status in CLOSED_WHEN_ALERTS_RESOLVE:
        cancelled = await actions.cancel_queued_for_incident(incident.id, now=now)
        reason = "recovered on its own: every alert resolved before any action"
        await incidents.transition(
            incident,
            IncidentStatus.CLOSED,
            actor=actor,
            message=reason,
            now=now,
            reason=reason,
            data={"cancelled_actions": cancelled} if cancelled else None,
        )
        result.closed_incidents.append(incident.id)
    elif status is IncidentStatus.ESCALATED:
        await incidents.events.add(
            incident.id,
            "alert.all_resolved",
            "every alert resolved; the incident closes after the grace unless an alert fires again",
            actor=actor,
            at=now,
        )
    else:
        await incidents.events.add(
            incident.id,
            "alert.all_resolved",
            f"every alert resolved while the incident is {status.value}; verification decides the outcome",
            actor=actor,
            at=now,
        )
