"""What compose.yaml runs besides the images' own programs, run for real outside containers.

- compose/init-secrets.sh, the tokens Remediator then reads with its own code;
- compose/postgres-init against real PostgreSQL, followed by the real migrations, as Grafana's login;
- the demo-service job, the load generator's shell command and the Python health checks against a
  real Cloud Run emulator (the commands taken from compose.yaml, with the container's paths and
  ports mapped to this machine's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import Connection, make_url

from incidents import Store, StoreConfig
from incidents.migrate import alembic_config
from incidents.runtime import read_secret
from tests.compose.stack_files import (
    COMPOSE_FILE,
    DEMO_SERVICE_SCRIPT,
    INIT_SECRETS,
    POSTGRES_INIT_DIR,
    REPO_ROOT,
    argv,
    interpolate_defaults,
    load_compose,
    services,
    unescape,
)
from tests.prometheus.background import BackgroundProcess, http_get, http_get_json, wait_for
from tests.support.databases import (
    admin_dsn,
    create_scratch_postgres_database,
    drop_scratch_postgres_database,
)
from tests.support.real_parts import free_port, missing_real_part

IMAGE_SCRIPT = "/opt/remediator/compose/demo_service.py"
COMPOSE_EMULATOR = "http://127.0.0.1:8090"
READY_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 60.0


def python_env() -> dict[str, str]:
    """This environment with the test interpreter's bin/ first, so `python` is the project's."""
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


# init-secrets.sh


def secret_files(root: Path) -> dict[str, Path]:
    """Each compose secret's file, relative to a copy of the repository at `root`."""
    return {
        name: root / Path(spec["file"]).relative_to(".") for name, spec in load_compose()["secrets"].items()
    }


def test_init_secrets_creates_every_token_once(tmp_path: Path) -> None:
    (tmp_path / "compose").mkdir()
    script = tmp_path / "compose" / INIT_SECRETS.name
    shutil.copy(INIT_SECRETS, script)

    first = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert first.returncode == 0, first.stderr
    files = secret_files(tmp_path)
    assert set(files) == {"webhook_token", "api_token"}
    tokens = {}
    for name, path in files.items():
        text = path.read_text()
        assert re.fullmatch(r"[0-9a-f]{64}\n", text), f"{name}: {text!r}"
        # Readable by the containers' other users; the folder keeps this machine's other users out.
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        tokens[name] = text.strip()
    assert stat.S_IMODE(files["webhook_token"].parent.stat().st_mode) == 0o700
    assert len(set(tokens.values())) == len(tokens), "each secret gets its own token"

    # Remediator reads them with its own code, the way compose.yaml points it at them.
    environ = {"WEBHOOK_TOKEN_FILE": str(files["webhook_token"])}
    secret = read_secret(environ, "WEBHOOK_TOKEN")
    assert secret is not None and secret.reveal() == tokens["webhook_token"]

    files["api_token"].unlink()
    again = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert again.returncode == 0, again.stderr
    assert files["webhook_token"].read_text().strip() == tokens["webhook_token"], "an existing token is kept"
    assert re.fullmatch(r"[0-9a-f]{64}", files["api_token"].read_text().strip())
    assert files["api_token"].read_text().strip() != tokens["api_token"]
    assert not list(files["api_token"].parent.glob("*.new")), "no half-written file is left behind"


def test_init_secrets_keeps_a_token_brought_by_the_user(tmp_path: Path) -> None:
    (tmp_path / "compose" / "secrets").mkdir(parents=True)
    script = tmp_path / "compose" / INIT_SECRETS.name
    shutil.copy(INIT_SECRETS, script)
    own = tmp_path / "compose" / "secrets" / "webhook-token"
    own.write_text("token-from-a-vault\n")
    result = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert own.read_text() == "token-from-a-vault\n"
    assert f"kept    {own}" in result.stdout


# postgres-init + migrations


