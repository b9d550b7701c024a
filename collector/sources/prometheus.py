"""Request rate, error ratio, latency and capacity from Prometheus (or any Prometheus-compatible API,
such as Google Managed Prometheus), through prometheus-api-client.

prometheus-api-client is synchronous (requests), so queries run on a small private thread pool: many
queries of one context run in parallel without starving the event loop's default executor. Each HTTP
request carries its own timeout, so an abandoned query's thread always ends.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests import RequestException
from urllib3.util.retry import Retry

from collector.config import CollectorConfig
from collector.exceptions import SourceFailed
from incidents import Figures

SOURCE = "prometheus"
REQUESTS = "http_server_request_duration_seconds"


def _selector(service: str, revision: str | None = None, *, errors: bool = False) -> str:
    labels = [f'service="{_escape(service)}"']
    if revision is not None:
        labels.append(f'revision="{_escape(revision)}"')
    if errors:
        labels.append('http_response_status_code=~"5.."')
    return "{" + ",".join(labels) + "}"


def _revisions_selector(service: str, revisions: list[str], *, errors: bool = False) -> str:
    # Revision names are DNS labels ([a-z0-9-]), so they need no escaping inside the regex.
    names = [r for r in revisions if re.fullmatch(r"[a-z0-9][a-z0-9-]*", r)]
    labels = [f'service="{_escape(service)}"', f'revision=~"{"|".join(names) or "$^"}"']
    if errors:
        labels.append('http_response_status_code=~"5.."')
    return "{" + ",".join(labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True, kw_only=True)
class PrometheusQueries:
    """The PromQL the collector runs. Metric names of the capacity model are settings, because on
    real Cloud Run they come from Cloud Monitoring (e.g. through Google Managed Prometheus)."""

    instances_metric: str = "run_container_instances"
    utilization_metric: str = "run_container_utilization_ratio"

    def rate_by_revision(self, service: str, window: int) -> str:
        return f"sum by (revision) (rate({REQUESTS}_count{_selector(service)}[{window}s]))"

    def errors_by_revision(self, service: str, window: int) -> str:
        return f"sum by (revision) (rate({REQUESTS}_count{_selector(service, errors=True)}[{window}s]))"

    def served_by_revision(self, service: str, window: int, *, errors: bool = False) -> str:
        """Requests each revision answered in the window, counted exactly from the counters: a
        revision younger than the window (a fresh deploy) keeps the requests it served before its
        first scrape, which rate() cannot see."""
        now = f"sum by (revision) ({REQUESTS}_count{_selector(service, errors=errors)})"
        before = f"sum by (revision) ({REQUESTS}_count{_selector(service, errors=errors)} offset {window}s)"
        return f"{now} - ({before} or {now} * 0)"

    def quantile_by_revision(self, service: str, window: int, quantile: float) -> str:
        return (
            f"histogram_quantile({quantile}, sum by (revision, le) "
            f"(rate({REQUESTS}_bucket{_selector(service)}[{window}s])))"
        )

    def quantile(self, service: str, window: int, quantile: float, revision: str | None = None) -> str:
        return (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate({REQUESTS}_bucket{_selector(service, revision)}[{window}s])))"
        )

    def rate(self, service: str, window: int, revision: str | None = None, *, errors: bool = False) -> str:
        return f"sum(rate({REQUESTS}_count{_selector(service, revision, errors=errors)}[{window}s]))"

    def last_served(self, service: str, lookback: int, step: int) -> str:
        """Per revision, the last time it had traffic within `lookback` (unix seconds)."""
        return (
            f"max by (revision) (max_over_time(timestamp(sum by (revision) "
            f"(rate({REQUESTS}_count{_selector(service)}[1m])) > 0)[{lookback}s:{step}s]))"
        )

    def instances(self, service: str) -> str:
        return f"sum by (revision) ({self.instances_metric}{_selector(service)})"

    def busy_instances(self, service: str) -> str:
        """Per revision, utilization x instances: summed over the serving revisions and divided by
        their instances, it weighs each revision by its size."""
        selector = _selector(service)
        return f"sum by (revision) ({self.utilization_metric}{selector} * {self.instances_metric}{selector})"

    def error_ratio_above(self, service: str, window: int, threshold: float) -> str:
        return (
            f"sum(rate({REQUESTS}_count{_selector(service, errors=True)}[{window}s])) "
            f"/ sum(rate({REQUESTS}_count{_selector(service)}[{window}s])) > {threshold}"
        )

    def p95_above(self, service: str, window: int, threshold_seconds: float) -> str:
        return f"{self.quantile(service, window, 0.95)} > {threshold_seconds}"

    def alert_active_since(self, alertname: str, service: str) -> str:
        """ALERTS_FOR_STATE's value is the time the alert's condition first held (its activeAt)."""
        return (
            f'last_over_time(ALERTS_FOR_STATE{{alertname="{_escape(alertname)}",'
            f'service="{_escape(service)}"}}[2m])'
        )


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """Instances and busy instances (utilization x instances) per revision."""

    instances: dict[str, float | None]
    busy: dict[str, float | None]

    def of(self, revisions: set[str] | None) -> tuple[float | None, float | None]:
        """Instances and utilization (0..1) over `revisions` (None: every revision).

        Only the revisions that serve: an idle revision kept warm by min instances would otherwise
        count toward "at max instances" and dilute the utilization of the one that is saturated.
        """
        names = [r for r in self.instances if revisions is None or r in revisions]
        counts = [self.instances[r] for r in names if self.instances[r] is not None]
        if not counts:
            return None, None
        total = float(sum(c for c in counts if c is not None))
        busy = sum((self.busy.get(r) or 0.0) for r in names)
        utilization = round(min(max(busy / total, 0.0), 1.0), 4) if total > 0 else None
        return total, utilization


@dataclass(frozen=True, kw_only=True)
class WindowFigures:
    """Figures over one window, per revision and for the whole service."""

    service: Figures
    by_revision: dict[str, Figures]
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


def _number(value: Any) -> float | None:
    """A Prometheus sample value; NaN and infinities (no traffic, empty histograms) become None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _by_label(result: list[dict[str, Any]], label: str) -> dict[str, float | None]:
    return {sample["metric"].get(label, ""): _number(sample["value"][1]) for sample in result}


