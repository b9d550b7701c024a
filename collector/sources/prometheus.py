"""Request rate, error ratio, latency and capacity from Prometheus (or any Prometheus-compatible API,
such as Google Cloud Managed Service for Prometheus), through prometheus-api-client.

What is asked comes from the metrics profile's query builder (`collector.sources.queries`); windows
are never shorter than two of the profile's sampling periods, and never end later than the newest
data that can be readable (`MetricsTiming.lag_seconds` behind the clock).

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

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests import ConnectionError as RequestsConnectionError
from requests import RequestException, Timeout
from urllib3.util.retry import Retry

from collector.config import CollectorConfig
from collector.exceptions import SourceFailed
from collector.sources.auth import AuthenticationFailed, GoogleBearerAuth, google_bearer_auth
from collector.sources.queries import AppQueries, PrometheusQueries
from incidents import Figures

SOURCE = "prometheus"


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
        busy_known = [self.busy.get(r) for r in names]
        if total <= 0 or any(b is None for b in busy_known):
            # A revision whose busy figure did not come back (a late sample, a gap) leaves the
            # utilization unknown: never 0, which would read as idle.
            return total, None
        busy = sum(b for b in busy_known if b is not None)
        return total, round(min(max(busy / total, 0.0), 1.0), 4)


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


def _ms(milliseconds: float | None) -> float | None:
    return None if milliseconds is None else round(milliseconds, 1)


def _ratio(errors: float | None, total: float | None) -> float | None:
    if total is None or total <= 0:
        return None
    return round((errors or 0.0) / total, 6)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def describe_request_error(exc: RequestException, *, url: str, timeout: float) -> str:
    """A failed request in words: which server, and what went wrong. requests' own message is
    urllib3's, with the whole URL-encoded query in it (hundreds of characters of `%28rate%28...`)."""
    text = str(exc)
    if isinstance(exc, Timeout) or "timed out" in text:
        return f"{url} did not answer within {timeout:g}s"
    if isinstance(exc, RequestsConnectionError):
        found = _ERRNO.search(text)
        reason = found.group(1).strip().lower() if found else "connection failed"
        return f"cannot connect to {url}: {reason}"
    return f"request to {url} failed ({type(exc).__name__})"


class PrometheusSource:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        queries: PrometheusQueries | None = None,
        auth: GoogleBearerAuth | None = None,
        max_parallel: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.queries = queries or AppQueries()
        self.auth = auth
        self._clock = clock
        session = requests.Session()
        session.auth = auth
        # No retries inside the client: a slow Prometheus must surface as a gap within the deadline.
        self._client = PrometheusConnect(
            url=self.url, disable_ssl=False, retry=Retry(total=0), timeout=timeout, session=session
        )
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="promql")

    @classmethod
    def for_collector(cls, config: CollectorConfig) -> PrometheusSource:
        """The source as the collector's settings describe it (URL, deadline, profile, auth)."""
        return cls(
            config.prometheus_url,
            timeout=config.query_timeout,
            queries=config.queries(),
            auth=google_bearer_auth(
                config.prometheus_url, config.prometheus_auth, timeout=config.query_timeout
            ),
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        if self.auth is not None:
            self.auth.close()

    def data_window(self, at: datetime, window: int) -> tuple[datetime, int]:
        """The window actually read for "`window` seconds up to `at`": at least two sampling periods
        long, and ending no later than the newest data that can be readable now."""
        lag = self.queries.timing.lag_seconds
        if lag > 0:
            at = min(at, self._clock() - timedelta(seconds=lag))
        return at, self.queries.window(window)

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
        except AuthenticationFailed:
            raise
        except RequestException as exc:
            raise SourceFailed(
                SOURCE, describe_request_error(exc, url=self.url, timeout=self.timeout)
            ) from exc
        except PrometheusApiClientException as exc:
            message = str(exc)
            if message.startswith(("HTTP Status Code 401", "HTTP Status Code 403")):
                if self.auth is not None:
                    self.auth.invalidate()
                raise AuthenticationFailed(message[:200]) from exc
            raise SourceFailed(SOURCE, message[:200]) from exc
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
        """Rate, error ratio and p95 over `[at - window, at]` (see `data_window`), per revision and
        for the service."""
        at, window = self.data_window(at, window)
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
        at, window = self.data_window(at, window)
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
        """Rate, error ratio and p95 over the given revisions together (what serves the service now).

        Like `window`, the requests are counted exactly where the counters allow: a revision younger
        than the window keeps the requests it served before its first sample, which rate() drops."""
        at, window = self.data_window(at, window)
        q = self.queries
        rate, errors, p95, served, served_errors = await asyncio.gather(
            self.query(q.revisions_rate(service, revisions, window), at=at),
            self.query(q.revisions_rate(service, revisions, window, errors=True), at=at),
            self.query(q.revisions_quantile(service, revisions, window, 0.95), at=at),
            self.query(q.revisions_served(service, revisions, window), at=at),
            self.query(q.revisions_served(service, revisions, window, errors=True), at=at),
        )
        total, failed = _scalar(rate), _scalar(errors)
        counts = _by_label(served, "revision")
        failed_counts = _by_label(served_errors, "revision")
        chosen = [counts.get(revision) for revision in revisions if revision in counts]
        if chosen and all(count is not None and count >= 0 for count in chosen):
            exact = sum(count for count in chosen if count is not None) / window
            if exact >= (total or 0.0):
                total = exact
                failed_chosen = [failed_counts.get(revision) or 0.0 for revision in revisions]
                failed = sum(max(0.0, count) for count in failed_chosen) / window
        return Figures(
            request_rate_rps=total,
            error_rate=_ratio(failed, total),
            latency_p95_ms=_ms(_scalar(p95)) if total else None,
        )

    async def last_served(self, service: str, *, at: datetime, lookback: int) -> dict[str, datetime]:
        step = max(15, lookback // 720, self.queries.timing.sample_period_seconds)
        result = await self.query(self.queries.last_served(service, lookback, step), at=at)
        found = {}
        for revision, value in _by_label(result, "revision").items():
            if value is not None and revision:
                found[revision] = datetime.fromtimestamp(value, UTC)
        return found

    async def capacity(self, service: str, *, at: datetime) -> Capacity:
        at, _ = self.data_window(at, 0)
        instances, busy = await asyncio.gather(
            self.query(self.queries.instances(service), at=at),
            self.query(self.queries.busy_instances(service), at=at),
        )
        return Capacity(instances=_by_label(instances, "revision"), busy=_by_label(busy, "revision"))

    async def alert_active_since(self, alertname: str, service: str, *, at: datetime) -> datetime | None:
        result = await self.query(self.queries.alert_active_since(alertname, service), at=at)
        values = [v for v in _by_label(result, "alertname").values() if v is not None]
        return datetime.fromtimestamp(min(values), UTC) if values else None
