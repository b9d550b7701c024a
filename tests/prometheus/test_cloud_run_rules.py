"""The alerts on Cloud Run's platform metrics (prometheus/cloud-run/): promtool accepts them, their
unit tests pass and notice a changed rule, and the local stack renders them, scaled to the
emulator's sampling period, into a config that scrapes the platform metrics and nothing of the apps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from remediator.stackconfig import PLATFORM_JOB, PlatformScrape, scale_durations, write_prometheus_config
from tests.prometheus.config_files import REPO_ROOT
from tests.prometheus.test_configs import output, run_tool

pytestmark = pytest.mark.integration

CLOUD_RUN = REPO_ROOT / "prometheus" / "cloud-run"
RULES = CLOUD_RUN / "rules" / "alerts.yml"
TESTS = CLOUD_RUN / "tests" / "alerts_test.yml"


def test_promtool_checks_and_tests_the_cloud_run_rules() -> None:
    result = run_tool("promtool", "check", "rules", RULES.relative_to(REPO_ROOT))
    assert result.returncode == 0, output(result)
    result = run_tool("promtool", "test", "rules", TESTS.relative_to(REPO_ROOT))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


# The label_replace of the latency alert, up to its severity (unique in alerts.yml).
LATENCY_SERVICE_LABEL = (
    '"service", "$1", "service_name", "(.*)"\n          )\n        for: 0s\n'
    "        keep_firing_for: 5m\n        labels:\n          severity: warning"
)
MUTATIONS = [
    pytest.param("> 0.02\n", "> 0.04\n", "alertname: HighErrorRate, time: 10m", id="higher-error-threshold"),
    pytest.param(
        "        for: 0s\n        keep_firing_for: 5m\n        labels:\n          severity: critical",
        "        for: 1m\n        keep_firing_for: 5m\n        labels:\n          severity: critical",
        "alertname: HighErrorRate, time: 10m",
        id="slower-error-for",
    ),
    pytest.param(
        "        keep_firing_for: 5m\n        labels:\n          severity: critical",
        "        keep_firing_for: 0s\n        labels:\n          severity: critical",
        'expr: "count(ALERTS{alertname=\\"HighErrorRate\\",alertstate=\\"firing\\"})"',
        id="no-keep-firing",
    ),
    pytest.param(
        ") > 1000\n", ") > 2000\n", "alertname: HighLatencyP95, time: 10m", id="higher-latency-threshold"
    ),
    pytest.param(
        LATENCY_SERVICE_LABEL,
        LATENCY_SERVICE_LABEL.replace('"service", "$1"', '"svc", "$1"'),
        "alertname: HighLatencyP95, time: 10m",
        id="latency-without-service-label",
    ),
]


@pytest.mark.parametrize(("original", "changed", "failure"), MUTATIONS)
def test_the_unit_tests_catch_a_changed_rule(
    tmp_path: Path, original: str, changed: str, failure: str
) -> None:
    shutil.copytree(CLOUD_RUN, tmp_path / "cloud-run")
    rules = tmp_path / "cloud-run" / "rules" / "alerts.yml"
    text = rules.read_text(encoding="utf-8")
    assert text.count(original) == 1, f"{original!r} must occur exactly once in alerts.yml"
    rules.write_text(text.replace(original, changed), encoding="utf-8")
    result = run_tool("promtool", "test", "rules", "cloud-run/tests/alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0, output(result)
    assert failure in result.stdout + result.stderr, output(result)


def test_durations_scale_with_the_sampling_period() -> None:
    text = "rate(x[5m]) and increase(y[90s])\n        for: 1m\n        keep_firing_for: 5m\n        for: 0s\n"
    assert scale_durations(text, 5 / 60) == (
        "rate(x[25s]) and increase(y[8s])\n        for: 5s\n        keep_firing_for: 25s\n        for: 0s\n"
    )
    assert scale_durations(text, 1.0) == text


@pytest.mark.parametrize(("period", "window"), [(60, "[5m]"), (5, "[25s]")])
def test_the_stack_renders_the_platform_rules_and_scrape_job(
    tmp_path: Path, period: int, window: str
) -> None:
    config_path = write_prometheus_config(
        tmp_path,
        sd_url="http://127.0.0.1:1/sd/targets",
        remediator_target="127.0.0.1:2",
        alertmanager_target="127.0.0.1:3",
        platform=PlatformScrape(target="127.0.0.1:4", sample_period_s=period),
    )
    config = yaml.safe_load(config_path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {PLATFORM_JOB, "remediator"}  # the apps' own metrics are not scraped
    platform = jobs[PLATFORM_JOB]
    assert platform["honor_timestamps"] is True
    assert platform["static_configs"] == [{"targets": ["127.0.0.1:4"]}]
    assert platform["scrape_interval"] == f"{max(1, period // 5)}s"
    rendered = (tmp_path / "rules" / "alerts.yml").read_text()
    assert window in rendered and "alert: HighErrorRate" in rendered
    assert sorted(path.name for path in (tmp_path / "rules").iterdir()) == ["alerts.yml"]
    result = run_tool("promtool", "check", "config", config_path)
    assert result.returncode == 0, output(result)
    assert "SUCCESS: 1 rule files found" in result.stdout, output(result)
