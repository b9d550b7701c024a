"""Recovery verification on fresh metrics, MTTR arithmetic, and the Grafana annotation sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from actuator import (
    ActuatorMetrics,
    Check,
    GrafanaAnnotations,
    GrafanaConfig,
    RecoveryVerifier,
    TransientCloudRunError,
    VerifyConfig,
)
from actuator.mttr import recovery_times
from actuator.verification import judge
from collector import CloudRunQueries, HealthThresholds, MetricsTiming, PrometheusSource
from incidents import Figures, Incident
from incidents.runtime import Secret
from tests.support.real_parts import free_port

ServerFactory = Callable[..., Awaitable[TestServer]]


class ScriptedPrometheus:
    """Answers the verifier's three queries (rate, 5xx rate, p95) from a list of per-check figures."""

    def __init__(self, checks: list[tuple[float, float, float]]) -> None:
        self.checks = checks
        self.seen: list[str] = []

    def app(self) -> web.Application:
        times: list[str] = []

        async def query(request: web.Request) -> web.Response:
            promql = request.query["query"]
            self.seen.append(promql)
            # The three queries of one check run concurrently and share its evaluation time: that
            # time, not arrival order, says which check (and so which scripted figures) they belong to.
            at = request.query["time"]
            if at not in times:
                times.append(at)
            rate, errors, p95 = self.checks[min(times.index(at), len(self.checks) - 1)]
            failed = "5.." in promql or 'response_code_class="5xx"' in promql
            value = p95 if "histogram_quantile" in promql else errors if failed else rate
            if promql.endswith("* 1000"):  # the app profile's quantile, seconds to milliseconds
                value *= 1000
            result = [{"metric": {}, "value": [0, str(value)]}]
            return web.json_response(
                {"status": "success", "data": {"resultType": "vector", "result": result}}
            )

        app = web.Application()
        app.router.add_get("/api/v1/query", query)
        return app


@pytest.fixture
async def verifier_for(
    aiohttp_server: ServerFactory,
) -> AsyncIterator[Callable[..., Awaitable[RecoveryVerifier]]]:
    sources: list[PrometheusSource] = []

    async def make(checks: list[tuple[float, float, float]], **config: Any) -> RecoveryVerifier:
        server = await aiohttp_server(ScriptedPrometheus(checks).app())
        source = PrometheusSource(str(server.make_url("")).rstrip("/"), timeout=1.0)
        sources.append(source)

        clock = [START]

        async def advance(seconds: float) -> None:  # simulated time: the test does not wait
            clock[0] += timedelta(seconds=seconds)

        return RecoveryVerifier(
            source,
            thresholds=HealthThresholds(),
            config=VerifyConfig(consecutive_checks=3, interval=5, window_seconds=20, **config),
            sleep=advance,
            clock=lambda: clock[0],
        )

    yield make
    for source in sources:
        source.close()


START = datetime.now(UTC)
FAR = START + timedelta(minutes=5)


def serving(revisions: list[str]) -> Callable[[], Awaitable[list[str]]]:
    """The revisions serving the service, as the worker hands them to the verifier (read on demand)."""

    async def read() -> list[str]:
        return revisions

    return read


async def test_recovery_needs_consecutive_healthy_checks(verifier_for: Any) -> None:
    # unhealthy, healthy, healthy, unhealthy (streak reset), then three healthy
    verifier = await verifier_for(
        [(20, 2, 0.1), (20, 0, 0.1), (20, 0, 0.1), (20, 0, 1.5), (20, 0, 0.1), (20, 0.1, 0.2), (20, 0, 0.1)]
    )
    result = await verifier.verify("svc", serving(["svc-00001-ok"]), deadline=FAR)
    assert result.recovered
    assert result.checks == 7
    assert "20.0/s" in result.reason


async def test_too_little_traffic_never_counts_as_healthy(verifier_for: Any) -> None:
    verifier = await verifier_for([(0.2, 0, 0.05)])
    result = await verifier.verify("svc", serving(["svc-00001-ok"]), deadline=START + timedelta(seconds=12))
    assert not result.recovered
    assert result.checks == 3  # at 0, 5 and 10 s; a fourth at 15 s would come after the deadline
    assert "too little traffic" in result.reason


async def test_no_recovery_by_the_deadline_is_reported_with_the_last_figures(verifier_for: Any) -> None:
    verifier = await verifier_for([(20, 4, 0.3)])
    result = await verifier.verify("svc", serving(["svc-00002-bad"]), deadline=START + timedelta(seconds=12))
    assert not result.recovered
    assert "errors 20.0% > 2.0%" in result.reason


