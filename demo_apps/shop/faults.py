"""Fault injection: what a runtime or baked-in fault does to one request.

Runtime faults come and go through the HTTP API (one at a time; enabling replaces the previous one):

    POST /fault/enable?type=5xx|latency|timeout&error_rate=PCT&latency_ms=MS&duration=S
    POST /fault/disable
    GET  /fault/status

    type        5xx      answer 500, after `latency_ms` (default 0) so it can look like an upstream timeout
                latency  delay the request by `latency_ms` (required, > 0), then answer normally
                timeout  hang for `latency_ms` (default 10000), then answer 504
    error_rate  percent of requests the fault applies to, 0..100 (default 100)
    latency_ms  milliseconds, up to 60000
    duration    seconds until the fault ends by itself, up to 86400 (default: until disabled)

Baked-in faults come from the environment at start (a "bad deploy", see config.py) and last as long
as the process: DEMO_ERROR_RATE answers that percent of requests 500, DEMO_LATENCY_MS delays
DEMO_LATENCY_RATE percent of them. Both kinds add up: a request can be delayed by both, and a runtime
error answer wins over a baked-in one.

A delay is served inside the request's capacity slot (see capacity.py) with `asyncio.sleep`, so slow
requests never block the event loop but do use up instances, as they do on Cloud Run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from demo_apps.shop.config import MAX_LATENCY_MS, ShopConfig
from demo_apps.shop.exceptions import (
    FaultParameterError,
    InjectedFault,
    InjectedServerError,
    InjectedTimeout,
    WarmingUp,
)
from demo_apps.shop.logs import rfc3339

FAULT_PARAMETERS = ("type", "error_rate", "latency_ms", "duration")
DEFAULT_FAULT_ERROR_RATE = 100.0
DEFAULT_TIMEOUT_HANG_MS = 10_000.0
MAX_FAULT_DURATION_S = 86_400.0

# Plausible causes, so injected errors read like a real incident in the logs.
SERVER_ERROR_CAUSES = (
    "upstream payment-db timeout",
    "connection reset by inventory-service",
    "deadlock detected while updating cart",
    "pricing-service returned a malformed response",
    "connection pool exhausted (orders-db)",
)
TIMEOUT_UPSTREAMS = ("payment-db", "inventory-service", "pricing-service")


class FaultType(StrEnum):
    SERVER_ERROR = "5xx"
    LATENCY = "latency"
    TIMEOUT = "timeout"


@dataclass(frozen=True, kw_only=True)
class FaultSpec:
    """A runtime fault as asked for, validated."""

    type: FaultType
    error_rate: float
    latency_ms: float
    duration_s: float | None


@dataclass(frozen=True, kw_only=True)
class RuntimeFault:
    """A runtime fault in force: its spec and when it ends (monotonic for the check, wall for display)."""

    spec: FaultSpec
    enabled_at: float
    expires_at: float | None
    expires_monotonic: float | None


@dataclass(frozen=True, kw_only=True)
class DeployFaults:
    """The faults baked into this revision's environment."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_rate: float = 100.0
    # Every request fails with 503 for this long after the revision starts, then none do.
    warmup_errors_s: float = 0.0

    @classmethod
    def from_config(cls, config: ShopConfig) -> DeployFaults:
        return cls(
            error_rate=config.error_rate,
            latency_ms=config.latency_ms,
            latency_rate=config.latency_rate,
            warmup_errors_s=config.warmup_errors_s,
        )

    def as_json(self) -> dict[str, object]:
        return {
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms,
            "latency_rate": self.latency_rate,
            "warmup_errors_s": self.warmup_errors_s,
        }


@dataclass(frozen=True, kw_only=True)
class FaultOutcome:
    """What the faults do to one request: wait `delay_s`, then answer with `error` if there is one."""

    delay_s: float = 0.0
    error: InjectedFault | None = None


NO_FAULT = FaultOutcome()


def parse_fault_query(pairs: Iterable[tuple[str, str]]) -> FaultSpec:
    """Validate a /fault/enable query; raise `FaultParameterError` naming the first bad parameter."""
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in FAULT_PARAMETERS:
            raise FaultParameterError(
                name, f"unknown parameter {name!r}; expected one of {', '.join(FAULT_PARAMETERS)}"
            )
        if name in given:
            raise FaultParameterError(name, f"parameter {name!r} given more than once")
        given[name] = value

    raw_type = given.get("type")
    if raw_type is None:
        raise FaultParameterError("type", "missing parameter 'type'; expected 5xx, latency or timeout")
    try:
        fault_type = FaultType(raw_type)
    except ValueError:
        raise FaultParameterError(
            "type", f"unknown fault type {raw_type!r}; expected 5xx, latency or timeout"
        ) from None

    error_rate = DEFAULT_FAULT_ERROR_RATE
    if "error_rate" in given:
        error_rate = _number("error_rate", given["error_rate"], low=0.0, high=100.0)

    raw_latency = given.get("latency_ms")
    if fault_type is FaultType.SERVER_ERROR:
        latency_ms = 0.0 if raw_latency is None else _number("latency_ms", raw_latency, 0.0, MAX_LATENCY_MS)
    elif raw_latency is None:
        if fault_type is FaultType.LATENCY:
            raise FaultParameterError("latency_ms", "type=latency needs latency_ms > 0")
        latency_ms = DEFAULT_TIMEOUT_HANG_MS
    else:
        latency_ms = _number("latency_ms", raw_latency, 0.0, MAX_LATENCY_MS, low_inclusive=False)

    duration_s: float | None = None
    if "duration" in given:
        duration_s = _number("duration", given["duration"], 0.0, MAX_FAULT_DURATION_S, low_inclusive=False)

    return FaultSpec(type=fault_type, error_rate=error_rate, latency_ms=latency_ms, duration_s=duration_s)


