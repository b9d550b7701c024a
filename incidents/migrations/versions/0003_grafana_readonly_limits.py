"""Grafana's logins: read-only transactions and a statement timeout in this database (PostgreSQL only).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Migration 0002 gives the group role `remediator_readonly` SELECT and nothing else, so Grafana cannot
write through a grant. Two things were left to compose's start-up script, so a store set up any other
way had neither: sessions that default to read-only transactions (a second fence, should a grant ever
be too wide) and a statement timeout (a runaway panel query is cut off instead of holding one of the
store's connections and its locks). This migration sets both for every login role that is a member
of the group role:

    ALTER ROLE <login> IN DATABASE <this database> SET default_transaction_read_only = on
    ALTER ROLE <login> IN DATABASE <this database> SET statement_timeout = '10s'

Why per login and per database. A role's own settings apply when that role logs in; a group's
settings are not inherited by its members, so they go on each login. `IN DATABASE` keeps them to the
database this migration runs in: the downgrade then resets exactly what it set, and settings an
administrator made for the whole role (compose's script sets the same two) are left alone; where both
exist, the per-database one is the one in force, with the same values.

Changing another role's settings needs CREATEROLE (with ADMIN OPTION on the role from PostgreSQL 16)
or superuser. Without it the migration does not fail: it logs a warning with the statements to run.
A login made a member of the group after this migration ran needs the same two statements (compose's
start-up script runs them for the login it creates). On SQLite this does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

log = logging.getLogger("incidents.migrations")

READONLY_ROLE = "remediator_readonly"
# Grafana's panels answer in milliseconds on this schema; ten seconds is far past any of them.
STATEMENT_TIMEOUT = "10s"
SETTINGS = (("default_transaction_read_only", "on"), ("statement_timeout", STATEMENT_TIMEOUT))
INSUFFICIENT_PRIVILEGE = "42501"


def _sqlstate(error: sa.exc.DBAPIError) -> str | None:
    original = error.orig
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


def _logins(bind: Connection) -> tuple[str, list[str]]:
    """This database's quoted name, and the quoted names of the group role's login members."""
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    readonly = str(attributes.get("grafana_readonly_role", READONLY_ROLE))
    quote = bind.dialect.identifier_preparer.quote_identifier
    database = bind.execute(sa.text("SELECT current_database()")).scalar_one()
    members = bind.execute(
        sa.text(
            "SELECT member.rolname FROM pg_auth_members AS m "
            "JOIN pg_roles AS grp ON grp.oid = m.roleid "
            "JOIN pg_roles AS member ON member.oid = m.member "
            "WHERE grp.rolname = :group AND member.rolcanlogin ORDER BY member.rolname"
        ),
        {"group": readonly},
    ).scalars()
    return quote(database), [quote(name) for name in members]


def _run_all(bind: Connection, statements: list[str], *, when_refused: str) -> None:
    """Each statement in a savepoint; the ones refused for want of privilege are logged together."""
    refused = []
    for statement in statements:
        try:
            with bind.begin_nested():
                bind.execute(sa.text(statement))
        except sa.exc.DBAPIError as error:
            if _sqlstate(error) != INSUFFICIENT_PRIVILEGE:
                raise
            refused.append(statement)
    if refused:
        log.warning("%s; a role with CREATEROLE can run: %s;", when_refused, "; ".join(refused))


def _upgrade(bind: Connection) -> None:
    database, logins = _logins(bind)
    statements = [
        f"ALTER ROLE {login} IN DATABASE {database} SET {name} = '{value}'"
        for login in logins
        for name, value in SETTINGS
    ]
    _run_all(
        bind,
        statements,
        when_refused="not allowed to make Grafana's logins read-only with a statement timeout",
    )


def _downgrade(bind: Connection) -> None:
    database, logins = _logins(bind)
    statements = [
        f"ALTER ROLE {login} IN DATABASE {database} RESET {name}" for login in logins for name, _ in SETTINGS
    ]
    _run_all(bind, statements, when_refused="not allowed to reset Grafana's logins' settings")


def _on_postgresql(step: Callable[[Connection], None]) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        step(bind)


def upgrade() -> None:
    _on_postgresql(_upgrade)


def downgrade() -> None:
    _on_postgresql(_downgrade)
