"""`python -m demo_apps.shop` as the emulator runs it: a child process with Cloud Run's environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.real_parts import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def shop_environment(**variables: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("DEMO_", "K_"))}
    environ.update(
        {"HOST": "127.0.0.1", "K_SERVICE": "shop", "K_REVISION": "shop-00007-stu", "DEMO_COLD_START_MS": "0"}
    )
    environ.update(variables)
    return environ


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def shop_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "demo_apps.shop"],
        cwd=REPO_ROOT,
        env=shop_environment(PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, dict(response.headers), response.read()


def wait_until_healthy(process: subprocess.Popen[str], port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the shop exited before it became ready"
        try:
            if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise AssertionError("the shop did not answer /healthz in time")


def test_serves_then_stops_on_sigterm(shop_process: tuple[subprocess.Popen[str], int]) -> None:
    process, port = shop_process
    wait_until_healthy(process, port)
    status, headers, body = get(f"http://127.0.0.1:{port}/api/catalog")
    assert status == 200
    assert headers["X-Revision"] == "shop-00007-stu"
    assert json.loads(body)["count"] > 0

    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    stdout, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert time.monotonic() - stopped_at < 5

    lines = json_lines(stdout)
    assert lines[0]["message"] == f"shop serving on http://127.0.0.1:{port}"
    assert all({"severity", "message", "time", "service", "revision"} <= line.keys() for line in lines)
    (request,) = [line for line in lines if "httpRequest" in line]
    assert request["httpRequest"]["requestUrl"] == "/api/catalog"
    assert lines[-1]["message"] == "shop stopped"


def test_sigterm_lets_a_request_in_flight_finish(shop_process: tuple[subprocess.Popen[str], int]) -> None:
    process, port = shop_process
    wait_until_healthy(process, port)
    enable = urllib.request.Request(
        f"http://127.0.0.1:{port}/fault/enable?type=latency&latency_ms=600", method="POST"
    )
    with urllib.request.urlopen(enable, timeout=2) as response:
        assert response.status == 200

    answers: list[int] = []
    request = threading.Thread(target=lambda: answers.append(get(f"http://127.0.0.1:{port}/api/catalog")[0]))
    request.start()
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=10)
    request.join(timeout=5)
    assert answers == [200]
    assert process.returncode == 0


def test_fail_startup_exits_non_zero_without_listening() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "demo_apps.shop"],
        cwd=REPO_ROOT,
        env=shop_environment(PORT=str(port), DEMO_FAIL_STARTUP="1"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    (line,) = json_lines(result.stdout)
    assert line["severity"] == "ERROR"
    assert "DEMO_FAIL_STARTUP" in line["message"]
    assert line["revision"] == "shop-00007-stu"


def test_bad_environment_exits_2_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo_apps.shop"],
        cwd=REPO_ROOT,
        env=shop_environment(PORT=str(free_port()), DEMO_ERROR_RATE="lots"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    (line,) = json_lines(result.stdout)
    assert line["severity"] == "ERROR"
    assert "DEMO_ERROR_RATE" in line["message"]