def _scalar(result: list[dict[str, Any]]) -> float | None:
    return _number(result[0]["value"][1]) if result else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _ratio(errors: float | None, total: float | None) -> float | None:
    if total is None or total <= 0:
        return None
    return round((errors or 0.0) / total, 6)


class PrometheusSource:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        queries: PrometheusQueries | None = None,
        max_parallel: int = 16,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.queries = queries or PrometheusQueries()
        # No retries inside the client: a slow Prometheus must surface as a gap within the deadline.
        self._client = PrometheusConnect(
            url=self.url, disable_ssl=False, retry=Retry(total=0), timeout=timeout
        )
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="promql")

    @classmethod
    def for_collector(cls, config: CollectorConfig) -> PrometheusSource:
        """The source as the collector's settings describe it (URL, deadline, capacity metric names)."""
        return cls(
            config.prometheus_url,
            timeout=config.query_timeout,
            queries=PrometheusQueries(
                instances_metric=config.instances_metric, utilization_metric=config.utilization_metric
            ),
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def query(self, promql: str, *, at: datetime | None = None) -> list[dict[str, Any]]:
        params = {"time": f"{(at or datetime.now(UTC)).timestamp():.3f}"}
        return await self._run(promql, lambda: self._client.custom_query(promql, params))

    async def query_range(
        self, promql: str, *, start: datetime, end: datetime, step: int
    ) -> list[dict[str, Any]]:
        return await self._run(
            promql, lambda: self._client.custom_query_range(promql, start, end, f"{step}s")
        )

    async def _run(self, promql: str, call: Callable[[], Any]) -> list[dict[str, Any]]:
        """A client call on the private pool, with its errors translated into SourceFailed."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, call)
        except RequestException as exc:
            raise SourceFailed(SOURCE, f"{type(exc).__name__}: {exc}"[:200]) from exc
        except PrometheusApiClientException as exc:
            raise SourceFailed(SOURCE, str(exc)[:200]) from exc
        if not isinstance(result, list):
            raise SourceFailed(SOURCE, f"unexpected result type for {promql!r}")
        return result

    async def condition_onset(
        self, promql: str, *, until: datetime, lookback: int, step: int
    ) -> datetime | None:
        """The first evaluation of the run of samples in which `promql` (a filtering condition) held,
        ending at `until`: when the trouble that is still going on began. One missed evaluation does
        not break the run: a noisy ratio dips under its threshold now and then."""
        result = await self.query_range(
            promql, start=until - timedelta(seconds=lookback), end=until, step=step
        )
        times = sorted({float(ts) for series in result for ts, _ in series.get("values", [])})
        if not times or until.timestamp() - times[-1] > 2 * step:
            return None
        first = times[-1]
        for earlier in reversed(times[:-1]):
            if first - earlier > step * 2.5:
                break
            first = earlier
        return datetime.fromtimestamp(first, UTC)

    async def window(
        self, service: str, *, at: datetime, window: int, extra_quantiles: bool = False
    ) -> WindowFigures:
        """Rate, error ratio and p95 over `[at - window, at]`, per revision and for the service."""
        q = self.queries
        calls = [
            self.query(q.rate_by_revision(service, window), at=at),
            self.query(q.errors_by_revision(service, window), at=at),
            self.query(q.quantile_by_revision(service, window, 0.95), at=at),
            self.query(q.quantile(service, window, 0.95), at=at),
            self.query(q.served_by_revision(service, window), at=at),
            self.query(q.served_by_revision(service, window, errors=True), at=at),
        ]
        if extra_quantiles:
            calls += [
                self.query(q.quantile(service, window, 0.5), at=at),
                self.query(q.quantile(service, window, 0.99), at=at),
            ]
        results = await asyncio.gather(*calls)
        rates, errors, p95s = (_by_label(r, "revision") for r in results[:3])
        served, served_errors = _by_label(results[4], "revision"), _by_label(results[5], "revision")
        # Exact counts where the counters allow (no reset in the window), else rate()'s estimate.
        for revision in set(rates) | set(served):
            count = served.get(revision)
            if count is not None and count >= 0 and count / window >= (rates.get(revision) or 0.0):
                rates[revision] = count / window
                failed = served_errors.get(revision)
                errors[revision] = (
                    failed / window if failed is not None and failed >= 0 else errors.get(revision)
                )
        by_revision = {
            revision: Figures(
                request_rate_rps=round(rate, 4) if rate is not None else None,
                error_rate=_ratio(errors.get(revision), rate),
                latency_p95_ms=_ms(p95s.get(revision)) if rate else None,
            )
            for revision, rate in rates.items()
        }
        total = round(sum(r for r in rates.values() if r is not None), 4) if rates else 0.0
        total_errors = sum(e for e in errors.values() if e is not None) if errors else 0.0
        service_figures = Figures(
            request_rate_rps=total,
            error_rate=_ratio(total_errors, total),
            latency_p95_ms=_ms(_scalar(results[3])) if total else None,
        )
        return WindowFigures(
            service=service_figures,
            by_revision=by_revision,
            latency_p50_ms=_ms(_scalar(results[6])) if extra_quantiles and total else None,
            latency_p99_ms=_ms(_scalar(results[7])) if extra_quantiles and total else None,
        )

    async def revision_window(self, service: str, revision: str, *, at: datetime, window: int) -> Figures:
        q = self.queries
        rate, errors, p95 = await asyncio.gather(
            self.query(q.rate(service, window, revision), at=at),
            self.query(q.rate(service, window, revision, errors=True), at=at),
            self.query(q.quantile(service, window, 0.95, revision), at=at),
        )
        total = _scalar(rate)
        return Figures(
            request_rate_rps=total,
            error_rate=_ratio(_scalar(errors), total),
            latency_p95_ms=_ms(_scalar(p95)) if total else None,
        )

    async def revisions_window(
        self, service: str, revisions: list[str], *, at: datetime, window: int
    ) -> Figures:
        """Rate, error ratio and p95 over the given revisions together (what serves the service now)."""
        selector = _revisions_selector(service, revisions)
        errors_selector = _revisions_selector(service, revisions, errors=True)
        rate, errors, p95 = await asyncio.gather(
            self.query(f"sum(rate({REQUESTS}_count{selector}[{window}s]))", at=at),
            self.query(f"sum(rate({REQUESTS}_count{errors_selector}[{window}s]))", at=at),
            self.query(
                f"histogram_quantile(0.95, sum by (le) (rate({REQUESTS}_bucket{selector}[{window}s])))", at=at
            ),
        )
        total = _scalar(rate)
        return Figures(
            request_rate_rps=total,
            error_rate=_ratio(_scalar(errors), total),
            latency_p95_ms=_ms(_scalar(p95)) if total else None,
        )

    async def last_served(self, service: str, *, at: datetime, lookback: int) -> dict[str, datetime]:
        step = max(15, lookback // 720)
        result = await self.query(self.queries.last_served(service, lookback, step), at=at)
        found = {}
        for revision, value in _by_label(result, "revision").items():
            if value is not None and revision:
                found[revision] = datetime.fromtimestamp(value, UTC)
        return found

    async def capacity(self, service: str, *, at: datetime) -> Capacity:
        instances, busy = await asyncio.gather(
            self.query(self.queries.instances(service), at=at),
            self.query(self.queries.busy_instances(service), at=at),
        )
        return Capacity(instances=_by_label(instances, "revision"), busy=_by_label(busy, "revision"))

    async def alert_active_since(self, alertname: str, service: str, *, at: datetime) -> datetime | None:
        result = await self.query(self.queries.alert_active_since(alertname, service), at=at)
        values = [v for v in _by_label(result, "alertname").values() if v is not None]
        return datetime.fromtimestamp(min(values), UTC) if values else None
