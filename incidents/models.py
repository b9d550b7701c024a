"""SQLAlchemy models of the incident store.

Tables: `incidents` (one per problem), `incident_alerts` (every distinct alert that joined it, unique
by fingerprint + startsAt: this is what makes webhook delivery idempotent), `actions` (what the
actuator is asked to do, claimed with a lease) and `incident_events` (the append-only audit trail).

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

    __table_args__ = (UniqueConstraint("fingerprint", "starts_at", name="uq_incident_alerts_identity"),)


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