async def run_migrations(url: str, *, readonly: str, login: str) -> None:
    """`remediator db upgrade`, with migration 0002's role names set to this test's own."""
    store = Store.from_config(StoreConfig(url=url))

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes.update(
            connection=connection, grafana_readonly_role=readonly, grafana_login_role=login
        )
        command.upgrade(config, "head")

    try:
        async with store.engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await store.dispose()


async def test_grafana_login_reads_every_table_and_writes_none() -> None:
    psql = shutil.which("psql")
    if psql is None:
        missing_real_part("psql", "install PostgreSQL's client (`sudo apt-get install postgresql-client`)")
    scripts = sorted(POSTGRES_INIT_DIR.glob("*.sh"))
    assert scripts, "compose/postgres-init holds the init scripts"
    url = await create_scratch_postgres_database()
    admin = make_url(admin_dsn())
    database = make_url(url).database
    suffix = uuid.uuid4().hex[:10]
    group, login, password = f"ro_{suffix}", f"grafana_{suffix}", f"pw-{suffix}"
    environment = os.environ | {
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "PGPASSWORD": admin.password or "",
        "POSTGRES_USER": admin.username or "postgres",
        "POSTGRES_DB": str(database),
        "GRAFANA_DB_USER": login,
        "GRAFANA_DB_PASSWORD": password,
        "REMEDIATOR_READONLY_ROLE": group,
    }
    try:
        for script in scripts:
            process = await asyncio.create_subprocess_exec(
                "sh", str(script), env=environment, stderr=asyncio.subprocess.PIPE
            )
            _, errors = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
            assert process.returncode == 0, errors.decode()
        # The migration job runs after the init scripts, as the role that owns the database.
        await run_migrations(url, readonly=group, login=login)

        reader = await asyncpg.connect(
            host=admin.host, port=admin.port, user=login, password=password, database=database, timeout=5
        )
        try:
            tables = [
                row["tablename"]
                for row in await reader.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ]
            assert {"incidents", "actions"} <= set(tables)
            for table in tables:
                await reader.fetch(f'SELECT * FROM "{table}" LIMIT 1')
            assert await reader.fetchval("SHOW default_transaction_read_only") == "on"
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await reader.execute("INSERT INTO incidents DEFAULT VALUES")
            # Even with the session made writable, the grants allow reading only.
            await reader.execute("SET default_transaction_read_only = off")
            for table in tables:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await reader.execute(f'DELETE FROM "{table}"')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute("CREATE TABLE grafana_was_here (x int)")
        finally:
            await reader.close()
    finally:
        await drop_scratch_postgres_database(url)
        owner = await asyncpg.connect(admin_dsn(), timeout=5)
        try:
            for role in (login, group):
                await owner.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await owner.close()


def test_postgres_init_scripts_are_mounted_where_the_image_runs_them() -> None:
    postgres = services()["postgres"]
    mounted = {entry.split(":")[1]: entry.split(":")[0] for entry in postgres["volumes"]}
    assert (COMPOSE_FILE.parent / mounted["/docker-entrypoint-initdb.d"]).resolve() == POSTGRES_INIT_DIR
    environment = postgres["environment"]
    assert {"GRAFANA_DB_USER", "GRAFANA_DB_PASSWORD", "POSTGRES_USER", "POSTGRES_DB"} <= set(environment)
    for script in POSTGRES_INIT_DIR.iterdir():
        # The image runs *.sh and *.sql files; anything else there would be ignored silently.
        assert script.suffix in (".sh", ".sql"), script.name


# the emulator, the demo-service job, the load generator and the Python health checks