async def test_verification_queries_only_the_serving_revisions(aiohttp_server: ServerFactory) -> None:
    prometheus = ScriptedPrometheus([(20, 0, 0.1)])
    server = await aiohttp_server(prometheus.app())
    source = PrometheusSource(str(server.make_url("")).rstrip("/"), timeout=1.0)
    try:
        verifier = RecoveryVerifier(
            source, thresholds=HealthThresholds(), config=VerifyConfig(consecutive_checks=1)
        )
        await verifier.verify("svc", serving(["svc-00001-ok", "svc-00003-new"]), deadline=FAR)
    finally:
        source.close()
    assert all('revision=~"svc-00001-ok|svc-00003-new"' in q for q in prometheus.seen)
    assert all('service="svc"' in q for q in prometheus.seen)


async def test_unreachable_prometheus_is_not_healthy() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    try:
        verifier = RecoveryVerifier(
            source, thresholds=HealthThresholds(), config=VerifyConfig(consecutive_checks=1)
        )
        check = await verifier.check("svc", ["svc-00001-ok"])
    finally:
        source.close()
    assert not check.healthy
    assert check.reason.startswith("metrics unavailable")


def test_an_unknown_p95_is_not_healthy() -> None:
    thresholds = HealthThresholds()
    healthy, reason = judge(Figures(request_rate_rps=20, error_rate=0.0, latency_p95_ms=None), thresholds)
    assert (healthy, reason) == (False, "p95 unknown")
    healthy, _ = judge(Figures(request_rate_rps=20, error_rate=0.0, latency_p95_ms=80), thresholds)
    assert healthy


async def test_an_unknown_p95_never_verifies_recovery(verifier_for: Any) -> None:
    verifier = await verifier_for([(20, 0, float("nan"))])  # Prometheus answers NaN: no latency data
    result = await verifier.verify("svc", serving(["svc-00001-ok"]), deadline=START + timedelta(seconds=12))
    assert not result.recovered
    assert "p95 unknown" in result.reason


async def test_cloud_run_failing_to_say_which_revisions_serve_is_an_unhealthy_check_until_it_answers(
    verifier_for: Any,
) -> None:
    verifier = await verifier_for([(20, 0, 0.1)])
    failures = [
        TransientCloudRunError("GetService failed after 5 attempts: 503 unavailable", service="svc"),
        TransientCloudRunError("GetService failed after 5 attempts: 429 too many requests", service="svc"),
    ]
    seen: list[str] = []

    async def flaky() -> list[str]:
        if failures:
            raise failures.pop(0)
        return ["svc-00001-ok"]

    async def on_check(check: Check, streak: int) -> None:
        seen.append(check.reason)

    result = await verifier.verify("svc", flaky, deadline=FAR, on_check=on_check)
    assert result.recovered and result.checks == 5  # two failed checks, then three healthy
    assert seen[0] == "could not check: GetService failed after 5 attempts: 503 unavailable"
    assert "429" in seen[1]


async def test_a_cloud_run_outage_through_the_deadline_ends_verification_not_recovered(
    verifier_for: Any,
) -> None:
    verifier = await verifier_for([(20, 0, 0.1)])

    async def down() -> list[str]:
        raise TransientCloudRunError("GetService failed after 5 attempts: 503 unavailable", service="svc")

    result = await verifier.verify("svc", down, deadline=START + timedelta(seconds=12))
    assert (result.recovered, result.checks) == (False, 3)
    assert result.reason == (
        "no recovery by the deadline; last check: could not check: GetService failed after 5 attempts: "
        "503 unavailable"
    )


async def test_a_check_that_hangs_ends_at_the_deadline() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    verifier = RecoveryVerifier(
        source, thresholds=HealthThresholds(), config=VerifyConfig(consecutive_checks=1, interval=0.1)
    )

    async def hangs() -> list[str]:
        await asyncio.Event().wait()
        return []

    started = asyncio.get_running_loop().time()
    try:
        result = await verifier.verify("svc", hangs, deadline=datetime.now(UTC) + timedelta(seconds=0.5))
    finally:
        source.close()
    assert asyncio.get_running_loop().time() - started < 1.5
    assert not result.recovered
    assert "did not finish within" in result.reason


def test_mttr_is_measured_from_the_estimated_onset_and_parts_from_the_same_start() -> None:
    t0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    incident = Incident(
        fault_started_at=t0,
        fault_started_source="alerts_for_state",
        alert_fired_at=t0 + timedelta(seconds=10),
        detected_at=t0 + timedelta(seconds=12),
        decided_at=t0 + timedelta(seconds=12.2),
        mitigated_at=t0 + timedelta(seconds=13),
    )
    times = recovery_times(incident, verified_at=t0 + timedelta(seconds=31))
    assert (times.mttr_seconds, times.basis) == (31.0, "fault_started_at (alerts_for_state)")
    assert (times.time_to_detect_seconds, times.time_to_decide_seconds) == (12.0, 12.2)
    assert (times.time_to_mitigate_seconds, times.time_to_verify_seconds) == (13.0, 31.0)
    without_estimate = Incident(
        alert_fired_at=t0 + timedelta(seconds=10), detected_at=t0 + timedelta(seconds=12)
    )
    fallback = recovery_times(without_estimate, verified_at=t0 + timedelta(seconds=31))
    assert (fallback.mttr_seconds, fallback.basis) == (21.0, "alert_fired_at (no onset estimate)")


