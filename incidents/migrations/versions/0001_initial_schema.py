"""Initial schema: incidents, incident_alerts, actions, incident_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE = (
    "status IN ('acting', 'analyzing', 'awaiting_approval', 'decided', 'escalated', "
    "'open', 'queued', 'suppressed', 'verifying')"
)
RUNNING = "status = 'running'"


def json_type() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def id_type() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_reason", sa.Text()),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(32)),
        sa.Column("summary", sa.Text()),
        sa.Column("context", json_type()),
        sa.Column("proposed_decision", json_type()),
        sa.Column("decision", json_type()),
        sa.Column("engine", sa.String(32)),
        sa.Column("confidence", sa.Float()),
        sa.Column("policy_verdict", sa.String(32)),
        sa.Column("policy_reason", sa.Text()),
        sa.Column("engine_fallback_reason", sa.Text()),
        sa.Column("llm_usage", json_type()),
        sa.Column("error_rate", sa.Float()),
        ts("fault_started_at"),
        sa.Column("fault_started_source", sa.String(32)),
        ts("alert_fired_at"),
        ts("detected_at", nullable=False),
        ts("decided_at"),
        ts("action_started_at"),
        ts("mitigated_at"),
        ts("verified_at"),
        ts("resolved_at"),
        ts("created_at", nullable=False),
        ts("updated_at", nullable=False),
        sa.Column("mttr_seconds", sa.Float()),
        sa.Column("mttr_basis", sa.Text()),
        sa.Column("time_to_detect_seconds", sa.Float()),
        sa.Column("time_to_decide_seconds", sa.Float()),
        sa.Column("time_to_mitigate_seconds", sa.Float()),
        sa.Column("time_to_verify_seconds", sa.Float()),
        sa.Column("lease_owner", sa.String(128)),
        ts("lease_expires_at"),
        sa.Column("analysis_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_index("ix_incidents_detected_at", "incidents", ["detected_at"])
    op.create_index("ix_incidents_status_detected_at", "incidents", ["status", "detected_at"])
    op.create_index(
        "uq_incidents_active_service",
        "incidents",
        ["service"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )

    op.create_table(
        "actions",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("incident_id", id_type()),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("params", json_type(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        ts("lease_expires_at"),
        sa.Column("result", json_type()),
        sa.Column("error", sa.Text()),
        ts("created_at", nullable=False),
        ts("started_at"),
        ts("applied_at"),
        ts("finished_at"),
        ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_actions_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actions")),
    )
    op.create_index("ix_actions_incident_id", "actions", ["incident_id"])
    op.create_index("ix_actions_status_created_at", "actions", ["status", "created_at"])
    op.create_index(
        "uq_actions_running_service",
        "actions",
        ["service"],
        unique=True,
        postgresql_where=sa.text(RUNNING),
        sqlite_where=sa.text(RUNNING),
    )

    op.create_table(
        "incident_alerts",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("incident_id", id_type(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        ts("starts_at", nullable=False),
        sa.Column("alertname", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(32)),
        sa.Column("labels", json_type(), nullable=False),
        sa.Column("annotations", json_type(), nullable=False),
        sa.Column("generator_url", sa.Text()),
        ts("received_at", nullable=False),
        ts("ends_at"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_incident_alerts_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_alerts")),
        sa.UniqueConstraint("fingerprint", "starts_at", name="uq_incident_alerts_identity"),
    )
    op.create_index("ix_incident_alerts_incident_id", "incident_alerts", ["incident_id"])

    op.create_table(
        "incident_events",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("incident_id", id_type(), nullable=False),
        ts("at", nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", json_type()),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_incident_events_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_events")),
    )
    op.create_index("ix_incident_events_at", "incident_events", ["at"])
    op.create_index("ix_incident_events_incident_id_id", "incident_events", ["incident_id", "id"])

    # The timeline is an audit trail: the database itself refuses to change or delete a line.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION incident_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'incident_events is append-only (% refused)', TG_OP;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER incident_events_append_only BEFORE UPDATE OR DELETE ON incident_events "
            "FOR EACH ROW EXECUTE FUNCTION incident_events_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER incident_events_no_{operation.lower()} BEFORE {operation} "
                "ON incident_events BEGIN "
                f"SELECT RAISE(ABORT, 'incident_events is append-only ({operation} refused)'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS incident_events_append_only ON incident_events")
        op.execute("DROP FUNCTION IF EXISTS incident_events_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS incident_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS incident_events_no_delete")
    op.drop_table("incident_events")
    op.drop_table("incident_alerts")
    op.drop_table("actions")
    op.drop_table("incidents")