@contextlib.contextmanager
def emulator(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = BackgroundProcess(
        [sys.executable, "-m", "demo_apps.cloudrun", "--host", "127.0.0.1", "--port", str(port)],
        log_path=tmp_path / "emulator.log",
        cwd=REPO_ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert process.wait_until_ready(f"{url}/healthz", timeout_s=READY_TIMEOUT_S), process.log()
        yield url
    finally:
        process.stop()


def on_this_machine(words: list[str], emulator_url: str) -> list[str]:
    """A command of the Python image, with the image's paths and the emulator's address mapped."""
    mapping = {IMAGE_SCRIPT: str(DEMO_SERVICE_SCRIPT), COMPOSE_EMULATOR: emulator_url}
    return [mapping.get(word, word) for word in words]


def health_command(name: str, port: int) -> list[str]:
    test = services()[name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", word) for word in test[1:]]


def run(words: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        words, env=python_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, **kwargs
    )


def test_python_health_checks_pass_on_200_and_fail_otherwise(tmp_path: Path) -> None:
    closed = free_port()
    with emulator(tmp_path) as url:
        port = int(url.rsplit(":", 1)[1])
        assert run(health_command("emulator", port)).returncode == 0
        for name in ("emulator", "remediator", "loadgen"):
            program = health_command(name, port)[:-1]
            assert program[:2] == ["python", "-c"], f"{name}: python:3.11-slim has no curl or wget"
            assert run([*program, f"{url}/healthz"]).returncode == 0, name
            # Any answer but 2xx (404 here; Remediator's /readyz answers 503) is unhealthy.
            assert run([*program, f"{url}/no-such-path"]).returncode != 0, name
            assert run([*program, f"http://127.0.0.1:{closed}/healthz"]).returncode != 0, name


def test_demo_service_job_deploys_once_and_the_load_generator_finds_it(tmp_path: Path) -> None:
    with emulator(tmp_path) as url:
        job = on_this_machine(argv(services()["demo-service"]), url)
        assert job[:2] == ["python", str(DEMO_SERVICE_SCRIPT)]
        first = run(job)
        assert first.returncode == 0, first.stderr
        uri = first.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", uri), first.stdout

        # The service `remediator up` makes: two ready revisions, the newer one serving.
        targets = http_get_json(f"{url}/sd/targets")
        revisions = sorted(group["labels"]["revision"] for group in targets)
        assert len(revisions) == 2 and all(r.startswith("demo-app-a-") for r in revisions), targets
        status, body = http_get(f"{uri}/")
        assert status == 200 and revisions[-1].encode() in body

        # compose up runs the job again: nothing new is created, the same URL comes back.
        second = run(job)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip().splitlines()[-1] == uri
        assert "already exists" in second.stdout
        assert len(http_get_json(f"{url}/sd/targets")) == 2
        unknown = run(["python", str(DEMO_SERVICE_SCRIPT), "uri", "--endpoint", url, "--service", "nope"])
        assert unknown.returncode == 3

        loadgen = services()["loadgen"]
        words = argv(loadgen)
        assert words[:2] == ["sh", "-c"]
        control_port = free_port()
        script = unescape(words[2]).replace(IMAGE_SCRIPT, str(DEMO_SERVICE_SCRIPT))
        script = script.replace(COMPOSE_EMULATOR, url)
        script = script.replace("--control-port 8089", f"--control-port {control_port}")
        assert str(control_port) in script and url in script
        variables = {key: interpolate_defaults(str(value)) for key, value in loadgen["environment"].items()}
        log_path = tmp_path / "loadgen.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["sh", "-c", script], env=python_env() | variables, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            health = health_command("loadgen", control_port)

            def healthy() -> bool | None:
                assert process.poll() is None, log_path.read_text()
                return True if run(health).returncode == 0 else None

            wait_for("the load generator's health check", healthy, timeout_s=READY_TIMEOUT_S)

            def answered() -> dict[str, Any] | None:
                stats = http_get_json(f"http://127.0.0.1:{control_port}/stats")
                return stats if stats["totals"]["requests"] >= 5 else None

            stats = wait_for("answers from the demo service", answered, timeout_s=READY_TIMEOUT_S)
            assert stats["rate"] == float(variables["LOADGEN_RATE"])
            assert set(stats["revisions"]) <= set(revisions) and stats["revisions"], stats
        finally:
            # `exec` made the load generator the shell's process: the signal reaches it directly.
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, log_path.read_text()
        assert "load generator stopped" in log_path.read_text()
