"""Read-only access to the incident store for Grafana (PostgreSQL only).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Grafana's PostgreSQL datasource runs whatever SQL a dashboard holds, so it must connect as a role that
can only read. On PostgreSQL this migration sets up two roles; on SQLite it does nothing (Grafana has
no datasource for the SQLite store here).

    remediator_readonly   NOLOGIN group role: CONNECT on this database, USAGE on its schema, SELECT on
                          every table in it, and SELECT on the tables later migrations create
                          (ALTER DEFAULT PRIVILEGES), so no future migration needs a GRANT of its own.
    remediator_grafana    LOGIN role, member of remediator_readonly, created without a password.

Why the migration creates the login role, and without a password. A password in a migration would be
a secret in the repository, or one more input every `remediator db upgrade` must be given. A role
without a password cannot pass password authentication at all (PostgreSQL: "password authentication
will always fail for that user"), so creating it opens nothing; where the server trusts local
connections (the development machines, `remediator up`) Grafana can use it at once, and anywhere else
an operator sets a password once and hands it to Grafana as GRAFANA_DB_PASSWORD:

    ALTER ROLE remediator_grafana PASSWORD '...';

Grafana never gets the credentials of the role that owns the tables.

Roles belong to the whole PostgreSQL cluster, not to one database, which shapes the rest:

- Creating them needs CREATEROLE. Without it the migration does not fail: it logs a warning with the
  SQL to run by hand (the roles by a role with CREATEROLE, the grants by the owner of the tables).
  When the group role already exists (a database administrator created it), the migration grants
  this database's privileges to it: that needs only ownership of the tables.
- Roles created here carry a comment saying so. The downgrade revokes this database's privileges,
  then drops only roles that carry the comment, and only when no other database on the cluster still
  grants anything to the group role (PostgreSQL refuses the DROP ROLE; the refusal is caught and the
  roles stay for the other databases). A group role someone else created is never dropped, and the
  login role is managed only alongside a group role this migration created.
- The names can be changed through Alembic config attributes `grafana_readonly_role` and
  `grafana_login_role`; tests use that to work on roles of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("incidents.migrations")

READONLY_ROLE = "remediator_readonly"
LOGIN_ROLE = "remediator_grafana"
MARKER = "Created by Remediator migration 0002 (read-only access for Grafana); its downgrade drops it."

INSUFFICIENT_PRIVILEGE = "42501"
DUPLICATE_OBJECT = "42710"
UNIQUE_VIOLATION = "23505"
DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"


# A NamedTuple, not a dataclass: Alembic loads this file without registering it as a module, and
# dataclasses look their module up.
class Names(NamedTuple):
    """Quoted identifiers for every object the statements name (and the two role names as given)."""

    readonly: str
    login: str
    readonly_raw: str
    login_raw: str
    schema: str
    database: str
    migrator: str


def _names(bind: Connection) -> Names:
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    readonly = str(attributes.get("grafana_readonly_role", READONLY_ROLE))
    login = str(attributes.get("grafana_login_role", LOGIN_ROLE))
    schema, database, migrator = bind.execute(
        sa.text("SELECT current_schema(), current_database(), current_user")
    ).one()
    quote = bind.dialect.identifier_preparer.quote_identifier
    return Names(
        readonly=quote(readonly),
        login=quote(login),
        readonly_raw=readonly,
        login_raw=login,
        schema=quote(schema),
        database=quote(database),
        migrator=quote(migrator),
    )


def _grants(names: Names) -> list[str]:
    return [
        f"GRANT CONNECT ON DATABASE {names.database} TO {names.readonly}",
        f"GRANT USAGE ON SCHEMA {names.schema} TO {names.readonly}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {names.schema} TO {names.readonly}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {names.schema} GRANT SELECT ON TABLES TO {names.readonly}",
    ]


def _revokes(names: Names) -> list[str]:
    return [
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {names.schema} REVOKE SELECT ON TABLES FROM {names.readonly}",
        f"REVOKE SELECT ON ALL TABLES IN SCHEMA {names.schema} FROM {names.readonly}",
        f"REVOKE USAGE ON SCHEMA {names.schema} FROM {names.readonly}",
        f"REVOKE CONNECT ON DATABASE {names.database} FROM {names.readonly}",
    ]


def _manual_sql(names: Names) -> str:
    """What to run by hand when the migrating role may not create roles: the roles need CREATEROLE,
    the grants the owner of the tables (the migrating role itself)."""
    roles = [
        f"CREATE ROLE {names.readonly} NOLOGIN",
        f"CREATE ROLE {names.login} LOGIN PASSWORD '<password for Grafana>' IN ROLE {names.readonly}",
    ]
    return (
        f"as a role with CREATEROLE: {'; '.join(roles)}; "
        f"then as {names.migrator}, the owner of the tables: {'; '.join(_grants(names))};"
    )


def _sqlstate(error: sa.exc.DBAPIError) -> str | None:
    original = error.orig
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


def _attempt(bind: Connection, statement: str, *, tolerate: frozenset[str]) -> str | None:
    """Run `statement` in a savepoint. None when it worked; the SQLSTATE when it failed with one of
    `tolerate` (the savepoint keeps the migration's transaction usable); anything else is raised."""
    try:
        with bind.begin_nested():
            bind.execute(sa.text(statement))
    except sa.exc.DBAPIError as error:
        state = _sqlstate(error)
        if state in tolerate:
            return state
        raise
    return None


def _role_exists(bind: Connection, name: str) -> bool:
    found = bind.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name}).first()
    return found is not None


