"""Proving recovery with fresh metrics on the revisions that serve the service now.

Healthy means: enough traffic to judge (the same minimum request rate as the alerts), error ratio and
p95 known and under the thresholds, for `consecutive_checks` checks in a row. Too little traffic, or
a figure that cannot be read, is never counted as healthy: such a check resets the count.

A check that fails (Cloud Run cannot say which revisions serve, Prometheus or the store is down) is an
unhealthy check with the reason, never an error that ends verification: the verifier keeps checking
until recovery holds or the deadline passes, and no check runs past the deadline.

The window read is the metrics profile's (`PrometheusSource.data_window`): at least two sampling
periods, ending at the newest data that can be readable. With `fresh_data_only` (the `cloud-run`
profile, whose samples arrive minutes late) a check counts only once that whole window lies after
the verification began, i.e. after the change: figures from before the rollback prove nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from actuator.config import VerifyConfig
from collector import HealthThresholds, PrometheusSource, SourceFailed
from incidents import Figures, RemediatorError, utcnow

log = logging.getLogger(__name__)

# Which revisions serve the service now: read (from Cloud Run) when a check needs them.
ServingRevisions = Callable[[], Awaitable[list[str]]]


@dataclass(frozen=True, kw_only=True)
class Check:
    at: datetime
    figures: Figures | None
    healthy: bool
    reason: str


@dataclass(frozen=True, kw_only=True)
class VerificationResult:
    recovered: bool
    checks: int
    last: Check | None
    reason: str


def judge(figures: Figures, thresholds: HealthThresholds) -> tuple[bool, str]:
    rate = figures.request_rate_rps
    if rate is None or rate < thresholds.min_request_rate:
        return False, f"too little traffic to judge ({rate or 0:.2f}/s < {thresholds.min_request_rate:g}/s)"
    problems = []
    if figures.error_rate is None:
        problems.append("error ratio unknown")
    elif figures.error_rate > thresholds.error_rate:
        problems.append(f"errors {figures.error_rate:.1%} > {thresholds.error_rate:.1%}")
    # An unknown p95 is unknown, not fast: latency is half of what the alerts watch.
    if figures.latency_p95_ms is None:
        problems.append("p95 unknown")
    elif figures.latency_p95_ms > thresholds.latency_p95_ms:
        problems.append(f"p95 {figures.latency_p95_ms:.0f} ms > {thresholds.latency_p95_ms:.0f} ms")
    if problems:
        return False, ", ".join(problems)
    return True, f"{rate:.1f}/s, errors {figures.error_rate:.1%}, p95 {figures.latency_p95_ms:.0f} ms"


class RecoveryVerifier:
    def __init__(
        self,
        prometheus: PrometheusSource,
        *,
        thresholds: HealthThresholds,
        config: VerifyConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.prometheus = prometheus
        self.thresholds = thresholds
        self.config = config
        self._sleep = sleep
        self._clock = clock

    async def check(self, service: str, revisions: list[str], *, since: datetime | None = None) -> Check:
        now = self._clock()
        if since is not None:
            at, window = self.prometheus.data_window(now, self.config.window_seconds)
            starts = at - timedelta(seconds=window)
            if starts < since:
                ready = since + (now - starts)
                return Check(
                    at=now,
                    figures=None,
                    healthy=False,
                    reason=(
                        f"waiting for metrics from after the change: the newest readable {window}s window "
                        f"starts {(since - starts).total_seconds():.0f}s before it (ready about "
                        f"{ready:%H:%M:%S})"
                    ),
                )
        try:
            figures = await self.prometheus.revisions_window(
                service, revisions, at=now, window=self.config.window_seconds
            )
        except SourceFailed as exc:
            return Check(at=now, figures=None, healthy=False, reason=f"metrics unavailable: {exc.message}")
        healthy, reason = judge(figures, self.thresholds)
        return Check(at=now, figures=figures, healthy=healthy, reason=reason)

    async def verify(
        self,
        service: str,
        serving: ServingRevisions,
        *,
        deadline: datetime,
        on_check: Callable[[Check, int], Awaitable[None]] | None = None,
    ) -> VerificationResult:
        """Poll until `consecutive_checks` healthy checks in a row, or until `deadline`."""
        streak = checks = 0
        last: Check | None = None
        # verify() starts right after the change is applied: its start is the change's time.
        since = self._clock() if self.config.fresh_data_only else None
        while True:
            last = await self._bounded_check(service, serving, since=since, deadline=deadline)
            checks += 1
            streak = streak + 1 if last.healthy else 0
            if on_check is not None:
                await on_check(last, streak)
            if streak >= self.config.consecutive_checks:
                return VerificationResult(recovered=True, checks=checks, last=last, reason=last.reason)
            if self._clock() + timedelta(seconds=self.config.interval) > deadline:
                return VerificationResult(
                    recovered=False,
                    checks=checks,
                    last=last,
                    reason=f"no recovery by the deadline; last check: {last.reason}",
                )
            await self._sleep(self.config.interval)

    async def _bounded_check(
        self, service: str, serving: ServingRevisions, *, since: datetime | None, deadline: datetime
    ) -> Check:
        """One check that ends by the deadline (a worker taking over after it still gets one check
        of `interval` seconds) and turns every failure into an unhealthy check with its reason."""
        started = self._clock()
        budget = max((deadline - started).total_seconds(), self.config.interval)
        try:
            async with asyncio.timeout(budget):
                revisions = await serving()
                return await self.check(service, revisions, since=since)
        except TimeoutError:
            reason = f"the check did not finish within {budget:.0f}s"
        except RemediatorError as exc:  # Cloud Run after its retries, the store, a source
            reason = f"could not check: {exc.message}"
        except Exception as exc:
            log.warning("verification check failed", exc_info=True, extra={"service": service})
            reason = f"could not check: {type(exc).__name__}: {exc}"[:500]
        return Check(at=started, figures=None, healthy=False, reason=reason)
