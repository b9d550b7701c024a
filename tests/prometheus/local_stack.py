"""prometheus/'s configs pointed at free ports, and what the tests know about the processes.

The configs are rendered by the stack runner's own code (remediator.stackconfig) into a temporary
directory, next to a copy of rules/ or a `webhook-token` file, so relative paths resolve the way they
do in the stack.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.prometheus.background import BackgroundProcess, LocalHTTPServer

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
