"""SQLAlchemy models of the incident store.

Tables: `incidents` (one per problem), `incident_alerts` (every distinct alert that joined it, unique
by fingerprint + startsAt: this is what makes webhook delivery idempotent), `actions` (what the
actuator is asked to do, claimed with a lease) and `incident_events` (the append-only audit trail).
The event outbox: `outbox_events` (written with the change they announce), `notification_deliveries`
(one per event and sink, claimed with a lease) and `notification_attempts` (every try).

Two partial unique indexes carry the invariants the code relies on under concurrency:
at most one active incident per service, and at most one running action per service.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from incidents.contracts import AlertInfo, RecentAction
from incidents.states import ACTIVE_STATUSES, ActionPhase, ActionStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so values are stored as naive UTC and
    made aware again on the way out. Naive datetimes are refused on the way in: they are bugs.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
Identifier = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonDocument, list[Any]: JsonDocument}


ACTIVE_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(ACTIVE_STATUSES)))
_RUNNING_SQL = f"status = '{ActionStatus.RUNNING.value}'"


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Identifier, primary_key=True)
    service: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    status_reason: Mapped[str | None] = mapped_column(Text)
    # "alert" for incidents opened by Alertmanager, "manual" for changes a human asked for.
    origin: Mapped[str] = mapped_column(String(16), default="alert")
    severity: Mapped[str | None] = mapped_column(String(32))
    summary: Mapped[str | None] = mapped_column(Text)

    context: Mapped[dict[str, Any] | None]
    proposed_decision: Mapped[dict[str, Any] | None]  # what the engine answered
    decision: Mapped[dict[str, Any] | None]  # what Remediator does, after the policy guard
    engine: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    policy_verdict: Mapped[str | None] = mapped_column(String(32))
    policy_reason: Mapped[str | None] = mapped_column(Text)
    engine_fallback_reason: Mapped[str | None] = mapped_column(Text)
    llm_usage: Mapped[dict[str, Any] | None]
    error_rate: Mapped[float | None] = mapped_column(Float)

    fault_started_at: Mapped[datetime | None]
    fault_started_source: Mapped[str | None] = mapped_column(String(32))
    alert_fired_at: Mapped[datetime | None]
    detected_at: Mapped[datetime]  # webhook received
    decided_at: Mapped[datetime | None]
    action_started_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]  # reached a final status
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    mttr_seconds: Mapped[float | None] = mapped_column(Float)
    mttr_basis: Mapped[str | None] = mapped_column(Text)
    time_to_detect_seconds: Mapped[float | None] = mapped_column(Float)
    time_to_decide_seconds: Mapped[float | None] = mapped_column(Float)
    time_to_mitigate_seconds: Mapped[float | None] = mapped_column(Float)
    time_to_verify_seconds: Mapped[float | None] = mapped_column(Float)

    # Analysis lease: whoever holds it is collecting evidence and deciding for this incident.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    analysis_attempts: Mapped[int] = mapped_column(Integer, default=0)

    # The incident this one follows: an alert still firing after that one resolved
    # ("recurred_after_resolution"), or one escalated for too long to hold new alerts
    # ("superseded_escalated"). See incidents/lifecycle.py.
    previous_incident_id: Mapped[int | None] = mapped_column(
        Identifier, ForeignKey("incidents.id"), index=True
    )
    previous_relation: Mapped[str | None] = mapped_column(String(32))
    # Analysis rounds: 1 for the analysis the alert started; each re-analysis (the world changed under
    # an escalated, suppressed or waiting incident) adds one. `round_started_at` is when the current
    # round's trigger was seen (None: the alert's own), `round_reason` why it runs, and
    # `fault_not_before` the earliest the fault it analyses can have begun (the previous incident's
    # verified recovery, the previous round's decision): an onset estimate before it is another fault's.
    analysis_round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    round_started_at: Mapped[datetime | None]
    round_reason: Mapped[str | None] = mapped_column(Text)
    fault_not_before: Mapped[datetime | None]

    alerts: Mapped[list[IncidentAlert]] = relationship(
        back_populates="incident", order_by="IncidentAlert.id", lazy="raise"
    )
    actions: Mapped[list[Action]] = relationship(
        back_populates="incident", order_by="Action.id", lazy="raise"
    )

    __table_args__ = (
        Index(
            "uq_incidents_active_service",
            "service",
            unique=True,
            postgresql_where=text(ACTIVE_SQL),
            sqlite_where=text(ACTIVE_SQL),
        ),
        Index("ix_incidents_status_detected_at", "status", "detected_at"),
        Index("ix_incidents_detected_at", "detected_at"),
    )


class IncidentAlert(Base):
    __tablename__ = "incident_alerts"

    id: Mapped[int] = mapped_column(Identifier, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime]
    alertname: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str | None] = mapped_column(String(32))
    labels: Mapped[dict[str, Any]]
    annotations: Mapped[dict[str, Any]]
    generator_url: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]

    incident: Mapped[Incident] = relationship(back_populates="alerts", lazy="raise")

    # An alert belongs once to each incident it is part of: the one it opened, and one it recurred into.
    __table_args__ = (
        UniqueConstraint("fingerprint", "starts_at", "incident_id", name="uq_incident_alerts_identity"),
    )


class Action(Base):
    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Identifier, primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    service: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=ActionStatus.QUEUED.value)
    phase: Mapped[str] = mapped_column(String(16), default=ActionPhase.PENDING.value)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[str] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The fault this action was decided for (`FaultRecord.as_json`), and its MTTR once verified
    # (`actuator.mttr.RecoveryTimes.as_json`): an incident can span two faults, each with its own.
    fault: Mapped[dict[str, Any] | None]
    recovery: Mapped[dict[str, Any] | None]

    incident: Mapped[Incident | None] = relationship(back_populates="actions", lazy="raise")

    __table_args__ = (
        Index(
            "uq_actions_running_service",
            "service",
            unique=True,
            postgresql_where=text(_RUNNING_SQL),
            sqlite_where=text(_RUNNING_SQL),
        ),
        Index("ix_actions_status_created_at", "status", "created_at"),
    )


class IncidentEvent(Base):
    """One line of an incident's timeline. Rows are never updated or deleted (triggers enforce it)."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Identifier, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]

    __table_args__ = (
        Index("ix_incident_events_incident_id_id", "incident_id", "id"),
        Index("ix_incident_events_at", "at"),
    )


