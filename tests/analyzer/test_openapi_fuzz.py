"""The analyzer keeps its own OpenAPI contract under fuzzing: `schemathesis run` with every check
against a real `remediator serve` on PostgreSQL (a scratch database), with all three tokens set, and
Cloud Monitoring's webhook credentials and Pub/Sub push token (signed by a local stand-in for Google,
whose keys a local server publishes).

Schema-valid requests must be accepted, schema-invalid ones refused with a 4xx, every answer must
be documented with its status, headers and body, undeclared methods must get 405 with Allow, and
nothing may answer 5xx. Examples per operation are capped so the run stays within a couple of
minutes on a 2-core machine; SCHEMATHESIS_MAX_EXAMPLES raises the cap for a deeper local run, and
SCHEMATHESIS_SEED replays a failing run with the seed it printed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.alerts import alert, payload
from tests.support.databases import (
    create_scratch_postgres_database,
    drop_scratch_postgres_database,
    run_outside_loop,
)
from tests.support.fake_google_oidc import PUSH_AUDIENCE, PUSH_SERVICE_ACCOUNT, fake_google_oidc_in_thread
from tests.support.real_parts import free_port

pytestmark = pytest.mark.integration

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "40"))
RUN_TIMEOUT = 600
# A failure prints its seed; SCHEMATHESIS_SEED replays that run.
SEED = os.environ.get("SCHEMATHESIS_SEED")


def schemathesis_binary() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis"
    )
    if found is None:
        pytest.fail("schemathesis is not installed: it is part of the test extra (pip install -e '.[test]')")
    return found


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, *, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"remediator serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"remediator serve was not ready within {within}s:\n{log.read_text()[-3000:]}")


def post(url: str, body: object, token: str) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


@pytest.fixture
def scratch_database() -> Iterator[str]:
    url = run_outside_loop(create_scratch_postgres_database())
    try:
        yield url
    finally:
        run_outside_loop(drop_scratch_postgres_database(url))


def test_the_api_keeps_its_openapi_contract_under_fuzzing(scratch_database: str, tmp_path: Path) -> None:
    with fake_google_oidc_in_thread() as google:
        fuzz_the_api(scratch_database, tmp_path, google.certs_url, google.token(lifetime=3600))


def fuzz_the_api(scratch_database: str, tmp_path: Path, certs_url: str, push_token: str) -> None:
    tokens = {name: secrets.token_urlsafe(16) for name in ("webhook", "api", "read", "cloud-monitoring")}
    basic_user, basic_password = "cloud-monitoring", secrets.token_urlsafe(16)
    port, nowhere = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_URL": scratch_database,
        "WEBHOOK_TOKEN": tokens["webhook"],
        "REMEDIATOR_API_TOKEN": tokens["api"],
        "REMEDIATOR_READ_TOKEN": tokens["read"],
        "CLOUD_MONITORING_TOKEN": tokens["cloud-monitoring"],
        "CLOUD_MONITORING_USERNAME": basic_user,
        "CLOUD_MONITORING_PASSWORD": basic_password,
        "CLOUD_MONITORING_PUBSUB_AUDIENCE": PUSH_AUDIENCE,
        "CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT": PUSH_SERVICE_ACCOUNT,
        "CLOUD_MONITORING_PUBSUB_CERTS_URL": certs_url,
        # Incidents wait for approval, so approve and reject meet incidents they can act on.
        "REMEDIATOR_MODE": "approve",
        # Evidence sources that do not answer: analyses end quickly with gaps, never act.
        "PROMETHEUS_URL": f"http://127.0.0.1:{nowhere}",
        "CLOUD_RUN_ENDPOINT": f"http://127.0.0.1:{nowhere}",
        "COLLECTOR_TIMEOUT_SECONDS": "0.5",
        "REMEDIATOR_LOG_FORMAT": "json",
    }
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
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/readyz", server, log)
        for service in ("demo-app-a", "payments"):
            post(f"{base}/api/v1/alerts", payload(alert(service=service)), tokens["webhook"])
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            "\n".join(
                [
                    *(
                        f'[auth.openapi.{scheme}]\nbearer = "{tokens[name]}"'
                        for scheme, name in (
                            ("webhookToken", "webhook"),
                            ("apiToken", "api"),
                            ("readToken", "read"),
                        )
                    ),
                    f'[auth.openapi.cloudMonitoringToken]\napi_key = "{tokens["cloud-monitoring"]}"',
                    f'[auth.openapi.cloudMonitoringBasic]\nusername = "{basic_user}"\n'
                    f'password = "{basic_password}"',
                    f'[auth.openapi.pubsubToken]\nbearer = "{push_token}"',
                    # A webhook payload is judged alert by alert: the alerts that break a rule are
                    # listed in a 200 beside the ones recorded (Alertmanager must not lose them),
                    # and only a payload that records nothing is a 400. Schemathesis judges the
                    # whole payload invalid when one alert is, so its negative-data check does not
                    # apply here; tests/analyzer/test_admission.py and test_webhook.py hold the
                    # per-alert contract instead. Every other check still runs on this operation.
                    "[[operations]]",
                    'include-path = "/api/v1/alerts"',
                    'include-method = "POST"',
                    "checks.negative_data_rejection.enabled = false",
                ]
            )
            + "\n"
        )
        result = subprocess.run(
            [
                schemathesis_binary(),
                "--config-file",
                str(config),
                "run",
                f"{base}/api/v1/openapi.json",
                # Every check is on by default. `--checks all` is not passed: a check named on the
                # command line outranks the operation setting above, which would then be ignored.
                "--max-examples",
                str(MAX_EXAMPLES),
                "--generation-database",
                "none",
                "--wait-for-schema",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            cwd=tmp_path,
            check=False,
        )
        output_text = result.stdout + result.stderr
        assert result.returncode == 0, output_text[-20000:]
        assert "Selected: 15/15" in output_text and "Tested: 15" in output_text, output_text[-5000:]
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # A handler that failed would have answered 500 and logged it; none may have. (aiohttp's own
    # parser logs requests it cannot parse, such as a NUL in a header, and answers them 400.)
    errors = [
        line
        for line in log.read_text().splitlines()
        if '"severity": "ERROR"' in line and "aiohttp.http_exceptions.BadHttpMessage" not in line
    ]
    assert errors == [], "\n".join(errors[:20])
