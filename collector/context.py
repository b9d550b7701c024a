"""`build_context`: everything the collector knows about one alerting service, as an IncidentContext.

Sources run concurrently, each under its own deadline. A source that fails leaves its part of the
context empty and says so in `gaps`; nothing is guessed, and no-traffic figures are null, not zero.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from collector.config import CollectorConfig
from collector.exceptions import SourceFailed
from collector.sources.base import SourceResult, bounded
from collector.sources.cloudrun import (
    DEFAULT_MAX_INSTANCES,
    CloudRunClients,
    CloudRunSource,
    ServiceState,
)
from collector.sources.logs import LogsSource
from collector.sources.prometheus import Capacity, PrometheusSource, WindowFigures
from incidents import (
    AlertInfo,
    Figures,
    IncidentContext,
    LogLine,
    RecentAction,
    Revision,
    RevisionHistory,
    Scaling,
    ServiceMetrics,
    ServiceRef,
)

log = logging.getLogger(__name__)
MAX_HISTORY_REVISIONS = 5
# Onset estimation: the alert's condition over a short window (the profile's: 15 s for scraped app
# metrics, two sampling periods for Cloud Monitoring's), evaluated once per sampling period.
ONSET_LOOKBACK_SECONDS = 900


class ContextBuilder:
    def __init__(
        self,
        config: CollectorConfig,
        *,
        prometheus: PrometheusSource,
        cloud_run: CloudRunSource | None,
        logs: LogsSource | None,
    ) -> None:
        self.config = config
        self.prometheus = prometheus
        self.cloud_run = cloud_run
        self.logs = logs

    @classmethod
    @asynccontextmanager
    async def open(
        cls, config: CollectorConfig, *, cloud_run_clients: CloudRunClients | None = None
    ) -> AsyncIterator[ContextBuilder]:
        """Build every source from `config` and release them all on exit."""
        prometheus = PrometheusSource.for_collector(config)
        clients = cloud_run_clients
        owns_clients = clients is None
        if clients is None:
            try:
                clients = CloudRunClients.for_collector(config)
            except Exception as exc:  # e.g. no application default credentials on this machine
                log.warning("Cloud Run client unavailable; contexts will name the gap: %s", exc)
        session = aiohttp.ClientSession()
        try:
            yield cls(
                config,
                prometheus=prometheus,
                cloud_run=CloudRunSource(clients, timeout=config.query_timeout) if clients else None,
                logs=LogsSource(
                    session,
                    endpoint=config.logging_endpoint,
                    project=config.project,
                    max_lines=config.max_log_lines,
                    max_chars=config.max_log_chars,
                    lookback=timedelta(seconds=config.log_lookback_seconds),
                    timeout=config.query_timeout,
                ),
            )
        finally:
            await session.close()
            prometheus.close()
            if owns_clients and clients is not None:
                clients.close()

    # the ContextSource protocol

    async def build_context(
        self, alert: AlertInfo, *, recent_actions: list[RecentAction], now: datetime
    ) -> IncidentContext:
        config = self.config
        service = alert.labels.get("service", "")
        timeout = config.query_timeout
        window = self._window
        # The alert fired from data that was already `lag` old: the baseline ends that much earlier too.
        lag = self.prometheus.queries.timing.lag_seconds
        baseline_at = alert.starts_at - timedelta(seconds=config.baseline_gap_seconds + lag)
        current, baseline, capacity, state, logs, last_served = await asyncio.gather(
            bounded(
                "prometheus",
                self.prometheus.window(service, at=now, window=window, extra_quantiles=True),
                seconds=timeout,
            ),
            bounded(
                "prometheus",
                self.prometheus.window(service, at=baseline_at, window=config.baseline_seconds),
                seconds=timeout,
            ),
            bounded("prometheus", self.prometheus.capacity(service, at=now), seconds=timeout),
            self.service_state(service),
            self._logs(service, now=now),
            bounded(
                "prometheus",
                self.prometheus.last_served(service, at=now, lookback=config.history_lookback_seconds),
                seconds=timeout,
            ),
        )
        gaps = _unique(r.gap for r in (current, baseline, capacity, state, logs, last_served) if r.gap)
        histories = await self._histories(service, state, last_served, gaps)
        return IncidentContext(
            observed_at=now,
            service=ServiceRef(
                name=service,
                project=config.project,
                region=config.region,
                generation=state.value.generation if state.value else None,
                etag=state.value.etag if state.value else None,
            ),
            alert=alert,
            thresholds=config.thresholds.for_window(window),
            metrics=self._service_metrics(current, baseline),
            revisions=self._revisions(state.value, current.value, baseline.value, histories),
            scaling=self._scaling(state.value, capacity),
            logs=logs.value or [],
            recent_actions=recent_actions,
            gaps=gaps,
        )

    async def fresh_figures(
        self, service: str, revisions: list[str], *, window_seconds: int, now: datetime
    ) -> SourceResult[Figures]:
        """The given revisions' figures together over a short window ending now (or at the newest
        readable point, for a profile whose samples arrive late): is the fault still there?"""
        return await bounded(
            "prometheus",
            self.prometheus.revisions_window(service, revisions, at=now, window=window_seconds),
            seconds=self.config.query_timeout,
        )

    async def estimate_onset(self, alert: AlertInfo) -> tuple[datetime, str] | None:
        """When the fault began, estimated from the metrics.

        Prometheus sets an alert's startsAt when it starts *firing*: its own rule window plus `for:`
        after the onset. Better: the first evaluation of the unbroken run in which the alert's condition
        (error ratio or p95 over the thresholds) held over a short window (the profile's
        `onset_window_seconds`), by a range query ending where the alert's data ended. Fallback:
        ALERTS_FOR_STATE's activeAt (the first evaluation at which the alert's own, longer-window
        condition held). None when neither answers.
        """
        service = alert.labels.get("service", "")
        thresholds = self.config.thresholds
        queries = self.prometheus.queries
        window, step = queries.onset_window_seconds, queries.onset_step_seconds
        if alert.name == "HighLatencyP95":
            condition = queries.p95_above(service, window, thresholds.latency_p95_ms)
            source = f"p95_{window}s"
        else:
            condition = queries.error_ratio_above(service, window, thresholds.error_rate)
            source = f"error_ratio_{window}s"
        earliest = alert.starts_at - timedelta(minutes=30)
        # The data the alert fired on was `lag` old already; the run of the condition ends there.
        until = alert.starts_at - timedelta(seconds=queries.timing.lag_seconds)
        lookback = max(ONSET_LOOKBACK_SECONDS, 15 * step)
        result = await bounded(
            "prometheus",
            self.prometheus.condition_onset(condition, until=until, lookback=lookback, step=step),
            seconds=self.config.query_timeout,
        )
        if result.value is not None and earliest <= result.value <= alert.starts_at:
            return result.value, source
        active = await bounded(
            "prometheus",
            self.prometheus.alert_active_since(
                alert.name, service, at=alert.starts_at + timedelta(seconds=1)
            ),
            seconds=self.config.query_timeout,
        )
        if active.value is not None and earliest <= active.value <= alert.starts_at:
            return active.value, "alerts_for_state"
        return None

    async def traffic(self, service: str) -> dict[str, int]:
        """Percent of traffic per serving revision now; SourceFailed when Cloud Run cannot be read."""
        if self.cloud_run is None:
            raise SourceFailed("cloud_run", "no Cloud Run client", service=service)
        return await self.cloud_run.traffic(service)

    # the parts

    async def service_state(self, service: str) -> SourceResult[ServiceState]:
        """The service and its revisions as Cloud Run describes them now (also what an approval is
        checked against); a gap when Cloud Run cannot be read in time."""
        if self.cloud_run is None:
            return SourceResult(None, "cloud_run: client unavailable (no credentials or endpoint)")
        return await bounded("cloud_run", self.cloud_run.read(service), seconds=self.config.query_timeout)

    async def _logs(self, service: str, *, now: datetime) -> SourceResult[list[LogLine]]:
        if self.logs is None:
            return SourceResult(None, "logs: not configured")
        return await bounded("logs", self.logs.read(service, now=now), seconds=self.config.query_timeout)

    async def _histories(
        self,
        service: str,
        state: SourceResult[ServiceState],
        last_served: SourceResult[dict[str, datetime]],
        gaps: list[str],
    ) -> dict[str, RevisionHistory]:
        """For revisions not serving now: their figures over the window before they last served."""
        if state.value is None or last_served.value is None:
            return {}
        # By traffic share, not by recent requests: a revision that lost its traffic seconds ago
        # still shows requests in the window, yet its record is what it did while it served.
        wanted = [
            (revision.name, last_served.value[revision.name])
            for revision in state.value.revisions
            if revision.traffic_percent == 0 and revision.name in last_served.value
        ][:MAX_HISTORY_REVISIONS]
        results = await asyncio.gather(
            *(
                bounded(
                    "prometheus",
                    self.prometheus.revision_window(
                        service, name, at=until, window=self.config.baseline_seconds
                    ),
                    seconds=self.config.query_timeout,
                )
                for name, until in wanted
            )
        )
        histories = {}
        for (name, until), result in zip(wanted, results, strict=True):
            if result.value is None:
                gaps.extend(g for g in [f"{result.gap} (history of {name})"] if g not in gaps)
                continue
            histories[name] = RevisionHistory(
                error_rate=result.value.error_rate,
                latency_p95_ms=result.value.latency_p95_ms,
                request_rate_rps=result.value.request_rate_rps,
                served_until=until,
            )
        return histories

    @property
    def _window(self) -> int:
        """The current figures' window: the setting, or two sampling periods when that is longer."""
        return self.prometheus.queries.window(self.config.window_seconds)

    def _service_metrics(
        self, current: SourceResult[WindowFigures], baseline: SourceResult[WindowFigures]
    ) -> ServiceMetrics:
        window = self._window
        if current.value is None:
            return ServiceMetrics(window_seconds=window)
        figures = current.value.service
        rate = figures.request_rate_rps
        return ServiceMetrics(
            window_seconds=window,
            requests_in_window=round(rate * window, 1) if rate is not None else None,
            request_rate_rps=rate,
            error_rate=figures.error_rate,
            latency_p95_ms=figures.latency_p95_ms,
            latency_p50_ms=current.value.latency_p50_ms,
            latency_p99_ms=current.value.latency_p99_ms,
            baseline=baseline.value.service if baseline.value is not None else Figures(),
            baseline_window_seconds=self.config.baseline_seconds,
        )

    def _revisions(
        self,
        state: ServiceState | None,
        current: WindowFigures | None,
        baseline: WindowFigures | None,
        histories: dict[str, RevisionHistory],
    ) -> list[Revision]:
        if state is None:
            return []
        revisions = []
        for revision in state.revisions:
            figures = current.by_revision.get(revision.name) if current is not None else None
            if figures is None:
                figures = Figures(request_rate_rps=0.0) if current is not None else Figures()
            own_baseline = baseline.by_revision.get(revision.name) if baseline is not None else None
            if own_baseline is not None and not own_baseline.request_rate_rps:
                own_baseline = None
            revisions.append(
                Revision(
                    name=revision.name,
                    created_at=revision.created_at,
                    traffic_percent=revision.traffic_percent,
                    ready=revision.ready,
                    latest=revision.latest,
                    metrics=figures,
                    history=histories.get(revision.name),
                    baseline=own_baseline,
                )
            )
        return revisions

    def _scaling(self, state: ServiceState | None, capacity: SourceResult[Capacity]) -> Scaling:
        serving = {r.name for r in state.revisions if r.traffic_percent > 0} if state is not None else None
        instances, utilization = capacity.value.of(serving) if capacity.value is not None else (None, None)
        if state is None:
            return Scaling(current_instances=instances, utilization=utilization)
        newest_serving = next((r for r in state.revisions if r.traffic_percent > 0), None)
        template = newest_serving or (state.revisions[0] if state.revisions else None)
        max_instances = (
            state.max_instances or (template.max_instances if template else None) or DEFAULT_MAX_INSTANCES
        )
        min_instances = state.min_instances or (template.min_instances if template else None) or 0
        return Scaling(
            min_instances=min_instances,
            max_instances=max_instances,
            current_instances=instances,
            concurrency=template.concurrency if template else None,
            cpu=template.cpu if template else None,
            memory=template.memory if template else None,
            utilization=utilization,
        )


def _unique(items: Any) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def with_window(config: CollectorConfig, window_seconds: int) -> CollectorConfig:
    """A copy of `config` with another current-figures window (verification uses a shorter one)."""
    return replace(config, window_seconds=window_seconds)
