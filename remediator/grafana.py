"""Grafana for the local stack: what `remediator up` needs to run a provisioned Grafana on 127.0.0.1.

Nothing here starts a process. `prepare_grafana()` writes, under the stack's state directory,

    grafana.ini          127.0.0.1 only, anonymous Viewer access, admin password from a file,
                         data/logs/plugins in the state directory, no analytics, update checks or
                         plugin downloads
    admin-password       GRAFANA_ADMIN_PASSWORD, else the one a previous run chose, else a new one
    provisioning/        a copy of grafana/provisioning/
    dashboards/          a copy of grafana/dashboards/

and returns the argv, environment and health URL to run it with. Every provisioning value comes from
the environment it returns (PROMETHEUS_URL, REMEDIATOR_PG_*, GRAFANA_DB_*, GRAFANA_DASHBOARDS_DIR), the
same variables compose.yaml sets, so the provisioning files are copied, never edited.

The PostgreSQL datasource needs the incident store in PostgreSQL. With the SQLite store (the default
without DATABASE_URL) Grafana gets the Prometheus datasource only:

- the PostgreSQL datasource file is left out;
- dashboards whose panels or variables read the store ("Remediator / Incidents") are left out;
- the other dashboards lose their store annotations, and the annotations Remediator posts to Grafana's
  HTTP API (tagged `remediator`) are switched on in their place.

Grafana reads the store as `remediator_grafana`, the read-only login migration 0002 creates (no
password: enough where PostgreSQL trusts local connections, as on the development machines), or as
GRAFANA_DB_USER / GRAFANA_DB_PASSWORD when they are set.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from incidents import RemediatorError, resolve_database_url
from remediator.binaries import INSTALL_HINTS, find_binary
from remediator.processes import child_environment
from remediator.stackconfig import GRAFANA_DIR

# Grafana 10+ ships one `grafana` binary (`grafana server`); older packages have `grafana-server`.
GRAFANA_BINARIES = ("grafana", "grafana-server")
POSTGRES_UID = "remediator-postgres"
POSTGRES_DATASOURCE_FILE = "remediator-postgres.yaml"
DEFAULT_DB_USER = "remediator_grafana"
# Where packages put Grafana's home (conf/defaults.ini, public/): Debian/RPM, /usr/local builds,
# Homebrew on Apple silicon.
HOME_CANDIDATES = (
    Path("/usr/share/grafana"),
    Path("/usr/local/share/grafana"),
    Path("/opt/homebrew/share/grafana"),
)
PROVISIONING_KINDS = ("alerting", "dashboards", "datasources", "plugins")
# The dashboard Grafana opens on, the first one provisioned.
HOME_DASHBOARDS = ("remediator-incidents.json", "remediator-service-health.json")
# The sslmode values Grafana's PostgreSQL datasource understands.
GRAFANA_SSLMODES = frozenset({"disable", "require", "verify-ca", "verify-full"})


class GrafanaSetupError(RemediatorError):
    """Grafana is installed but cannot be set up (its home directory, or the database URL)."""


@dataclass(frozen=True, kw_only=True)
class StoreConnection:
    """Where Grafana finds the PostgreSQL incident store."""

    host: str
    port: int
    database: str
    sslmode: str

    @classmethod
    def from_database_url(cls, database_url: str | None) -> StoreConnection | None:
        """None for the SQLite store; the host, port, database and sslmode of a PostgreSQL URL."""
        try:
            url: URL = resolve_database_url(database_url)
        except ValueError as exc:
            raise GrafanaSetupError(str(exc)) from None
        if url.get_backend_name() != "postgresql":
            return None
        if not url.database:
            raise GrafanaSetupError("DATABASE_URL names no database for Grafana to read")
        requested = str(url.query.get("sslmode") or url.query.get("ssl") or "disable").lower()
        if requested in ("true", "on", "1"):  # asyncpg's boolean spelling
            requested = "require"
        return cls(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            database=url.database,
            # Grafana has no "prefer" or "allow" (TLS only when the server offers it): those become
            # "disable", which works against any server; ask for "require" where TLS matters.
            sslmode=requested if requested in GRAFANA_SSLMODES else "disable",
        )


@dataclass(frozen=True, kw_only=True)
class GrafanaLaunch:
    argv: list[str]
    env: dict[str, str]
    url: str
    health_url: str
    config_path: Path
    admin_password_file: Path
    # Whether the PostgreSQL datasource (and the dashboards reading it) were provisioned.
    incident_store: bool
    dashboards: tuple[str, ...]


def grafana_binary() -> Path | None:
    """The Grafana server program on PATH (or in the venv's bin/), newest name first."""
    for name in GRAFANA_BINARIES:
        found = find_binary(name)
        if found is not None:
            return found
    return None


def missing_grafana_message() -> str:
    return (
        f"Grafana is not installed (no {' or '.join(GRAFANA_BINARIES)} on PATH), so it was not started: "
        f"{INSTALL_HINTS['grafana-server']}. The dashboards are in grafana/dashboards/."
    )


def find_grafana_home(binary: Path, environ: Mapping[str, str]) -> Path:
    """Grafana's home directory (conf/defaults.ini, public/): GRAFANA_HOME, next to the binary, or
    where packages put it. Grafana itself only looks in its working directory."""
    resolved = binary.resolve()
    candidates = [
        *([Path(environ["GRAFANA_HOME"])] if environ.get("GRAFANA_HOME") else []),
        resolved.parent.parent,  # a release tarball: <home>/bin/grafana
        resolved.parent.parent / "share" / "grafana",  # Homebrew's Cellar layout
        *HOME_CANDIDATES,
    ]
    for candidate in candidates:
        if (candidate / "conf" / "defaults.ini").is_file():
            return candidate
    raise GrafanaSetupError(
        f"found {binary} but not Grafana's home directory (the one holding conf/defaults.ini) in "
        f"{', '.join(str(c) for c in candidates)}: set GRAFANA_HOME to it"
    )


def grafana_argv(binary: Path, *, home: Path, config: Path) -> list[str]:
    command = [str(binary)]
    if binary.name != "grafana-server":
        command.append("server")
    return [*command, "--homepath", str(home), "--config", str(config)]


def datasource_uids(node: Any) -> Iterator[str]:
    """The uid of every datasource reference (`"datasource": {"type": ..., "uid": ...}`) in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict) and "uid" in value:
                yield str(value["uid"])
            else:
                yield from datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_uids(item)


def reads_incident_store(dashboard: dict[str, Any]) -> bool:
    """Whether a panel or a template variable of the dashboard queries the PostgreSQL store."""
    parts = [dashboard.get("panels", []), dashboard.get("templating", {})]
    return POSTGRES_UID in set(datasource_uids(parts))


def without_incident_store(dashboard: dict[str, Any]) -> dict[str, Any]:
    """The dashboard with its store annotations replaced by the ones Remediator posts to Grafana."""
    annotations = []
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if POSTGRES_UID in set(datasource_uids(annotation)):
            continue
        if annotation.get("target", {}).get("type") == "tags":
            annotation = {**annotation, "enable": True}
        annotations.append(annotation)
    return {**dashboard, "annotations": {**dashboard.get("annotations", {}), "list": annotations}}


def with_remediator_url(dashboard: dict[str, Any], remediator_url: str) -> dict[str, Any]:
    """The `remediator_api` variable (the base of the incident links) set to this stack's API."""
    variables = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("name") == "remediator_api":
            variable = {
                **variable,
                "query": remediator_url,
                "current": {"selected": False, "text": remediator_url, "value": remediator_url},
                "options": [{"selected": True, "text": remediator_url, "value": remediator_url}],
            }
        variables.append(variable)
    return {**dashboard, "templating": {**dashboard.get("templating", {}), "list": variables}}


def render_provisioning(
    target: Path,
    *,
    incident_store: bool,
    remediator_url: str | None = None,
    source: Path = GRAFANA_DIR,
) -> tuple[str, ...]:
    """Copy provisioning/ and dashboards/ from `source` into `target` for this store; return the
    uids of the dashboards provisioned. Earlier copies are replaced, never merged."""
    provisioning, dashboards = target / "provisioning", target / "dashboards"
    for old in (provisioning, dashboards):
        if old.exists():
            shutil.rmtree(old)
    shutil.copytree(source / "provisioning", provisioning)
    # Grafana reads these kinds too and logs an error for a missing directory; empty: nothing to add.
    for kind in PROVISIONING_KINDS:
        (provisioning / kind).mkdir(exist_ok=True)
    if not incident_store:
        (provisioning / "datasources" / POSTGRES_DATASOURCE_FILE).unlink()
    dashboards.mkdir(parents=True)
    uids = []
    for path in sorted((source / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        if not incident_store:
            if reads_incident_store(dashboard):
                continue
            dashboard = without_incident_store(dashboard)
        if remediator_url is not None:
            dashboard = with_remediator_url(dashboard, remediator_url)
        (dashboards / path.name).write_text(json.dumps(dashboard, indent=2) + "\n", encoding="utf-8")
        uids.append(str(dashboard["uid"]))
    return tuple(uids)


def admin_password(state_dir: Path, environ: Mapping[str, str]) -> Path:
    """The file holding the admin password: GRAFANA_ADMIN_PASSWORD, else the one already in the state
    directory (Grafana sets it only when it creates its database), else a new random one."""
    path = state_dir / "admin-password"
    given = environ.get("GRAFANA_ADMIN_PASSWORD")
    if given or not path.exists():
        # Created owner-only, never readable by others even for a moment.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(given or secrets.token_urlsafe(18))
    path.chmod(0o600)
    return path


def grafana_ini(*, state_dir: Path, port: int, password_file: Path, home_dashboard: Path | None) -> str:
    home = f"default_home_dashboard_path = {home_dashboard}\n" if home_dashboard is not None else ""
    return f"""\
; Written by `remediator up` (remediator/grafana.py) for this run; edits are overwritten.

[paths]
data = {state_dir / "data"}
logs = {state_dir / "logs"}
plugins = {state_dir / "plugins"}
provisioning = {state_dir / "provisioning"}

[server]
protocol = http
http_addr = 127.0.0.1
http_port = {port}
root_url = http://127.0.0.1:{port}/

[log]
; stdout, which the stack writes to its grafana.log
mode = console
level = info

[security]
admin_user = admin
admin_password = $__file{{{password_file}}}
disable_gravatar = true

[auth.anonymous]
; Looking needs no login; changing anything needs the admin password.
enabled = true
org_name = Main Org.
org_role = Viewer

[users]
allow_sign_up = false

[analytics]
reporting_enabled = false
check_for_updates = false
check_for_plugin_updates = false
feedback_links_enabled = false

[news]
news_feed_enabled = false

[plugins]
; No downloads at start: everything the dashboards use is built in.
preinstall_disabled = true

[snapshots]
external_enabled = false

[date_formats]
default_timezone = utc

[dashboards]
{home}"""


def prepare_grafana(
    binary: Path,
    *,
    state_dir: Path,
    port: int,
    prometheus_url: str,
    database_url: str | None,
    remediator_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    source: Path = GRAFANA_DIR,
) -> GrafanaLaunch:
    """Write Grafana's configuration under `state_dir` and return how to start it.

    `database_url` is the store's DATABASE_URL (None or sqlite: no PostgreSQL datasource).
    `remediator_url`, when given, becomes the default of the dashboards' API link variable.
    """
    environ = os.environ if environ is None else environ
    store = StoreConnection.from_database_url(database_url)
    home = home if home is not None else find_grafana_home(binary, environ)
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    dashboards = render_provisioning(
        state_dir, incident_store=store is not None, remediator_url=remediator_url, source=source
    )
    password_file = admin_password(state_dir, environ)
    home_dashboard = next(
        (
            state_dir / "dashboards" / name
            for name in HOME_DASHBOARDS
            if (state_dir / "dashboards" / name).exists()
        ),
        None,
    )
    config = state_dir / "grafana.ini"
    config.write_text(
        grafana_ini(
            state_dir=state_dir, port=port, password_file=password_file, home_dashboard=home_dashboard
        ),
        encoding="utf-8",
    )
    # Only the base environment and what the provisioning files read: GF_* variables override
    # grafana.ini, so one left in the shell for another Grafana (GF_PATHS_DATA, say) would move this
    # server's database or provisioning out of the state directory; the admin password is in its
    # file; and nothing else of the shell (tokens, credentials) is Grafana's business.
    env = child_environment(environ=environ)
    env.update(PROMETHEUS_URL=prometheus_url, GRAFANA_DASHBOARDS_DIR=str(state_dir / "dashboards"))
    if store is not None:
        env.update(
            REMEDIATOR_PG_HOST=store.host,
            REMEDIATOR_PG_PORT=str(store.port),
            REMEDIATOR_PG_DATABASE=store.database,
            REMEDIATOR_PG_SSLMODE=store.sslmode,
            GRAFANA_DB_USER=environ.get("GRAFANA_DB_USER") or DEFAULT_DB_USER,
            GRAFANA_DB_PASSWORD=environ.get("GRAFANA_DB_PASSWORD", ""),
        )
    url = f"http://127.0.0.1:{port}"
    return GrafanaLaunch(
        argv=grafana_argv(binary, home=home, config=config),
        env=env,
        url=url,
        health_url=f"{url}/api/health",
        config_path=config,
        admin_password_file=password_file,
        incident_store=store is not None,
        dashboards=dashboards,
    )
