"""Signals with every real part: a bad revision under load makes Prometheus fire HighErrorRate,
Alertmanager delivers a v4 webhook with the bearer token, and build_context on that alert matches
what the load generator saw."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from analyzer.webhook import parse_payload
from collector import CollectorConfig, ContextBuilder
from demo_apps.loadgen import LoadGenerator
from incidents import utcnow
from remediator.processes import ChildProcess
from remediator.stackconfig import write_alertmanager_config, write_prometheus_config
from tests.demo_apps.cloudrun_harness import revision_id, running_emulator, shop_template
from tests.support.real_parts import binary_or_missing, free_port

pytestmark = pytest.mark.integration
SERVICE = "signals-demo"


class WebhookReceiver:
    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, Any], str | None]] = []
        self.content_types: list[str] = []
        self.arrived = asyncio.Event()

    def app(self) -> web.Application:
        async def receive(request: web.Request) -> web.Response:
            self.deliveries.append((await request.json(), request.headers.get("Authorization")))
            self.content_types.append(request.content_type)
            self.arrived.set()
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/api/v1/alerts", receive)
        return app


async def test_bad_revision_fires_delivers_and_is_described_by_the_context(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    prometheus_binary = binary_or_missing("prometheus")
    alertmanager_binary = binary_or_missing("prometheus-alertmanager")
    receiver = WebhookReceiver()
    receiver_server: TestServer = await aiohttp_server(receiver.app())
    token = secrets.token_urlsafe(16)
    prometheus_port, alertmanager_port = free_port(), free_port()
    children: list[ChildProcess] = []
    async with running_emulator() as emulator, aiohttp.ClientSession() as http:
        try:
            created = await emulator.create(SERVICE, shop_template())
            stable = revision_id(created.latest_ready_revision)
            load = LoadGenerator(target=created.uri, rate=20.0, seed=7)
            await load.start()

            am_config = write_alertmanager_config(
                tmp_path / "alertmanager",
                webhook_url=str(receiver_server.make_url("/api/v1/alerts")),
                token=token,
            )
            alertmanager = ChildProcess(
                name="alertmanager",
                argv=[
                    str(alertmanager_binary),
                    f"--config.file={am_config}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                    "--cluster.listen-address=",
                ],
                log_path=tmp_path / "alertmanager.log",
            )
            children.append(alertmanager)
            await alertmanager.start()
            await alertmanager.wait_ready(
                f"http://127.0.0.1:{alertmanager_port}/-/ready", within=30, session=http
            )
            config = write_prometheus_config(
                tmp_path / "prometheus",
                sd_url=f"{emulator.base_url}/sd/targets",
                remediator_target=f"127.0.0.1:{free_port()}",
                alertmanager_target=f"127.0.0.1:{alertmanager_port}",
            )
            prometheus = ChildProcess(
                name="prometheus",
                argv=[
                    str(prometheus_binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                log_path=tmp_path / "prometheus.log",
            )
            children.append(prometheus)
            await prometheus.start()
            prometheus_url = f"http://127.0.0.1:{prometheus_port}"
            await prometheus.wait_ready(f"{prometheus_url}/-/ready", within=30, session=http)

            await asyncio.sleep(25)  # healthy history for the stable revision
            bad_service = await emulator.deploy_env(SERVICE, {"DEMO_ERROR_RATE": "10"})
            bad = revision_id(bad_service.latest_ready_revision)
            await load.reset_stats()

            # (a) Prometheus fires HighErrorRate for the service.
            async with asyncio.timeout(90):
                while True:
                    async with http.get(f"{prometheus_url}/api/v1/alerts") as response:
                        alerts = (await response.json())["data"]["alerts"]
                    firing = [
                        a
                        for a in alerts
                        if a["labels"].get("service") == SERVICE
                        and a["labels"]["alertname"] == "HighErrorRate"
                        and a["state"] == "firing"
                    ]
                    if firing:
                        break
                    await asyncio.sleep(1)
            # (b) Alertmanager delivers a v4 webhook with the bearer token.
            async with asyncio.timeout(30):
                await receiver.arrived.wait()
            body, authorization = receiver.deliveries[0]
            assert authorization == f"Bearer {token}"
            # Remediator's webhook takes only application/json, and admits what Alertmanager sends.
            assert receiver.content_types[0] == "application/json"
            payload = parse_payload(json.dumps(body).encode())
            assert payload.rejected == []
            alert = next(a for a in payload.alerts if a.labels["alertname"] == "HighErrorRate")
            assert alert.labels["service"] == SERVICE
            assert alert.labels["severity"] == "critical"

            # (c) The context's per-revision figures match what the load generator observed.
            observed = await load.stats()
            collector = CollectorConfig(
                prometheus_url=prometheus_url,
                cloud_run_endpoint=emulator.base_url,
                logging_endpoint=emulator.base_url,
                window_seconds=60,
            )
            async with ContextBuilder.open(collector) as builder:
                context = await builder.build_context(alert.to_alert_info(), recent_actions=[], now=utcnow())
                onset = await builder.estimate_onset(alert.to_alert_info())
            await load.stop()
        finally:
            for child in reversed(children):
                await child.stop()

    assert context.gaps == []
    newest = context.revisions[0]
    assert (newest.name, newest.latest, newest.traffic_percent, newest.ready) == (bad, True, 100, True)
    assert context.revisions[1].name == stable
    seen = observed["revisions"][bad]
    assert newest.metrics.error_rate is not None
    assert newest.metrics.error_rate == pytest.approx(seen["error_ratio"], abs=0.04)
    # The revision is younger than the 60 s window: its rate is its requests over the window, so
    # compare counts (the last scrape trails by up to one interval).
    assert newest.metrics.request_rate_rps is not None
    assert newest.metrics.request_rate_rps * 60 == pytest.approx(seen["requests"], rel=0.3)
    assert context.revisions[1].history is not None  # the stable revision's healthy record
    assert context.revisions[1].history.error_rate == pytest.approx(0.0, abs=0.01)
    # The baseline window ends a minute before the alert fired, before this test's load began: no
    # traffic there, so no error ratio (null, not a made-up zero).
    assert context.metrics.baseline.request_rate_rps == 0.0
    assert context.metrics.baseline.error_rate is None
    assert any(line.severity == "ERROR" and line.revision == bad for line in context.logs)
    assert context.scaling.current_instances is not None
    assert onset is not None