def _created_here(bind: Connection, name: str) -> bool:
    comment = bind.execute(
        sa.text("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = :name"),
        {"name": name},
    ).scalar()
    return comment == MARKER


def _create_role(bind: Connection, quoted: str, raw: str, options: str) -> bool | None:
    """Create the role with the marker comment. True: created; False: it exists (perhaps created
    concurrently by another database's migration); None: not allowed to create roles."""
    if _role_exists(bind, raw):
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text(f"CREATE ROLE {quoted} {options}"))
            bind.execute(sa.text(f"COMMENT ON ROLE {quoted} IS '{MARKER}'"))
    except sa.exc.DBAPIError as error:
        state = _sqlstate(error)
        if state == INSUFFICIENT_PRIVILEGE:
            return None
        if state in (DUPLICATE_OBJECT, UNIQUE_VIOLATION):
            return False
        raise
    return True


def _on_postgresql(step: Callable[[Connection], None]) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        step(bind)


def _upgrade(bind: Connection) -> None:
    names = _names(bind)
    if _create_role(bind, names.readonly, names.readonly_raw, "NOLOGIN") is None:
        log.warning(
            "the migrating role may not create roles, so Grafana's read-only role %s was not created; "
            "to set it up by hand, run %s",
            names.readonly_raw,
            _manual_sql(names),
        )
        return
    for grant in _grants(names):
        if _attempt(bind, grant, tolerate=frozenset({INSUFFICIENT_PRIVILEGE})) is not None:
            log.warning("not allowed to run `%s` for Grafana's read-only role; run it as the owner", grant)
    if not _created_here(bind, names.readonly_raw):
        log.info(
            "%s existed before: it got this database's grants; its login roles are left to whoever "
            "created it",
            names.readonly_raw,
        )
        return
    if _create_role(bind, names.login, names.login_raw, "LOGIN") is None:
        log.warning(
            "the migrating role may not create roles, so Grafana's login role %s was not created; "
            "a role with CREATEROLE can run: CREATE ROLE %s LOGIN PASSWORD '<password>' IN ROLE %s;",
            names.login_raw,
            names.login,
            names.readonly,
        )
        return
    if _created_here(bind, names.login_raw):
        grant = f"GRANT {names.readonly} TO {names.login}"
        if _attempt(bind, grant, tolerate=frozenset({INSUFFICIENT_PRIVILEGE})) is not None:
            log.warning("not allowed to run `%s`; run it as a role with CREATEROLE", grant)


def _downgrade(bind: Connection) -> None:
    names = _names(bind)
    if not _role_exists(bind, names.readonly_raw):
        return
    for revoke in _revokes(names):
        if _attempt(bind, revoke, tolerate=frozenset({INSUFFICIENT_PRIVILEGE})) is not None:
            log.warning("not allowed to run `%s`; run it as the owner", revoke)
    if not _created_here(bind, names.readonly_raw):
        return
    refused = _attempt(
        bind,
        f"DROP ROLE {names.readonly}",
        tolerate=frozenset({DEPENDENT_OBJECTS_STILL_EXIST, INSUFFICIENT_PRIVILEGE}),
    )
    if refused == DEPENDENT_OBJECTS_STILL_EXIST:
        log.info(
            "kept roles %s and %s: another database on this server still grants to %s",
            names.readonly_raw,
            names.login_raw,
            names.readonly_raw,
        )
        return
    if refused == INSUFFICIENT_PRIVILEGE:
        log.warning(
            "the migrating role may not drop roles; a role with CREATEROLE can run: "
            "DROP ROLE %s; DROP ROLE %s;",
            names.login,
            names.readonly,
        )
        return
    if _role_exists(bind, names.login_raw) and _created_here(bind, names.login_raw):
        bind.execute(sa.text(f"DROP ROLE {names.login}"))


def upgrade() -> None:
    _on_postgresql(_upgrade)


def downgrade() -> None:
    _on_postgresql(_downgrade)
