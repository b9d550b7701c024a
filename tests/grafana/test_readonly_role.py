"""Migrations 0002 and 0003: the read-only role Grafana reads the incident store with, and its logins'
read-only transactions and statement timeout, on real PostgreSQL.

Roles belong to the whole PostgreSQL server, and the session's database already grants to the default
`remediator_readonly`; so the tests that create and drop roles give the migration names of their own
(the Alembic config attributes it reads) and drop whatever they created.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import Connection, make_url

from incidents import Store, StoreConfig
from incidents.migrate import alembic_config, current_revision, head_revision
from tests.support.databases import (
    admin_dsn,
    create_scratch_postgres_database,
    drop_scratch_postgres_database,
)

pytestmark = pytest.mark.integration

TABLES = ("incidents", "incident_alerts", "actions", "incident_events")
MARKER_PREFIX = "Created by Remediator migration 0002"


@dataclass(frozen=True)
class Roles:
    readonly: str
    login: str


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def migrate(url: str, action: str, revision: str, roles: Roles | None) -> None:
    """Run the migrations on `url` as its user, with the role names given to migration 0002."""
    store = Store.from_config(StoreConfig(url=url, pool_size=1))

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        if roles is not None:
            config.attributes["grafana_readonly_role"] = roles.readonly
            config.attributes["grafana_login_role"] = roles.login
        getattr(command, action)(config, revision)

    try:
        async with store.engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await store.dispose()


def in_database(dsn: str, url: str) -> str:
    """`dsn`'s server and credentials, `url`'s database."""
    return make_url(dsn).set(database=make_url(url).database).render_as_string(hide_password=False)


async def revision_of(url: str) -> str | None:
    store = Store.from_config(StoreConfig(url=url, pool_size=1))
    try:
        return await current_revision(store)
    finally:
        await store.dispose()


async def admin() -> asyncpg.Connection:
    return await asyncpg.connect(admin_dsn(), timeout=5)


async def role(name: str) -> asyncpg.Record | None:
    connection = await admin()
    try:
        return await connection.fetchrow(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, shobj_description(oid, 'pg_authid') AS comment "
            "FROM pg_roles WHERE rolname = $1",
            name,
        )
    finally:
        await connection.close()


async def is_member(member: str, group: str) -> bool:
    connection = await admin()
    try:
        return bool(await connection.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", member, group))
    finally:
        await connection.close()


async def drop_roles(*names: str) -> None:
    connection = await admin()
    try:
        for name in names:
            await connection.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await connection.close()


async def assert_reads_only(url: str, readonly: str) -> None:
    """As `readonly`: every table can be read, none can be written, and so can a table the store's
    owner creates later (a later migration)."""
    connection = await asyncpg.connect(in_database(admin_dsn(), url))
    try:
        owner = await connection.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'incidents'")
        await connection.execute(f'SET ROLE "{owner}"')
        await connection.execute("CREATE TABLE added_by_a_later_migration (x int)")
        await connection.execute("RESET ROLE")
        for table in (*TABLES, "added_by_a_later_migration"):
            async with connection.transaction():
                await connection.execute(f'SET LOCAL ROLE "{readonly}"')
                assert await connection.fetchval("SELECT current_user") == readonly
                await connection.fetch(f"SELECT * FROM {table} LIMIT 1")
        for statement in (
            "INSERT INTO incidents (service, status, origin, detected_at, created_at, updated_at, "
            "analysis_attempts) VALUES ('s', 'open', 'alert', now(), now(), now(), 0)",
            "UPDATE incidents SET status = 'closed'",
            "DELETE FROM actions",
            "INSERT INTO added_by_a_later_migration VALUES (1)",
            "TRUNCATE incident_events",
            "CREATE TABLE sneaky (x int)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with connection.transaction():
                    await connection.execute(f'SET LOCAL ROLE "{readonly}"')
                    await connection.execute(statement)
        await connection.execute("DROP TABLE added_by_a_later_migration")
    finally:
        await connection.close()


async def grants_in(url: str, readonly: str) -> dict[str, bool]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        # CONNECT and schema USAGE are PUBLIC's by default: look for the role's own ACL entries.
        found = {
            "connect": await connection.fetchval(
                "SELECT $1 IN (SELECT grantee::regrole::text FROM pg_database, aclexplode(datacl) "
                "WHERE datname = current_database() AND privilege_type = 'CONNECT')",
                readonly,
            ),
            "usage": await connection.fetchval(
                "SELECT $1 IN (SELECT grantee::regrole::text FROM pg_namespace, aclexplode(nspacl) "
                "WHERE nspname = current_schema() AND privilege_type = 'USAGE')",
                readonly,
            ),
            "default acl": await connection.fetchval(
                "SELECT $1 IN (SELECT grantee::regrole::text FROM pg_default_acl, aclexplode(defaclacl) "
                "WHERE privilege_type = 'SELECT')",
                readonly,
            ),
        }
        for table in TABLES:
            if await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                found[table] = await connection.fetchval(
                    "SELECT has_table_privilege($1, $2, 'SELECT')", readonly, table
                )
        return found
    finally:
        await connection.close()


@pytest.fixture
def roles() -> Roles:
    suffix = uuid.uuid4().hex[:10]
    return Roles(readonly=f"rt_readonly_{suffix}", login=f"rt_grafana_{suffix}")


@pytest.fixture
async def scratch_database(roles: Roles) -> AsyncIterator[str]:
    url = await create_scratch_postgres_database()
    try:
        yield url
    finally:
        await drop_scratch_postgres_database(url)
        await drop_roles(roles.login, roles.readonly)


async def test_the_session_database_grants_the_default_role_read_only(postgres_url: str) -> None:
    readonly, login = await role("remediator_readonly"), await role("remediator_grafana")
    assert readonly is not None and not readonly["rolcanlogin"] and not readonly["rolsuper"]
    assert login is not None and login["rolcanlogin"] and not login["rolsuper"] and not login["rolcreaterole"]
    assert await is_member("remediator_grafana", "remediator_readonly")
    await assert_reads_only(postgres_url, "remediator_readonly")


async def test_upgrade_creates_the_roles_and_downgrade_drops_them(
    scratch_database: str, roles: Roles
) -> None:
    await migrate(scratch_database, "upgrade", "0001", roles)
    assert await role(roles.readonly) is None
    await migrate(scratch_database, "upgrade", "head", roles)

    readonly, login = await role(roles.readonly), await role(roles.login)
    assert readonly is not None and not readonly["rolcanlogin"]
    assert readonly["comment"].startswith(MARKER_PREFIX)
    assert login is not None and login["rolcanlogin"] and login["comment"].startswith(MARKER_PREFIX)
    assert await is_member(roles.login, roles.readonly)
    assert await grants_in(scratch_database, roles.readonly) == {
        "connect": True,
        "usage": True,
        "default acl": True,
        **dict.fromkeys(TABLES, True),
    }
    await assert_reads_only(scratch_database, roles.readonly)

    # The login role, given a password, connects and reads; it writes nothing.
    administrator = await admin()
    await administrator.execute(f"ALTER ROLE \"{roles.login}\" PASSWORD 'grafana-test'")
    await administrator.close()
    login_url = make_url(asyncpg_dsn(scratch_database)).set(username=roles.login, password="grafana-test")
    grafana = await asyncpg.connect(login_url.render_as_string(hide_password=False))
    try:
        assert await grafana.fetchval("SELECT count(*) FROM incidents") == 0
        # Refused twice over: its transactions are read-only by default (0003), and, since a session
        # may turn that default off, it has no grant to write either (0002).
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await grafana.execute("DELETE FROM incidents")
        await grafana.execute("SET default_transaction_read_only = off")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await grafana.execute("DELETE FROM incidents")
    finally:
        await grafana.close()

    await migrate(scratch_database, "downgrade", "0001", roles)
    assert await role(roles.readonly) is None and await role(roles.login) is None
    assert await revision_of(scratch_database) == "0001"

    # Again, and all the way down: each step undoes exactly its own work.
    await migrate(scratch_database, "upgrade", "head", roles)
    assert await role(roles.readonly) is not None
    await migrate(scratch_database, "downgrade", "base", roles)
    assert await role(roles.readonly) is None and await role(roles.login) is None


async def test_roles_shared_by_two_databases_outlive_one_downgrade(
    scratch_database: str, roles: Roles
) -> None:
    other = await create_scratch_postgres_database()
    try:
        await migrate(scratch_database, "upgrade", "head", roles)
        await migrate(other, "upgrade", "head", roles)
        await migrate(scratch_database, "downgrade", "0001", roles)
        # Gone from this database, kept for the other one.
        assert await grants_in(scratch_database, roles.readonly) == {
            "connect": False,
            "usage": False,
            "default acl": False,
            **dict.fromkeys(TABLES, False),
        }
        assert await role(roles.readonly) is not None and await role(roles.login) is not None
        await assert_reads_only(other, roles.readonly)
        await migrate(other, "downgrade", "0001", roles)
        assert await role(roles.readonly) is None and await role(roles.login) is None
    finally:
        await drop_scratch_postgres_database(other)


async def test_a_migrating_role_without_createrole_warns_and_still_migrates(
    roles: Roles, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's owner may not create roles: the migration says what to run, and carries on."""
    migrator, password = f"rt_migrator_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    database = f"remediator_test_{uuid.uuid4().hex[:12]}"
    administrator = await admin()
    try:
        await administrator.execute(f"CREATE ROLE \"{migrator}\" LOGIN NOCREATEROLE PASSWORD '{password}'")
        await administrator.execute(f'CREATE DATABASE "{database}" OWNER "{migrator}"')
        url = (
            make_url(admin_dsn())
            .set(username=migrator, password=password, database=database)
            .render_as_string(hide_password=False)
        )

        with caplog.at_level(logging.WARNING, logger="incidents.migrations"):
            await migrate(url, "upgrade", "head", roles)
        assert await role(roles.readonly) is None and await role(roles.login) is None
        (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert f'CREATE ROLE "{roles.readonly}" NOLOGIN' in warning
        assert f'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "{roles.readonly}"' in warning
        assert f'then as "{migrator}", the owner of the tables: GRANT CONNECT ON DATABASE' in warning
        assert (
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "public" GRANT SELECT ON TABLES TO "{roles.readonly}"'
            in warning
        )
        assert await revision_of(url) == head_revision()

        # A DBA made the group role: the owner grants to it, and a downgrade leaves the role alone.
        await administrator.execute(f'CREATE ROLE "{roles.readonly}" NOLOGIN')
        caplog.clear()
        await migrate(url, "downgrade", "0001", roles)
        with caplog.at_level(logging.WARNING, logger="incidents.migrations"):
            await migrate(url, "upgrade", "head", roles)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert await role(roles.login) is None  # not ours to make: the group role is the DBA's
        assert (await grants_in(url, roles.readonly))["incidents"] is True
        await assert_reads_only(url, roles.readonly)

        # The DBA's login joins the group: 0003 may not change another role's settings without
        # CREATEROLE, so it says what to run instead of failing.
        await administrator.execute(f'CREATE ROLE "{roles.login}" LOGIN IN ROLE "{roles.readonly}"')
        await migrate(url, "downgrade", "0002", roles)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="incidents.migrations"):
            await migrate(url, "upgrade", "head", roles)
        (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert (
            f'ALTER ROLE "{roles.login}" IN DATABASE "{database}" SET statement_timeout = \'10s\'' in warning
        )
        assert "default_transaction_read_only = 'on'" in warning
        assert await revision_of(url) == head_revision()
        await migrate(url, "downgrade", "0001", roles)
        assert await role(roles.readonly) is not None
        assert (await grants_in(url, roles.readonly))["incidents"] is False
    finally:
        await administrator.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await administrator.close()
        await drop_roles(roles.login, roles.readonly, migrator)


async def test_sqlite_has_no_roles_and_migrates_both_ways(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/incidents.db"
    await migrate(url, "upgrade", "head", None)
    await migrate(url, "downgrade", "0001", None)
    await migrate(url, "upgrade", "head", None)
    assert await revision_of(url) == head_revision()


async def login_settings(url: str, login: str, password: str) -> dict[str, str]:
    login_url = make_url(asyncpg_dsn(url)).set(username=login, password=password)
    connection = await asyncpg.connect(login_url.render_as_string(hide_password=False))
    try:
        return {
            name: await connection.fetchval(f"SHOW {name}")
            for name in ("default_transaction_read_only", "statement_timeout")
        }
    finally:
        await connection.close()


async def test_grafana_logins_read_in_read_only_transactions_with_a_statement_timeout(
    scratch_database: str, roles: Roles
) -> None:
    """Migration 0003: set on every login of the group, in this database only, undone by its downgrade."""
    other_login = f"{roles.login}_extra"
    await migrate(scratch_database, "upgrade", "0002", roles)
    administrator = await admin()
    try:
        await administrator.execute(f"ALTER ROLE \"{roles.login}\" PASSWORD 'grafana-test'")
        # A login an administrator made and added to the group: it gets the same settings.
        await administrator.execute(
            f'CREATE ROLE "{other_login}" LOGIN PASSWORD \'grafana-test\' IN ROLE "{roles.readonly}"'
        )
        before = await login_settings(scratch_database, roles.login, "grafana-test")
        assert before == {"default_transaction_read_only": "off", "statement_timeout": "0"}

        await migrate(scratch_database, "upgrade", "head", roles)
        for login in (roles.login, other_login):
            settings = await login_settings(scratch_database, login, "grafana-test")
            assert settings == {"default_transaction_read_only": "on", "statement_timeout": "10s"}
        # Read-only even where PUBLIC's privileges would let it write: temporary tables.
        login_url = make_url(asyncpg_dsn(scratch_database)).set(username=roles.login, password="grafana-test")
        grafana = await asyncpg.connect(login_url.render_as_string(hide_password=False))
        try:
            assert await grafana.fetchval("SELECT count(*) FROM incidents") == 0
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await grafana.execute("CREATE TEMPORARY TABLE scratch (x int)")
        finally:
            await grafana.close()
        # Only in this database: the same login elsewhere on the server is not affected.
        default_db = await login_settings(admin_dsn(), roles.login, "grafana-test")
        assert default_db == {"default_transaction_read_only": "off", "statement_timeout": "0"}

        await migrate(scratch_database, "downgrade", "0002", roles)
        after = await login_settings(scratch_database, roles.login, "grafana-test")
        assert after == {"default_transaction_read_only": "off", "statement_timeout": "0"}
        assert await revision_of(scratch_database) == "0002"
    finally:
        await administrator.execute(f'DROP ROLE IF EXISTS "{other_login}"')
        await administrator.close()


async def test_the_session_database_limits_the_default_grafana_login(postgres_url: str) -> None:
    administrator = await admin()
    try:
        rows = await administrator.fetch(
            "SELECT unnest(s.setconfig) AS setting FROM pg_db_role_setting AS s "
            "JOIN pg_roles AS r ON r.oid = s.setrole JOIN pg_database AS d ON d.oid = s.setdatabase "
            "WHERE r.rolname = 'remediator_grafana' AND d.datname = $1",
            make_url(postgres_url).database,
        )
    finally:
        await administrator.close()
    assert {row["setting"] for row in rows} == {"default_transaction_read_only=on", "statement_timeout=10s"}