def _number(name: str, raw: str, low: float, high: float, *, low_inclusive: bool = True) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FaultParameterError(name, f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise FaultParameterError(name, f"{name} must be a finite number, got {raw!r}")
    too_low = value < low if low_inclusive else value <= low
    if too_low or value > high:
        bound = "" if low_inclusive else " (exclusive)"
        raise FaultParameterError(name, f"{name} must be within {low:g}{bound}..{high:g}, got {raw!r}")
    return value


class FaultInjector:
    """Holds the runtime fault and the baked-in ones, and rolls the dice for each request."""

    def __init__(
        self,
        *,
        deploy: DeployFaults,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.deploy = deploy
        self._rng = rng
        self._clock = clock
        self._wall_clock = wall_clock
        self._runtime: RuntimeFault | None = None
        # The warm-up blip counts from the first request the revision serves, as a cold start's
        # does: time spent starting and waiting for traffic (longer on a loaded machine) is not blip.
        self._first_request_at: float | None = None

    def enable(self, spec: FaultSpec) -> RuntimeFault:
        """Put `spec` in force, replacing any runtime fault."""
        now, wall_now = self._clock(), self._wall_clock()
        if spec.duration_s is None:
            expires_at = expires_monotonic = None
        else:
            expires_at, expires_monotonic = wall_now + spec.duration_s, now + spec.duration_s
        self._runtime = RuntimeFault(
            spec=spec, enabled_at=wall_now, expires_at=expires_at, expires_monotonic=expires_monotonic
        )
        return self._runtime

    def disable(self) -> RuntimeFault | None:
        """End the runtime fault; return it, or None when none was in force."""
        previous = self.active()
        self._runtime = None
        return previous

    def active(self) -> RuntimeFault | None:
        """The runtime fault in force now; an expired one is dropped here."""
        fault = self._runtime
        if (
            fault is not None
            and fault.expires_monotonic is not None
            and self._clock() >= fault.expires_monotonic
        ):
            self._runtime = fault = None
        return fault

    def decide(self) -> FaultOutcome:
        """Roll the dice for one request."""
        delay_ms = 0.0
        error: InjectedFault | None = None
        deploy = self.deploy
        if deploy.latency_ms > 0 and self._roll(deploy.latency_rate):
            delay_ms += deploy.latency_ms
        if deploy.error_rate > 0 and self._roll(deploy.error_rate):
            error = InjectedServerError(self._server_error_message(), source="deploy")
        if deploy.warmup_errors_s > 0:
            now = self._clock()
            if self._first_request_at is None:
                self._first_request_at = now
            if now - self._first_request_at < deploy.warmup_errors_s:
                error = WarmingUp("503 Service Unavailable - warming up", source="warmup")

        runtime = self.active()
        if runtime is not None and self._roll(runtime.spec.error_rate):
            spec = runtime.spec
            delay_ms += spec.latency_ms
            if spec.type is FaultType.SERVER_ERROR:
                error = InjectedServerError(self._server_error_message(), source="runtime")
            elif spec.type is FaultType.TIMEOUT:
                upstream = self._rng.choice(TIMEOUT_UPSTREAMS)
                error = InjectedTimeout(
                    f"504 Gateway Timeout - no answer from {upstream} after {spec.latency_ms:g} ms",
                    source="runtime",
                )
        if delay_ms == 0 and error is None:
            return NO_FAULT
        return FaultOutcome(delay_s=delay_ms / 1000.0, error=error)

    def status(self) -> dict[str, object]:
        """The runtime fault (or None) and the baked-in faults, as /fault/status shows them."""
        runtime = self.active()
        runtime_json: dict[str, object] | None = None
        if runtime is not None:
            spec = runtime.spec
            remaining: float | None = None
            if runtime.expires_monotonic is not None:
                remaining = round(max(0.0, runtime.expires_monotonic - self._clock()), 3)
            runtime_json = {
                "type": spec.type.value,
                "error_rate": spec.error_rate,
                "latency_ms": spec.latency_ms,
                "duration_s": spec.duration_s,
                "enabled_at": rfc3339(runtime.enabled_at),
                "expires_at": None if runtime.expires_at is None else rfc3339(runtime.expires_at),
                "remaining_s": remaining,
            }
        return {"runtime": runtime_json, "deploy": self.deploy.as_json()}

    def _roll(self, percent: float) -> bool:
        return self._rng.random() * 100.0 < percent

    def _server_error_message(self) -> str:
        return f"500 Internal Server Error - {self._rng.choice(SERVER_ERROR_CAUSES)}"
