"""An open-loop load generator: requests start on a schedule, whether or not earlier ones finished.

Arrivals are Poisson (exponential gaps, like independent users) or evenly spaced, at `rate` requests
per second, spread over weighted request plans (by default the shop's routes). A slow target does
not slow the schedule down; at most `max_in_flight` requests run at once and an arrival beyond that
is counted as `dropped` instead of queued, so the generator never builds a hidden backlog. The rate
can change while running (a traffic spike); the next arrival follows the new rate at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from demo_apps.loadgen.stats import LoadStats
from demo_apps.shop.catalog import ITEM_IDS

REVISION_HEADER = "X-Revision"
MAX_RATE = 10_000.0
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_STOP_GRACE_S = 2.0
# Behind schedule by more than this (a stalled loop), start afresh instead of firing a burst.
MAX_SCHEDULE_LAG_S = 1.0


class InvalidLoadSetting(ValueError):
    """A load generator setting is out of range; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


class Arrivals(StrEnum):
    POISSON = "poisson"
    UNIFORM = "uniform"


@dataclass(frozen=True, kw_only=True)
class RequestPlan:
    """One kind of request: method, path (appended to the target), JSON body, relative weight."""

    method: str
    path: str
    weight: float = 1.0
    body: Mapping[str, object] | None = None


def shop_plans() -> tuple[RequestPlan, ...]:
    """A browse-heavy mix over the shop's routes."""
    item_share = 3.0 / len(ITEM_IDS)
    return (
        RequestPlan(method="GET", path="/api/catalog", weight=4.0),
        *(
            RequestPlan(method="GET", path=f"/api/catalog/{item_id}", weight=item_share)
            for item_id in ITEM_IDS
        ),
        RequestPlan(
            method="POST", path="/api/cart", weight=2.0, body={"item_id": ITEM_IDS[0], "quantity": 1}
        ),
        RequestPlan(
            method="POST",
            path="/api/checkout",
            weight=1.0,
            body={"items": [{"item_id": ITEM_IDS[1], "quantity": 2}]},
        ),
    )


def parse_plan(spec: str) -> RequestPlan:
    """`/path` (GET) or `METHOD:/path`; a POST to a shop route gets that route's usual body."""
    method, separator, path = spec.partition(":")
    if not separator:
        method, path = "GET", spec
    method = method.strip().upper()
    path = path.strip()
    if not method.isalpha() or not path.startswith("/"):
        raise InvalidLoadSetting("paths", f"expected /path or METHOD:/path, got {spec!r}")
    body = next(
        (plan.body for plan in shop_plans() if plan.method == method and plan.path == path),
        None,
    )
    return RequestPlan(method=method, path=path, body=body)


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise InvalidLoadSetting("rate", f"rate must be a number, got {rate!r}")
    if not 0 <= rate <= MAX_RATE:
        raise InvalidLoadSetting("rate", f"rate must be within 0..{MAX_RATE:g} requests/s, got {rate:g}")
    return float(rate)


class LoadGenerator:
    """Drives `target` at `rate` requests/s until stopped; `stats()` says what came back."""

    def __init__(
        self,
        *,
        target: str,
        rate: float,
        plans: Sequence[RequestPlan] | None = None,
        arrivals: Arrivals | str = Arrivals.POISSON,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        seed: int | None = None,
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
            raise InvalidLoadSetting("target", f"target must be an http(s) base URL, got {target!r}")
        self.target = target.rstrip("/")
        self._rate = check_rate(rate)
        self.plans = tuple(plans) if plans else shop_plans()
        if any(plan.weight <= 0 for plan in self.plans):
            raise InvalidLoadSetting("paths", "every request plan needs a positive weight")
        try:
            self.arrivals = Arrivals(arrivals)
        except ValueError:
            raise InvalidLoadSetting(
                "arrivals", f"arrivals must be poisson or uniform, got {arrivals!r}"
            ) from None
        if max_in_flight < 1:
            raise InvalidLoadSetting("max_in_flight", "max_in_flight must be at least 1")
        if timeout_s <= 0:
            raise InvalidLoadSetting("timeout_s", "timeout_s must be positive")
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.stop_grace_s = stop_grace_s
        self._rng = random.Random(seed)
        self._cumulative_weights = list(itertools.accumulate(plan.weight for plan in self.plans))
        self._session: aiohttp.ClientSession | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._rate_changed = asyncio.Event()
        self._stats: LoadStats | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    async def start(self) -> None:
        if self._scheduler is not None:
            return
        loop = asyncio.get_running_loop()
        self._stats = LoadStats(clock=loop.time, rng=random.Random(self._rng.random()))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.max_in_flight),
        )
        self._scheduler = asyncio.create_task(
            self._schedule(self._session, self._stats), name="loadgen-scheduler"
        )

    async def stop(self) -> None:
        """Stop sending; give requests in flight `stop_grace_s` to finish, cancel the rest, close."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=self.stop_grace_s)
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def set_rate(self, rate: float) -> float:
        self._rate = check_rate(rate)
        self._rate_changed.set()
        return self._rate

    async def stats(self) -> dict[str, Any]:
        """Observations since start or the last reset, per revision and in total."""
        observed = self._stats.as_json() if self._stats is not None else {}
        return {
            "target": self.target,
            "rate": self._rate,
            "arrivals": self.arrivals.value,
            "running": self.running,
            "in_flight": len(self._in_flight),
            **observed,
        }

    async def reset_stats(self) -> dict[str, Any]:
        if self._stats is not None:
            self._stats.reset()
        return await self.stats()

    def _gap_s(self, rate: float) -> float:
        if self.arrivals is Arrivals.POISSON:
            return self._rng.expovariate(rate)
        return 1.0 / rate

    async def _wait_for_rate_change(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`; True when the rate changed meanwhile."""
        try:
            await asyncio.wait_for(self._rate_changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _schedule(self, session: aiohttp.ClientSession, stats: LoadStats) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self._rate_changed.clear()
            rate = self._rate
            if rate <= 0:
                await self._rate_changed.wait()
                next_at = loop.time()
                continue
            delay = next_at - loop.time()
            if delay > 0:
                if await self._wait_for_rate_change(delay):
                    # The next arrival comes one gap of the new rate from now.
                    next_at = loop.time() + self._gap_s(self._rate)
                    continue
            elif delay < -MAX_SCHEDULE_LAG_S:
                next_at = loop.time()
            self._launch(session, stats)
            next_at += self._gap_s(rate)

    def _launch(self, session: aiohttp.ClientSession, stats: LoadStats) -> None:
        if len(self._in_flight) >= self.max_in_flight:
            stats.record_dropped()
            return
        stats.record_sent()
        (plan,) = self._rng.choices(self.plans, cum_weights=self._cumulative_weights)
        task = asyncio.create_task(self._send(session, stats, plan))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, session: aiohttp.ClientSession, stats: LoadStats, plan: RequestPlan) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with session.request(plan.method, self.target + plan.path, json=plan.body) as response:
                await response.read()
        except TimeoutError:
            stats.record_failure("timeout")
        except aiohttp.ClientError:
            stats.record_failure("connection")
        else:
            stats.record_response(
                response.headers.get(REVISION_HEADER), response.status, loop.time() - started
            )
