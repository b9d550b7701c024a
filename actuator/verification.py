"""Proving recovery with fresh metrics on the revisions that serve the service now.

Healthy means: enough traffic to judge (the same minimum request rate as the alerts), error ratio and
p95 under the thresholds, for `consecutive_checks` checks in a row. Too little traffic is never
counted as healthy: a check without traffic resets the count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from actuator.config import VerifyConfig
from collector import HealthThresholds, PrometheusSource, SourceFailed
from incidents import Figures
from incidents.models import utcnow

log = logging.getLogger(__name__)


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
    if figures.latency_p95_ms is not None and figures.latency_p95_ms > thresholds.latency_p95_ms:
        problems.append(f"p95 {figures.latency_p95_ms:.0f} ms > {thresholds.latency_p95_ms:.0f} ms")
    if problems:
        return False, ", ".join(problems)
    return True, (
        f"{rate:.1f}/s, errors {figures.error_rate:.1%}, p95 "
        + (f"{figures.latency_p95_ms:.0f} ms" if figures.latency_p95_ms is not None else "n/a")
    )


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

    async def check(self, service: str, revisions: list[str]) -> Check:
        now = self._clock()
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
        revisions: list[str],
        *,
        deadline: datetime,
        on_check: Callable[[Check, int], Awaitable[None]] | None = None,
    ) -> VerificationResult:
        """Poll until `consecutive_checks` healthy checks in a row, or until `deadline`."""
        streak = checks = 0
        last: Check | None = None
        while True:
            last = await self.check(service, revisions)
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
