"""Every PromQL expression of every dashboard, against a real Prometheus scraping the demo stack.

One stack for the module: the Cloud Run emulator (in-process, on its own event loop in a thread)
runs a demo service with a healthy revision and a bad one (DEMO_ERROR_RATE) sharing its traffic;
a load driver sends requests through the service's router; a small HTTP server plays Remediator's
/metrics with the analyzer's and actuator's real metric classes; and a real `prometheus` runs the
repository's prometheus.yml and rules, rewritten for these ports. Once Prometheus has scraped every
target a few times and evaluated the rules, each expression (variables and Grafana's interval names
filled in) goes through /api/v1/query: it must parse, and it must return data unless it reads a metric
nothing exports yet (LLM_METRICS, which appear with the Gemini engine).
"""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.parse
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from actuator import ActuatorMetrics
from analyzer import AnalyzerMetrics
from remediator.stackconfig import write_prometheus_config
from tests.demo_apps.cloudrun_harness import Emulator, revision_id, running_emulator, shop_template
from tests.grafana.dashboards import Query, queries
from tests.grafana.macros import expand_promql, interpolate_variables
from tests.prometheus.background import BackgroundProcess, LocalHTTPServer, http_get_json, wait_for
from tests.support.real_parts import binary_or_missing, free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
SERVICE = "demo-app-a"
READY_TIMEOUT_S = 30.0
DATA_TIMEOUT_S = 45.0
# Metrics the dashboards read that nothing exports until the Gemini engine makes its first call.
LLM_METRICS = frozenset({"remediator_llm_request_duration_seconds_bucket", "remediator_llm_tokens_total"})
# A metric name is whatever stands right before a label matcher `{` or a range `[`.
METRIC_NAME = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
PROMQL_QUERIES = [query for query in queries() if query.language == "promql"]
VARIABLE_QUERIES = [query for query in queries() if query.language == "prometheus-variable"]
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


class LoopThread:
    """An event loop in a thread, for the async emulator behind synchronous module fixtures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="emulator-loop", daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.submit(coroutine).result(timeout)

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass(frozen=True)
class DemoStack:
    prometheus_url: str
    service: str
    healthy: str
    bad: str

    def query(self, expr: str) -> dict[str, Any]:
        return http_get_json(f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")

    def vector(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def metric_names(self) -> set[str]:
        return set(http_get_json(f"{self.prometheus_url}/api/v1/label/__name__/values")["data"])


class RemediatorExporter:
    """Remediator's /metrics with the analyzer's and actuator's real metric classes. Every labelled
    series exists from the first scrape; one incident is handled between the second and the third,
    so rates and increases over the dashboards' windows have something to show."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.analyzer, self.actuator = AnalyzerMetrics(self.registry), ActuatorMetrics(self.registry)
        self._scrapes = 0
        self._lock = threading.Lock()
        self.handle_incident(observe=False)

    def handle_incident(self, *, observe: bool = True) -> None:
        """Touch every series; with `observe`, also count and time one incident from alert to MTTR."""
        analyzer, actuator = self.analyzer, self.actuator
        amount = 1 if observe else 0
        series = [
            analyzer.webhook_requests.labels("200"),
            analyzer.alerts_received.labels("new"),
            analyzer.alerts_received.labels("resolved"),
            analyzer.incidents_opened,
            analyzer.incidents_ended.labels("resolved"),
            analyzer.decisions.labels("rules", "ROLLBACK", "execute"),
            analyzer.engine_fallbacks.labels("timeout"),
            analyzer.policy_overrules.labels("overrule"),
            analyzer.analysis_errors,
            actuator.actions.labels("ROLLBACK", "succeeded"),
            actuator.cloud_run_calls.labels("update_service", "ok"),
            actuator.verifications.labels("recovered"),
            actuator.remediations.labels("resolved"),
            actuator.annotations.labels("ok"),
            actuator.annotations.labels("error"),
        ]
        for counter in series:
            counter.inc(amount)
        histograms = [
            (analyzer.webhook_duration, 0.004),
            (analyzer.decision_duration.labels("rules"), 0.02),
            (analyzer.engine_duration.labels("rules"), 0.001),
            (actuator.action_duration.labels("ROLLBACK", "apply"), 0.3),
            (actuator.action_duration.labels("ROLLBACK", "verify"), 21.0),
            (actuator.mttr, 42.0),
        ]
        for histogram, value in histograms:
            if observe:
                histogram.observe(value)

    def render(self) -> tuple[str, bytes]:
        with self._lock:
            self._scrapes += 1
            if self._scrapes == 2:
                self.handle_incident()
            return CONTENT_TYPE_LATEST, generate_latest(self.registry)


async def deploy(emulator: Emulator) -> tuple[str, str, str]:
    """The service with a healthy revision and a bad one, half of the traffic each; its router URL."""
    created = await emulator.create(SERVICE, shop_template())
    healthy = revision_id(created.latest_ready_revision)
    updated = await emulator.deploy_env(SERVICE, {"DEMO_ERROR_RATE": "30"})
    bad = revision_id(updated.latest_ready_revision)
    service = await emulator.set_traffic(SERVICE, {healthy: 50, bad: 50})
    return service.uri, healthy, bad


