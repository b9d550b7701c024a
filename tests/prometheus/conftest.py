"""Prometheus and Alertmanager started for real on 127.0.0.1, with prometheus/'s configs.

Every server and process a fixture starts is registered on an ExitStack right after it started, so
it is stopped whether the fixture finishes, fails half-way, or is torn down after its tests.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from remediator.stackconfig import write_alertmanager_config, write_prometheus_config
from tests.prometheus.background import BackgroundProcess, LocalHTTPServer
from tests.prometheus.local_stack import (
    EXPOSITION_CONTENT_TYPE,
    REVISION_LABELS,
    RunningAlertmanager,
    RunningPrometheus,
    revision_metrics,
)
from tests.support.real_parts import binary_or_missing, free_port, missing_real_part

READY_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    binary = binary_or_missing("prometheus")
    with ExitStack() as running:
        revision = LocalHTTPServer({"/metrics": revision_metrics()})
        running.callback(revision.close)
        discovery_document = [{"targets": [f"127.0.0.1:{revision.port}"], "labels": REVISION_LABELS}]
        emulator = LocalHTTPServer(
            {"/sd/targets": lambda: ("application/json", json.dumps(discovery_document).encode())}
        )
        running.callback(emulator.close)
        remediator = LocalHTTPServer({"/metrics": lambda: (EXPOSITION_CONTENT_TYPE, b"")})
        running.callback(remediator.close)

        config_dir = tmp_path_factory.mktemp("prometheus")
        config = write_prometheus_config(
            config_dir,
            sd_url=emulator.url("/sd/targets"),
            remediator_target=f"127.0.0.1:{remediator.port}",
            # Nothing listens there: alerts are not what these tests look at.
            alertmanager_target=f"127.0.0.1:{free_port()}",
        )
        # Started from another directory, so rule_files can only resolve relative to the config.
        elsewhere = tmp_path_factory.mktemp("prometheus-cwd")
        port = free_port()
        process = BackgroundProcess(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={config_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            log_path=config_dir / "prometheus.log",
            cwd=elsewhere,
        )
        running.callback(process.stop)
        url = f"http://127.0.0.1:{port}"
        if not process.wait_until_ready(f"{url}/-/ready", timeout_s=READY_TIMEOUT_S):
            pytest.fail(f"prometheus exited with {process.exit_code}:\n{process.log()}")
        yield RunningPrometheus(url=url, config_dir=config_dir, process=process)


@pytest.fixture(scope="module")
def alertmanager_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAlertmanager]:
    binary = binary_or_missing("prometheus-alertmanager")
    with ExitStack() as running:
        webhook = LocalHTTPServer()
        running.callback(webhook.close)
        config_dir = tmp_path_factory.mktemp("alertmanager")
        token = secrets.token_urlsafe(24)
        config = write_alertmanager_config(config_dir, webhook_url=webhook.url("/api/v1/alerts"), token=token)
        # Started from another directory, so credentials_file can only resolve relative to the config.
        elsewhere = tmp_path_factory.mktemp("alertmanager-cwd")
        port = free_port()
        process = BackgroundProcess(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.path={config_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            log_path=config_dir / "alertmanager.log",
            cwd=elsewhere,
        )
        running.callback(process.stop)
        url = f"http://127.0.0.1:{port}"
        if not process.wait_until_ready(f"{url}/-/ready", timeout_s=READY_TIMEOUT_S):
            log = process.log()
            if "default.tmpl" in log:
                # Debian's build reads its built-in notification templates from
                # /usr/share/prometheus/alertmanager/ and exits without them; unpacking the
                # package's binary alone (as `make tools` does) leaves them behind.
                missing_real_part(
                    "prometheus-alertmanager's default.tmpl",
                    "install the prometheus-alertmanager package, or copy "
                    ".venv/opt/debian/usr/share/prometheus/alertmanager/*.tmpl to "
                    f"/usr/share/prometheus/alertmanager/ (its log: {log.strip().splitlines()[-1]})",
                )
            pytest.fail(f"prometheus-alertmanager exited with {process.exit_code}:\n{log}")
        yield RunningAlertmanager(
            url=url, config_dir=config_dir, process=process, webhook=webhook, token=token
        )