class OutboxEvent(Base):
    """An incident change others should hear about, written in the same transaction as the change.

    Rows are the durable record of what happened; the notifier fans each one out to the configured
    sinks (`notification_deliveries`) and stamps `dispatched_at`. `data` holds the incident as it was
    at that moment, so a late delivery still tells what was true then.
    """

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(Identifier, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str | None] = mapped_column(String(32))
    # Nothing was asked of anyone and nothing was done (e.g. recovered on its own): no new noise.
    quiet: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]
    dispatched_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_events_dispatched_at_id", "dispatched_at", "id"),)


class NotificationDelivery(Base):
    """One outbox event on its way to one sink, claimed with a lease like an action."""

    __tablename__ = "notification_deliveries"

    id: Mapped[int] = mapped_column(Identifier, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"))
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    sink: Mapped[str] = mapped_column(String(128))
    # pending (waiting or being sent), delivered, skipped (filtered, or nothing to do), failed (gave up)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # What the sink answered that later deliveries need (a Slack message's channel and ts, ...).
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("event_id", "sink", name="uq_notification_deliveries_event_sink"),
        Index("ix_notification_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notification_deliveries_incident_id_sink_event_id", "incident_id", "sink", "event_id"),
    )


class NotificationAttempt(Base):
    """One try to deliver: when, to which sink, how it went. Append-only."""

    __tablename__ = "notification_attempts"

    id: Mapped[int] = mapped_column(Identifier, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("notification_deliveries.id"), index=True)
    sink: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime]
    # delivered, skipped, retry (will try again), failed (gave up or refused for good)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    owner: Mapped[str] = mapped_column(String(128))


# Rows as the contracts see them.


def recent_action_from_row(action: Action) -> RecentAction:
    params = action.params or {}
    return RecentAction(
        action=action.type,  # type: ignore[arg-type]  # validated by the model
        at=action.created_at,
        target_revision=params.get("target_revision"),
        from_revision=params.get("from_revision"),
        outcome=action.status,
        manual=action.manual,
    )


def primary_alert(alerts: list[IncidentAlert]) -> IncidentAlert:
    """The alert to collect evidence for: firing before resolved, critical before others, oldest first."""

    def rank(alert: IncidentAlert) -> tuple[int, int, Any]:
        return (alert.status != "firing", alert.severity != "critical", alert.starts_at)

    return sorted(alerts, key=rank)[0]


def alert_info(alert: IncidentAlert) -> AlertInfo:
    return AlertInfo(
        name=alert.alertname,
        status="firing" if alert.status == "firing" else "resolved",
        severity=alert.severity,
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        fingerprint=alert.fingerprint,
        labels=alert.labels,
        annotations=alert.annotations,
        generator_url=alert.generator_url,
    )
