"""Secure by default: where `remediator serve` and `remediator actuator` agree to listen, what they
warn about at start, and the actuator's guarded /metrics."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remediator.server import (
    actuator_readiness_warnings,
    build_actuator_app,
    is_loopback,
    secure_serve_settings,
    warn_if_store_is_not_durable,
)
from remediator.settings import Settings, SettingsError
from tests.remediator.test_cli import run
from tests.support.real_parts import free_port


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("remediator.internal", False),  # a name may resolve anywhere
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_refuses_a_public_address_without_the_webhook_token() -> None:
    with pytest.raises(
        SettingsError, match=r"refusing to listen on 0\.0\.0\.0 without WEBHOOK_TOKEN"
    ) as refused:
        secure_serve_settings(Settings.from_env({}), host="0.0.0.0", allow_insecure=False)
    assert "--insecure-no-auth" in refused.value.message
    for settings, host in (
        (Settings.from_env({}), "127.0.0.1"),
        (Settings.from_env({"WEBHOOK_TOKEN": "t"}), "0.0.0.0"),
    ):
        assert secure_serve_settings(settings, host=host, allow_insecure=False) is settings


def test_insecure_no_auth_warns_at_start_and_marks_readiness(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="remediator.server"):
        settings = secure_serve_settings(Settings.from_env({}), host="0.0.0.0", allow_insecure=True)
    assert settings.analyzer.insecure_no_auth is True
    (record,) = caplog.records
    assert "--insecure-no-auth" in record.getMessage() and "WEBHOOK_TOKEN" in record.getMessage()
    assert (record.__dict__["host"], record.__dict__["insecure_no_auth"]) == ("0.0.0.0", True)
    # On loopback the flag changes nothing and says nothing.
    caplog.clear()
    quiet = secure_serve_settings(Settings.from_env({}), host="127.0.0.1", allow_insecure=True)
    assert quiet.analyzer.insecure_no_auth is False and caplog.records == []


def test_the_actuator_needs_a_read_token_beyond_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SettingsError, match="without REMEDIATOR_READ_TOKEN"):
        actuator_readiness_warnings(Settings.from_env({}), host="0.0.0.0", allow_insecure=False)
    for environ in ({"REMEDIATOR_READ_TOKEN": "r"}, {"REMEDIATOR_API_TOKEN": "a"}):
        assert (
            actuator_readiness_warnings(Settings.from_env(environ), host="0.0.0.0", allow_insecure=False)
            == ()
        )
    with caplog.at_level(logging.WARNING, logger="remediator.server"):
        (warning,) = actuator_readiness_warnings(Settings.from_env({}), host="::", allow_insecure=True)
    assert "--insecure-no-auth" in warning
    assert caplog.records[0].getMessage() == warning


def test_a_store_without_database_url_is_announced_as_not_durable(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="remediator.server"):
        warn_if_store_is_not_durable(Settings.from_env({}))
        warn_if_store_is_not_durable(Settings.from_env({"DATABASE_URL": "postgresql://u@db/r"}))
    (record,) = caplog.records
    expected = tmp_path.resolve() / ".remediator" / "remediator.db"
    assert str(expected) in record.getMessage()
    assert "container restart" in record.getMessage()
    assert (record.__dict__["store"], record.__dict__["path"], record.__dict__["durable"]) == (
        "sqlite",
        str(expected),
        False,
    )


@pytest.mark.parametrize(
    ("command", "variable"), [("serve", "WEBHOOK_TOKEN"), ("actuator", "REMEDIATOR_READ_TOKEN")]
)
def test_the_commands_exit_2_before_listening_on_a_public_address(command: str, variable: str) -> None:
    unset = dict.fromkeys(("WEBHOOK_TOKEN", "REMEDIATOR_API_TOKEN", "REMEDIATOR_READ_TOKEN"), "")
    result = run(command, "--host", "0.0.0.0", "--port", str(free_port()), env=unset)
    assert result.returncode == 2, result.stderr
    assert f"refusing to listen on 0.0.0.0 without {variable}" in result.stderr
    assert "--insecure-no-auth" in result.stderr


def test_serve_without_database_url_logs_where_its_state_lives(tmp_path: Path) -> None:
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name in ("PATH", "HOME", "LANG") or name.startswith("LC_")
    }
    env.update(PROMETHEUS_URL="http://127.0.0.1:1", CLOUD_RUN_ENDPOINT="http://127.0.0.1:1")
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "remediator.cli",
                "serve",
                "--port",
                str(port),
                "--migrate",
                "--no-actuator",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    ready = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"serve did not start:\n{log.read_text()[-3000:]}")
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert ready == {"status": "ready", "store": "ok"}
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    (announced,) = [line for line in lines if line.get("durable") is False]
    assert announced["severity"] == "WARNING"
    assert announced["path"] == str(tmp_path.resolve() / ".remediator" / "remediator.db")
    assert (tmp_path / ".remediator" / "remediator.db").exists()


async def test_the_actuators_metrics_need_the_read_token(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            "REMEDIATOR_READ_TOKEN": "reader",
            "REMEDIATOR_API_TOKEN": "operator",
            "CLOUD_RUN_ENDPOINT": "http://127.0.0.1:1",
            "PROMETHEUS_URL": "http://127.0.0.1:1",
        }
    )
    client = await aiohttp_client(build_actuator_app(settings, readiness_warnings=("careful",)))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
    for token in ("reader", "operator"):
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})).status == 200
    assert (await client.get("/healthz")).status == 200
    readiness = await client.get("/readyz")
    assert (await readiness.json())["warnings"] == ["careful"]
    await client.close()