class RecordingGrafana:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.received: list[tuple[dict[str, Any], str | None]] = []

    def app(self) -> web.Application:
        async def annotate(request: web.Request) -> web.Response:
            self.received.append((await request.json(), request.headers.get("Authorization")))
            await asyncio.sleep(self.delay)
            return web.json_response({"id": 1, "message": "Annotation added"}, status=self.status)

        app = web.Application()
        app.router.add_post("/api/annotations", annotate)
        return app


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_annotation_payload_and_auth(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    grafana = RecordingGrafana()
    server = await aiohttp_server(grafana.app())
    metrics = ActuatorMetrics(CollectorRegistry())
    sink = GrafanaAnnotations(
        http, GrafanaConfig(url=str(server.make_url("")), token=Secret("glsa_test")), metrics
    )
    at = datetime(2026, 11, 28, 12, 0, 5, tzinfo=UTC)
    assert await sink.post(text="rolled back", tags=["checkout", "ROLLBACK"], at=at, incident_id=3)
    body, auth = grafana.received[0]
    assert body == {
        "time": int(at.timestamp() * 1000),
        "tags": ["remediator", "checkout", "ROLLBACK"],
        "text": "rolled back",
    }
    assert auth == "Bearer glsa_test"
    assert metrics.annotations.labels("ok")._value.get() == 1


@pytest.mark.parametrize("failure", ["http-500", "unreachable", "slow"])
async def test_annotation_failures_never_raise_and_are_counted(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, failure: str
) -> None:
    if failure == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    else:
        grafana = RecordingGrafana(status=500) if failure == "http-500" else RecordingGrafana(delay=2)
        url = str((await aiohttp_server(grafana.app())).make_url(""))
    metrics = ActuatorMetrics(CollectorRegistry())
    sink = GrafanaAnnotations(http, GrafanaConfig(url=url, timeout=0.3), metrics)
    started = asyncio.get_running_loop().time()
    assert await sink.post(text="x", tags=["svc"], at=datetime.now(UTC)) is False
    assert asyncio.get_running_loop().time() - started < 1.5
    assert metrics.annotations.labels("error")._value.get() == 1


async def test_late_metrics_count_only_once_their_window_lies_after_the_change(
    aiohttp_server: ServerFactory,
) -> None:
    # Cloud Monitoring's timing: 60 s samples readable 120 s late. A check reads the 120 s window
    # ending 120 s ago, so the first one made only of data after the change comes 240 s after it.
    prometheus = ScriptedPrometheus([(20, 0, 100)])
    server = await aiohttp_server(prometheus.app())
    clock = [START]
    source = PrometheusSource(
        str(server.make_url("")).rstrip("/"),
        timeout=1.0,
        queries=CloudRunQueries(timing=MetricsTiming(sample_period_seconds=60, visibility_delay_seconds=120)),
        clock=lambda: clock[0],
    )

    async def advance(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)

    seen: list[tuple[float, bool, str]] = []

    async def on_check(check: Any, streak: int) -> None:
        seen.append(((check.at - START).total_seconds(), check.healthy, check.reason))

    try:
        verifier = RecoveryVerifier(
            source,
            thresholds=HealthThresholds(),
            config=VerifyConfig(consecutive_checks=3, interval=30, window_seconds=20, fresh_data_only=True),
            sleep=advance,
            clock=lambda: clock[0],
        )
        result = await verifier.verify(
            "svc", serving(["svc-00001-ok"]), deadline=START + timedelta(minutes=10), on_check=on_check
        )
    finally:
        source.close()
    assert result.recovered
    waiting = [
        at for at, healthy, reason in seen if reason.startswith("waiting for metrics from after the change")
    ]
    assert waiting == [0, 30, 60, 90, 120, 150, 180, 210]  # before 240 s, healthy figures do not count
    assert [at for at, healthy, _ in seen if healthy] == [240, 270, 300]
    # Nothing was asked of Prometheus before the window was fresh; then the window ends 120 s back.
    assert all('revision_name=~"svc-00001-ok"' in q for q in prometheus.seen)
    assert all("[120s]" in q or "offset 120s" in q for q in prometheus.seen)


async def test_without_fresh_data_only_the_first_healthy_check_counts(aiohttp_server: ServerFactory) -> None:
    prometheus = ScriptedPrometheus([(20, 0, 0.1)])
    server = await aiohttp_server(prometheus.app())
    source = PrometheusSource(str(server.make_url("")).rstrip("/"), timeout=1.0)
    try:
        verifier = RecoveryVerifier(
            source, thresholds=HealthThresholds(), config=VerifyConfig(consecutive_checks=1)
        )
        result = await verifier.verify("svc", serving(["svc-00001-ok"]), deadline=FAR)
    finally:
        source.close()
    assert result.recovered and result.checks == 1
