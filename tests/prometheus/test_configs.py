"""promtool and amtool accept prometheus/, and promtool's rule tests pass and can fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prometheus.config_files import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    REPO_ROOT,
    RULE_TESTS_DIR,
    RULES_DIR,
    rule_files,
    rule_test_files,
)
from tests.support.real_parts import binary_or_missing

pytestmark = pytest.mark.integration

TOOL_TIMEOUT_S = 120.0


def run_tool(name: str, *args: str | Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    binary = binary_or_missing(name)
    return subprocess.run(
        [str(binary), *(str(arg) for arg in args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def relative(path: Path) -> Path:
    return path.relative_to(REPO_ROOT)


def test_promtool_check_config() -> None:
    result = run_tool("promtool", "check", "config", relative(PROMETHEUS_CONFIG))
    assert result.returncode == 0, output(result)
    # It checked the rule files the config names, too.
    assert "SUCCESS: 2 rule files found" in result.stdout, output(result)


def test_promtool_check_rules() -> None:
    files = rule_files()
    assert [path.name for path in files] == ["alerts.yml", "recording.yml"]
    result = run_tool("promtool", "check", "rules", *map(relative, files))
    assert result.returncode == 0, output(result)


def test_promtool_test_rules() -> None:
    files = rule_test_files()
    assert [path.name for path in files] == [
        "high_error_rate_test.yml",
        "high_latency_test.yml",
        "recording_test.yml",
    ]
    result = run_tool("promtool", "test", "rules", *map(relative, files))
    assert result.returncode == 0, output(result)
    assert result.stdout.count("SUCCESS") == len(files), output(result)


def test_amtool_check_config() -> None:
    result = run_tool("amtool", "check-config", relative(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, output(result)
    assert "1 inhibit rules" in result.stdout, output(result)


# Each change to alerts.yml breaks a promise the rule tests make; the tests must notice. The
# second item is text that occurs exactly once in alerts.yml, the last is where promtool fails.
MUTATIONS = [
    pytest.param(
        "        for: 5s\n",
        "        for: 10s\n",
        "alertname: HighErrorRate, time: 1m20s",
        id="slower-error-for",
    ),
    pytest.param(
        "[30s])) >= 5\n", "[30s])) >= 1\n", 'expr: "count_over_time(ALERTS[4m])"', id="no-error-minimum"
    ),
    pytest.param(
        "[30s])) >= 1\n          and on (service)",
        "[30s])) >= 0.1\n          and on (service)",
        'expr: "count_over_time(ALERTS[3m])"',
        id="no-error-traffic-gate",
    ),
    pytest.param(
        "> 0.02\n", "> 0.015\n", "alertname: HighErrorRate, time: 1m15s", id="lower-error-threshold"
    ),
    pytest.param(
        "        for: 5s\n        keep_firing_for: 30s\n",
        "        for: 5s\n        keep_firing_for: 0s\n",
        "alertname: HighErrorRate, time: 3m45s",
        id="no-error-keep-firing",
    ),
    pytest.param(
        "        for: 15s\n",
        "        for: 20s\n",
        "alertname: HighLatencyP95, time: 1m20s",
        id="slower-latency-for",
    ),
    pytest.param(
        "[30s])) >= 1\n        for: 15s",
        "[30s])) >= 0.1\n        for: 15s",
        'expr: "count_over_time(ALERTS[5m])"',
        id="no-latency-traffic-gate",
    ),
]


@pytest.mark.parametrize(("original", "changed", "failure"), MUTATIONS)
def test_rule_tests_catch_a_changed_alert(tmp_path: Path, original: str, changed: str, failure: str) -> None:
    shutil.copytree(RULES_DIR, tmp_path / RULES_DIR.name)
    shutil.copytree(RULE_TESTS_DIR, tmp_path / RULE_TESTS_DIR.name)
    alerts = tmp_path / RULES_DIR.name / "alerts.yml"
    text = alerts.read_text(encoding="utf-8")
    assert text.count(original) == 1, f"{original!r} must occur exactly once in alerts.yml"
    alerts.write_text(text.replace(original, changed), encoding="utf-8")

    tests = sorted((tmp_path / RULE_TESTS_DIR.name).glob("*.yml"))
    result = run_tool(
        "promtool", "test", "rules", *(path.relative_to(tmp_path) for path in tests), cwd=tmp_path
    )
    assert result.returncode != 0, output(result)
    assert failure in result.stdout + result.stderr, output(result)
