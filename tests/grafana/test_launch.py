"""remediator.grafana: the files, argv and environment `remediator up` starts Grafana with."""

from __future__ import annotations

import configparser
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from remediator.binaries import INSTALL_HINTS
from remediator.grafana import (
    GrafanaSetupError,
    StoreConnection,
    find_grafana_home,
    grafana_binary,
    missing_grafana_message,
    prepare_grafana,
    reads_incident_store,
)
from tests.grafana.dashboards import BUILTIN_DATASOURCES, datasource_references, load_yaml

PROMETHEUS_URL = "http://127.0.0.1:19090"
PG_URL = "postgresql+asyncpg://remediator:secret@db.internal:6432/incidents"


def expand_like_grafana(node: Any, env: dict[str, str]) -> Any:
    """Provisioning values as Grafana reads them: Go's os.ExpandEnv, an unset variable becomes ""."""
    if isinstance(node, str):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), node)
    if isinstance(node, dict):
        return {key: expand_like_grafana(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [expand_like_grafana(item, env) for item in node]
    return node


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A Grafana release unpacked: <home>/bin/grafana and <home>/conf/defaults.ini."""
    root = tmp_path / "grafana-12.0.0"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "defaults.ini").write_text("; defaults\n")
    (root / "bin").mkdir()
    for name in ("grafana", "grafana-server"):
        binary = root / "bin" / name
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    return root


def provisioned(state: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    sources = {}
    for path in sorted((state / "provisioning" / "datasources").glob("*.yaml")):
        for source in expand_like_grafana(load_yaml(path), env)["datasources"]:
            sources[source["uid"]] = source
    return sources


def rendered_dashboards(state: Path) -> dict[str, dict[str, Any]]:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((state / "dashboards").glob("*.json"))
    }


def read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";",))
    parser.read(path, encoding="utf-8")
    return parser


def test_postgres_store_provisions_both_datasources_for_the_read_only_login(
    tmp_path: Path, home: Path
) -> None:
    launch = prepare_grafana(
        home / "bin" / "grafana",
        state_dir=tmp_path / "state",
        port=13000,
        prometheus_url=PROMETHEUS_URL,
        database_url=PG_URL,
        environ={"PATH": "/usr/bin", "GRAFANA_DB_PASSWORD": "reader-secret"},
    )
    state = (tmp_path / "state").resolve()
    assert launch.incident_store is True
    sources = provisioned(state, launch.env)
    assert sources["prometheus"]["url"] == PROMETHEUS_URL
    postgres = sources["remediator-postgres"]
    assert postgres["url"] == "db.internal:6432"
    assert postgres["jsonData"]["database"] == "incidents"
    assert postgres["jsonData"]["sslmode"] == "disable"
    # Never Remediator's own user or password: the read-only login.
    assert postgres["user"] == "remediator_grafana"
    assert postgres["secureJsonData"]["password"] == "reader-secret"
    assert "secret" not in json.dumps(launch.env).replace("reader-secret", "")
    assert set(launch.dashboards) == {
        "remediator-control-plane",
        "remediator-incidents",
        "remediator-service-health",
    }
    dashboards = rendered_dashboards(state)
    assert Path(launch.env["GRAFANA_DASHBOARDS_DIR"]) == state / "dashboards"
    annotations = {a["name"]: a for a in dashboards["remediator-service-health"]["annotations"]["list"]}
    assert annotations["Incident opened"]["enable"] is True
    assert annotations["Posted by Remediator (Grafana API)"]["enable"] is False


def test_sqlite_store_provisions_prometheus_only(tmp_path: Path, home: Path) -> None:
    state = tmp_path / "state"
    launch = prepare_grafana(
        home / "bin" / "grafana",
        state_dir=state,
        port=13000,
        prometheus_url=PROMETHEUS_URL,
        database_url=f"sqlite:///{tmp_path / 'remediator.db'}",
        environ={"GRAFANA_DB_PASSWORD": "unused"},
    )
    assert launch.incident_store is False
    assert set(provisioned(state, launch.env)) == {"prometheus"}
    assert not any(
        name.startswith(("REMEDIATOR_PG_", "GRAFANA_DB_"))
        for name in launch.env
        if name != "GRAFANA_DB_PASSWORD"
    )
    dashboards = rendered_dashboards(state)
    assert (
        set(dashboards) == set(launch.dashboards) == {"remediator-control-plane", "remediator-service-health"}
    )
    for dashboard in dashboards.values():
        assert not reads_incident_store(dashboard)
        for reference in datasource_references(dashboard):
            pair = (reference["type"], reference["uid"])
            assert pair in BUILTIN_DATASOURCES or pair == ("prometheus", "prometheus"), reference
    annotations = {a["name"]: a for a in dashboards["remediator-service-health"]["annotations"]["list"]}
    assert "Incident opened" not in annotations
    assert annotations["Posted by Remediator (Grafana API)"]["enable"] is True
    # The home dashboard is one that was provisioned.
    ini = read_ini(launch.config_path)
    assert ini["dashboards"]["default_home_dashboard_path"] == str(
        state.resolve() / "dashboards" / "remediator-service-health.json"
    )


def test_switching_stores_replaces_the_rendered_copy(tmp_path: Path, home: Path) -> None:
    state = tmp_path / "state"
    arguments: dict[str, Any] = {
        "state_dir": state,
        "port": 13000,
        "prometheus_url": PROMETHEUS_URL,
        "environ": {},
    }
    prepare_grafana(home / "bin" / "grafana", database_url=PG_URL, **arguments)
    assert (state / "dashboards" / "remediator-incidents.json").exists()
    prepare_grafana(home / "bin" / "grafana", database_url=None, **arguments)
    assert not (state / "dashboards" / "remediator-incidents.json").exists()
    assert not (state / "provisioning" / "datasources" / "remediator-postgres.yaml").exists()


def test_grafana_ini_binds_loopback_keeps_state_local_and_phones_nowhere(tmp_path: Path, home: Path) -> None:
    launch = prepare_grafana(
        home / "bin" / "grafana",
        state_dir=tmp_path / "state",
        port=13001,
        prometheus_url=PROMETHEUS_URL,
        database_url=PG_URL,
        environ={},
    )
    state = (tmp_path / "state").resolve()
    ini = read_ini(launch.config_path)
    assert ini["server"]["http_addr"] == "127.0.0.1"
    assert ini["server"]["http_port"] == "13001"
    for key in ("data", "logs", "plugins", "provisioning"):
        assert Path(ini["paths"][key]) == state / key
    assert ini["auth.anonymous"]["enabled"] == "true" and ini["auth.anonymous"]["org_role"] == "Viewer"
    for key in ("reporting_enabled", "check_for_updates", "check_for_plugin_updates"):
        assert ini["analytics"][key] == "false"
    assert ini["plugins"]["preinstall_disabled"] == "true"
    assert ini["date_formats"]["default_timezone"] == "utc"
    assert ini["security"]["admin_password"] == f"$__file{{{launch.admin_password_file}}}"
    assert ini["dashboards"]["default_home_dashboard_path"] == str(
        state / "dashboards" / "remediator-incidents.json"
    )
    # Every kind of provisioning Grafana scans is there (empty ones say: nothing to add).
    assert {path.name for path in (state / "provisioning").iterdir()} == {
        "alerting",
        "dashboards",
        "datasources",
        "plugins",
    }
    assert launch.health_url == "http://127.0.0.1:13001/api/health"
    assert launch.url == "http://127.0.0.1:13001"


def test_admin_password_comes_from_the_environment_or_stays_stable(tmp_path: Path, home: Path) -> None:
    state = tmp_path / "state"
    arguments: dict[str, Any] = {
        "state_dir": state,
        "port": 13000,
        "prometheus_url": PROMETHEUS_URL,
        "database_url": None,
    }
    first = prepare_grafana(home / "bin" / "grafana", environ={}, **arguments)
    chosen = first.admin_password_file.read_text()
    assert len(chosen) >= 20
    assert stat.S_IMODE(first.admin_password_file.stat().st_mode) == 0o600
    again = prepare_grafana(home / "bin" / "grafana", environ={}, **arguments)
    assert again.admin_password_file.read_text() == chosen
    given = prepare_grafana(
        home / "bin" / "grafana", environ={"GRAFANA_ADMIN_PASSWORD": "hunter22"}, **arguments
    )
    assert given.admin_password_file.read_text() == "hunter22"
    assert "hunter22" not in given.config_path.read_text() and "hunter22" not in given.env.values()


def test_argv_uses_the_server_subcommand_or_the_legacy_binary(tmp_path: Path, home: Path) -> None:
    arguments: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "port": 13000,
        "prometheus_url": PROMETHEUS_URL,
        "database_url": None,
        "environ": {},
    }
    modern = prepare_grafana(home / "bin" / "grafana", **arguments)
    config = str(modern.config_path)
    assert modern.argv == [
        str(home / "bin" / "grafana"),
        "server",
        "--homepath",
        str(home),
        "--config",
        config,
    ]
    legacy = prepare_grafana(home / "bin" / "grafana-server", **arguments)
    assert legacy.argv == [str(home / "bin" / "grafana-server"), "--homepath", str(home), "--config", config]


def test_environment_overrides_for_another_grafana_are_dropped(tmp_path: Path, home: Path) -> None:
    launch = prepare_grafana(
        home / "bin" / "grafana",
        state_dir=tmp_path / "state",
        port=13000,
        prometheus_url=PROMETHEUS_URL,
        database_url=PG_URL,
        environ={
            "GF_PATHS_DATA": "/var/lib/grafana",
            "GF_SERVER_HTTP_ADDR": "0.0.0.0",
            "PROMETHEUS_URL": "http://elsewhere:9090",
            "GRAFANA_DB_USER": "dashboards_ro",
            "HOME": "/home/me",
            "REMEDIATOR_API_TOKEN": "not-grafanas",
            "GOOGLE_API_KEY": "not-grafanas",
        },
    )
    assert not any(name.startswith("GF_") for name in launch.env)
    assert launch.env["PROMETHEUS_URL"] == PROMETHEUS_URL
    assert launch.env["GRAFANA_DB_USER"] == "dashboards_ro"
    assert launch.env["HOME"] == "/home/me"
    # Only what Grafana and its provisioning read: no other secret of the shell.
    assert "not-grafanas" not in launch.env.values()


def test_the_api_link_variable_points_at_this_stack(tmp_path: Path, home: Path) -> None:
    prepare_grafana(
        home / "bin" / "grafana",
        state_dir=tmp_path / "state",
        port=13000,
        prometheus_url=PROMETHEUS_URL,
        database_url=PG_URL,
        remediator_url="http://127.0.0.1:18080",
        environ={},
    )
    incidents = rendered_dashboards(tmp_path / "state")["remediator-incidents"]
    (variable,) = [v for v in incidents["templating"]["list"] if v["name"] == "remediator_api"]
    assert variable["query"] == variable["current"]["value"] == "http://127.0.0.1:18080"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u@127.0.0.1/remediator",
            StoreConnection(host="127.0.0.1", port=5432, database="remediator", sslmode="disable"),
        ),
        (
            "postgres://u@db:5433/r?sslmode=verify-full",
            StoreConnection(host="db", port=5433, database="r", sslmode="verify-full"),
        ),
        (
            "postgresql+asyncpg://u@db/r?ssl=require",
            StoreConnection(host="db", port=5432, database="r", sslmode="require"),
        ),
        (
            "postgresql://u@db/r?sslmode=prefer",
            StoreConnection(host="db", port=5432, database="r", sslmode="disable"),
        ),
        ("sqlite:///tmp/remediator.db", None),
        (None, None),
    ],
)
def test_store_connection_from_database_url(url: str | None, expected: StoreConnection | None) -> None:
    assert StoreConnection.from_database_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@db/r", "postgresql://u@db"])
def test_unusable_database_urls_are_setup_errors(url: str) -> None:
    with pytest.raises(GrafanaSetupError):
        StoreConnection.from_database_url(url)


def test_grafana_home_is_found_next_to_the_binary_or_from_grafana_home(tmp_path: Path, home: Path) -> None:
    assert find_grafana_home(home / "bin" / "grafana", {}) == home
    elsewhere = tmp_path / "usr" / "sbin"
    elsewhere.mkdir(parents=True)
    (elsewhere / "grafana").symlink_to(home / "bin" / "grafana")
    assert find_grafana_home(elsewhere / "grafana", {}) == home  # a symlink is followed
    lonely = tmp_path / "lonely" / "bin"
    lonely.mkdir(parents=True)
    (lonely / "grafana").write_text("")
    assert find_grafana_home(lonely / "grafana", {"GRAFANA_HOME": str(home)}) == home
    if not Path("/usr/share/grafana/conf/defaults.ini").exists():
        with pytest.raises(GrafanaSetupError, match="GRAFANA_HOME"):
            find_grafana_home(lonely / "grafana", {})


def test_grafana_binary_prefers_grafana_and_falls_back_to_grafana_server(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_legacy = tmp_path / "legacy"
    only_legacy.mkdir()
    (only_legacy / "grafana-server").symlink_to(home / "bin" / "grafana-server")
    monkeypatch.setenv("PATH", str(only_legacy))
    assert grafana_binary() == only_legacy / "grafana-server"
    monkeypatch.setenv("PATH", str(home / "bin"))
    assert grafana_binary() == home / "bin" / "grafana"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert grafana_binary() is None


def test_the_missing_grafana_message_says_how_to_get_it() -> None:
    message = missing_grafana_message()
    assert "grafana-server" in message and INSTALL_HINTS["grafana-server"] in message