async def drive_traffic(emulator: Emulator, uri: str) -> None:
    """About 50 requests a second through the router until cancelled."""
    while True:
        await emulator.served_by(uri, 10, parallel=10)
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    binary = binary_or_missing("prometheus")
    with ExitStack() as running:
        loop = LoopThread()
        running.callback(loop.close)
        emulator_context = running_emulator()
        emulator = loop.run(emulator_context.__aenter__())
        running.callback(lambda: loop.run(emulator_context.__aexit__(None, None, None)))
        uri, healthy, bad = loop.run(deploy(emulator))
        traffic = loop.submit(drive_traffic(emulator, uri))
        running.callback(lambda: loop.run(stop(traffic)))

        remediator = LocalHTTPServer({"/metrics": RemediatorExporter().render})
        running.callback(remediator.close)

        config_dir = tmp_path_factory.mktemp("prometheus")
        config = write_prometheus_config(
            config_dir,
            sd_url=f"{emulator.base_url}/sd/targets",
            remediator_target=f"127.0.0.1:{remediator.port}",
            alertmanager_target=f"127.0.0.1:{free_port()}",  # nothing listens: alerts are not looked at
        )
        port = free_port()
        process = BackgroundProcess(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={config_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            log_path=config_dir / "prometheus.log",
            cwd=Path(config_dir),
        )
        running.callback(process.stop)
        stack = DemoStack(
            prometheus_url=f"http://127.0.0.1:{port}", service=SERVICE, healthy=healthy, bad=bad
        )
        if not process.wait_until_ready(f"{stack.prometheus_url}/-/ready", timeout_s=READY_TIMEOUT_S):
            pytest.fail(f"prometheus exited with {process.exit_code}:\n{process.log()}")
        wait_for(
            "every target scraped three times and the rules evaluated",
            lambda: ready(stack),
            timeout_s=DATA_TIMEOUT_S,
        )
        yield stack


async def stop(traffic: Future[None]) -> None:
    traffic.cancel()
    await asyncio.sleep(0)


def ready(stack: DemoStack) -> bool | None:
    checks = [
        # Both revisions' request and error rates recorded, and 5xx answered by the bad one.
        f'count(service_revision:http_server_errors:ratio_rate30s{{service="{stack.service}"}}) == 2',
        f'service_revision:http_server_errors:rate1m{{revision="{stack.bad}"}} > 0',
        f'service:http_server_request_duration_seconds:p95_1m{{service="{stack.service}"}}',
        # Three scrapes of every target in the last minute: enough for rate() and increase().
        'min(count_over_time(up{job=~"remediator|cloudrun-revisions"}[1m])) >= 3',
        'count(up{job="cloudrun-revisions"} == 1) == 2',
    ]
    return True if all(stack.vector(check) for check in checks) else None


def expand(query: Query, stack: DemoStack) -> str:
    return expand_promql(
        query.text,
        {"service": stack.service, "revision": stack.bad},
        interval=timedelta(seconds=15),
        rate_interval=timedelta(minutes=1),
        range_=timedelta(minutes=5),
    )


def test_every_dashboard_expression_names_its_metrics() -> None:
    for query in PROMQL_QUERIES:
        assert METRIC_NAME.findall(query.text), f"{query.test_id}: no metric selector found in {query.text!r}"


@pytest.mark.parametrize("query", PROMQL_QUERIES, ids=[query.test_id for query in PROMQL_QUERIES])
def test_expression_parses_and_returns_data(query: Query, demo_stack: DemoStack) -> None:
    expr = expand(query, demo_stack)
    answer = demo_stack.query(expr)
    assert answer["status"] == "success", f"{expr}: {answer}"
    referenced = set(METRIC_NAME.findall(expr))
    unknown = referenced - demo_stack.metric_names()
    assert unknown <= LLM_METRICS, (
        f"{expr} reads metrics Prometheus does not have: {sorted(unknown - LLM_METRICS)}"
    )
    if not unknown:
        assert answer["data"]["result"], f"no data for {expr}"


def test_panels_show_what_the_stack_did(demo_stack: DemoStack) -> None:
    """A few panels checked for their values, not only for having some."""
    by_title = {query.title: query for query in PROMQL_QUERIES if query.ref_id == "A"}
    share = {
        sample["metric"]["revision"]: float(sample["value"][1])
        for sample in demo_stack.vector(
            expand(by_title["Traffic share per revision"], demo_stack).replace(
                f'revision=~"{demo_stack.bad}"', 'revision=~".*"'
            )
        )
    }
    assert set(share) == {demo_stack.healthy, demo_stack.bad}
    assert sum(share.values()) == pytest.approx(1.0, abs=0.02)
    ratio = {
        sample["metric"]["revision"]: float(sample["value"][1])
        for sample in demo_stack.vector(
            expand(by_title["Error ratio by revision"], demo_stack).replace(f'"{demo_stack.bad}"', '".*"')
        )
    }
    assert ratio[demo_stack.healthy] == 0 and ratio[demo_stack.bad] > 0.05
    (mean_mttr,) = demo_stack.vector(expand(by_title["Mean MTTR"], demo_stack))
    assert float(mean_mttr["value"][1]) == pytest.approx(42.0)
    (up,) = demo_stack.vector(expand(by_title["Remediator up"], demo_stack))
    assert up["value"][1] == "1"


@pytest.mark.parametrize("query", VARIABLE_QUERIES, ids=[query.test_id for query in VARIABLE_QUERIES])
def test_template_variable_lists_the_stack(query: Query, demo_stack: DemoStack) -> None:
    """`label_values(selector, label)` is what Grafana asks Prometheus' label values API for."""
    match = LABEL_VALUES.match(
        interpolate_variables(query.text, {"service": demo_stack.service}, language="promql")
    )
    assert match is not None, query.text
    selector, label = match.groups()
    parameters = urllib.parse.urlencode({"match[]": selector} if selector else {})
    values = http_get_json(f"{demo_stack.prometheus_url}/api/v1/label/{label}/values?{parameters}")["data"]
    expected = {"service": {demo_stack.service}, "revision": {demo_stack.healthy, demo_stack.bad}}[label]
    assert set(values) == expected
