"""Incident lifecycle: linked incidents, analysis rounds, and the fault each action answers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

- `incidents.previous_incident_id` / `previous_relation`: an incident opened because an alert was
  still firing after its incident resolved ("recurred_after_resolution"), or that took over from an
  incident escalated for too long ("superseded_escalated").
- `incidents.analysis_round`, `round_started_at`, `round_reason`, `fault_not_before`: an escalated,
  suppressed or waiting incident is analysed again when the world changes under it; each round says
  why, from when, and the earliest its fault can have begun.
- `actions.fault` and `actions.recovery`: the fault an action was decided for (its onset, when it was
  detected and decided) and, once verified, the MTTR and its parts for that fault alone.
- `incident_alerts` identity becomes fingerprint + startsAt + incident: the same still-firing alert
  belongs to the incident it recurred into as well as to the one it first opened.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def json_type() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def id_type() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("incidents", sa.Column("previous_incident_id", id_type()))
    op.add_column("incidents", sa.Column("previous_relation", sa.String(32)))
    op.add_column("incidents", sa.Column("analysis_round", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("incidents", sa.Column("round_started_at", sa.DateTime(timezone=True)))
    op.add_column("incidents", sa.Column("round_reason", sa.Text()))
    op.add_column("incidents", sa.Column("fault_not_before", sa.DateTime(timezone=True)))
    if postgres:
        # SQLite cannot add a constraint to an existing table without rebuilding it (and its partial
        # unique index); the column is only ever written with an existing incident's id.
        op.create_foreign_key(
            op.f("fk_incidents_previous_incident_id_incidents"),
            "incidents",
            "incidents",
            ["previous_incident_id"],
            ["id"],
        )
    op.create_index("ix_incidents_previous_incident_id", "incidents", ["previous_incident_id"])
    op.add_column("actions", sa.Column("fault", json_type()))
    op.add_column("actions", sa.Column("recovery", json_type()))
    with op.batch_alter_table("incident_alerts") as batch:
        batch.drop_constraint("uq_incident_alerts_identity", type_="unique")
        batch.create_unique_constraint(
            "uq_incident_alerts_identity", ["fingerprint", "starts_at", "incident_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("incident_alerts") as batch:
        batch.drop_constraint("uq_incident_alerts_identity", type_="unique")
        batch.create_unique_constraint("uq_incident_alerts_identity", ["fingerprint", "starts_at"])
    op.drop_column("actions", "recovery")
    op.drop_column("actions", "fault")
    op.drop_index("ix_incidents_previous_incident_id", table_name="incidents")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(
            op.f("fk_incidents_previous_incident_id_incidents"), "incidents", type_="foreignkey"
        )
    for column in (
        "fault_not_before",
        "round_reason",
        "round_started_at",
        "analysis_round",
        "previous_relation",
    ):
        op.drop_column("incidents", column)
    op.drop_column("incidents", "previous_incident_id")
