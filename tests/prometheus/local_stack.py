"""prometheus/'s configs pointed at free ports, and what the tests know about the processes.

Each config is loaded, its targets replaced (as the local stack runner does) and written to a
temporary directory, next to a copy of rules/ or a `webhook-token` file, so relative paths in the
configs resolve the way they will in the stack.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.prometheus.background import BackgroundProcess, LocalHTTPServer
from tests.prometheus.config_files import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RULES_DIR, load_yaml

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What the emulator's /sd/targets says about the one revision the fake app plays.
REVISION_LABELS = {
    "service": "demo-app-a",
    "revision": "demo-app-a-00001",
    "configuration": "demo-app-a",
    "project": "local",
    "region": "local",
}


@dataclass(frozen=True)
class RunningPrometheus:
    url: str
    config_dir: Path
    process: BackgroundProcess


@dataclass(frozen=True)
class RunningAlertmanager:
    url: str
    config_dir: Path
    process: BackgroundProcess
    webhook: LocalHTTPServer
    token: str


def revision_metrics() -> Callable[[], tuple[str, bytes]]:
    """A demo app revision's /metrics: 100 more 200-OK requests at every scrape (20 req/s at 5 s)."""
    scrapes = itertools.count(1)
    identity = (
        f'service="{REVISION_LABELS["service"]}",revision="{REVISION_LABELS["revision"]}",'
        'http_request_method="GET",http_response_status_code="200",http_route="/api/catalog"'
    )

    def render() -> tuple[str, bytes]:
        requests = 100 * next(scrapes)
        lines = [
            "# HELP http_server_request_duration_seconds Duration of HTTP server requests.",
            "# TYPE http_server_request_duration_seconds histogram",
            f'http_server_request_duration_seconds_bucket{{{identity},le="0.1"}} {requests}',
            f'http_server_request_duration_seconds_bucket{{{identity},le="1.0"}} {requests}',
            f'http_server_request_duration_seconds_bucket{{{identity},le="+Inf"}} {requests}',
            f"http_server_request_duration_seconds_count{{{identity}}} {requests}",
            f"http_server_request_duration_seconds_sum{{{identity}}} {requests * 0.05}",
        ]
        return EXPOSITION_CONTENT_TYPE, ("\n".join(lines) + "\n").encode()

    return render


def write_prometheus_config(
    config_dir: Path, *, sd_url: str, remediator_target: str, alertmanager_target: str
) -> Path:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["cloudrun-revisions"]["http_sd_configs"][0]["url"] = sd_url
    jobs["remediator"]["static_configs"][0]["targets"] = [remediator_target]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager_target]
    shutil.copytree(RULES_DIR, config_dir / RULES_DIR.name)
    path = config_dir / PROMETHEUS_CONFIG.name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_alertmanager_config(config_dir: Path, *, webhook_url: str, token: str) -> Path:
    config = load_yaml(ALERTMANAGER_CONFIG)
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    webhook = receivers["remediator"]["webhook_configs"][0]
    webhook["url"] = webhook_url
    (config_dir / webhook["http_config"]["authorization"]["credentials_file"]).write_text(
        token + "\n", encoding="utf-8"
    )
    path = config_dir / ALERTMANAGER_CONFIG.name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
