"""Event outbox: outbox_events, notification_deliveries, notification_attempts.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02

Every incident change that people or other systems should hear about writes an `outbox_events` row in
the transaction that makes the change. The notifier fans each event out to the configured sinks (one
`notification_deliveries` row per event and sink, claimed with a lease like an action) and records
every try in `notification_attempts`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def json_type() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def id_type() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("incident_id", id_type(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(32)),
        sa.Column("quiet", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        ts("occurred_at", nullable=False),
        sa.Column("data", json_type(), nullable=False),
        ts("dispatched_at"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_outbox_events_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
    )
    op.create_index("ix_outbox_events_incident_id", "outbox_events", ["incident_id"])
    op.create_index("ix_outbox_events_dispatched_at_id", "outbox_events", ["dispatched_at", "id"])

    op.create_table(
        "notification_deliveries",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("event_id", id_type(), nullable=False),
        sa.Column("incident_id", id_type(), nullable=False),
        sa.Column("sink", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        ts("next_attempt_at", nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        ts("lease_expires_at"),
        sa.Column("last_error", sa.Text()),
        sa.Column("result", json_type()),
        ts("created_at", nullable=False),
        ts("updated_at", nullable=False),
        ts("finished_at"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["outbox_events.id"], name=op.f("fk_notification_deliveries_event_id_outbox_events")
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_notification_deliveries_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint("event_id", "sink", name="uq_notification_deliveries_event_sink"),
    )
    op.create_index(
        "ix_notification_deliveries_status_next_attempt_at",
        "notification_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_notification_deliveries_incident_id_sink_event_id",
        "notification_deliveries",
        ["incident_id", "sink", "event_id"],
    )

    op.create_table(
        "notification_attempts",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("delivery_id", id_type(), nullable=False),
        sa.Column("sink", sa.String(128), nullable=False),
        ts("at", nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notification_deliveries.id"],
            name=op.f("fk_notification_attempts_delivery_id_notification_deliveries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_attempts")),
    )
    op.create_index("ix_notification_attempts_delivery_id", "notification_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("notification_attempts")
    op.drop_table("notification_deliveries")
    op.drop_table("outbox_events")
