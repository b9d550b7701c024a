"""A small model of Cloud Run's request capacity: instances, concurrency slots, a queue, an autoscaler.

Each simulated instance serves at most `concurrency` requests at once; a request holds its slot for
the service time plus any injected latency (the caller sleeps inside `CapacityModel.slot()`). So the
throughput the revision can sustain is about instances x concurrency / service time.

When every slot is busy a request waits in a FIFO queue, and its latency climbs. It is rejected
when the queue is full (`max_queued_requests`, by default 10 x concurrency) or when it has waited
`max_queue_wait_s`:

    429 NoAvailableInstance    every instance the bounds allow exists (or is starting) and is busy
    503 InstanceStartTimeout   the model could still scale out, but no instance took the request in time

The autoscaler (`autoscale_once`, run every second by `run_autoscaler`) sizes the revision from the
time-weighted average demand (busy + queued requests) since its last step, aiming at
`target_utilization` of the slots. New instances take requests after a cold start; an instance goes
only after demand has stayed low for `scale_down_delay_s`, one per step. The count stays within
[min_instances, max_instances], and at least one instance is kept while there is traffic. A request
that finds no instance at all starts one at once, as Cloud Run does for the first request.

Everything runs on the event loop that created the model; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from demo_apps.shop.config import MAX_CONCURRENCY_LIMIT, MAX_INSTANCES_LIMIT, ShopConfig
from demo_apps.shop.exceptions import (
    CapacityRejected,
    InstanceStartTimeout,
    NoAvailableInstance,
    ScalingParameterError,
)

NO_INSTANCE_MESSAGE = (
    "429 Too Many Requests - The request was aborted because there was no available instance."
)
START_TIMEOUT_MESSAGE = (
    "503 Service Unavailable - The request timed out waiting for a container instance to start."
)
SHUTTING_DOWN_MESSAGE = "503 Service Unavailable - The container instance is shutting down."
SCALING_FIELDS = ("min_instances", "max_instances", "concurrency")
# Per slot of concurrency; a request queue deeper than this is refused at once.
DEFAULT_QUEUE_DEPTH_PER_SLOT = 10


@dataclass(frozen=True, kw_only=True)
class ScalingBounds:
    """What the revision's scaling settings allow; changeable at runtime."""

    min_instances: int
    max_instances: int
    concurrency: int


@dataclass(frozen=True, kw_only=True)
class CapacitySettings:
    """The fixed parts of the model (defaults live in ShopConfig)."""

    service_time_s: float
    cold_start_s: float
    max_queue_wait_s: float
    max_queued_requests: int | None
    target_utilization: float
    scale_down_delay_s: float

    @classmethod
    def from_config(cls, config: ShopConfig) -> CapacitySettings:
        return cls(
            service_time_s=config.service_time_ms / 1000.0,
            cold_start_s=config.cold_start_ms / 1000.0,
            max_queue_wait_s=config.queue_wait_limit_ms / 1000.0,
            max_queued_requests=config.max_queued_requests,
            target_utilization=config.target_utilization,
            scale_down_delay_s=config.scale_down_delay_s,
        )


@dataclass(frozen=True, kw_only=True)
class CapacitySnapshot:
    """The model's state at one moment, as the metrics and `/_emulator/scaling` report it."""

    instances: int
    ready_instances: int
    starting_instances: int
    min_instances: int
    max_instances: int
    concurrency: int
    busy: int
    queued: int
    utilization: float

    def as_json(self) -> dict[str, object]:
        return {
            "instances": self.instances,
            "ready_instances": self.ready_instances,
            "starting_instances": self.starting_instances,
            "min_instances": self.min_instances,
            "max_instances": self.max_instances,
            "concurrency": self.concurrency,
            "busy": self.busy,
            "queued": self.queued,
            "utilization": round(self.utilization, 4),
        }


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[None]
    enqueued_at: float
    timer: asyncio.TimerHandle | None = field(default=None)


def bounds_from_config(config: ShopConfig) -> ScalingBounds:
    return ScalingBounds(
        min_instances=config.min_instances, max_instances=config.max_instances, concurrency=config.concurrency
    )


def parse_scaling_body(body: object, current: ScalingBounds) -> ScalingBounds:
    """Validate a `/_emulator/scaling` body (any subset of the fields) against the current bounds."""
    if not isinstance(body, Mapping):
        raise ScalingParameterError(
            "body", "expected a JSON object with min_instances, max_instances, concurrency"
        )
    for name in body:
        if name not in SCALING_FIELDS:
            raise ScalingParameterError(
                str(name), f"unknown field {name!r}; expected one of {', '.join(SCALING_FIELDS)}"
            )
    if not body:
        raise ScalingParameterError("body", "expected at least one of " + ", ".join(SCALING_FIELDS))
    limits = {
        "min_instances": (0, MAX_INSTANCES_LIMIT),
        "max_instances": (1, MAX_INSTANCES_LIMIT),
        "concurrency": (1, MAX_CONCURRENCY_LIMIT),
    }
    values = {
        "min_instances": current.min_instances,
        "max_instances": current.max_instances,
        "concurrency": current.concurrency,
    }
    for name, (low, high) in limits.items():
        if name not in body:
            continue
        value = body[name]
        # bool is an int in Python but never a count in JSON.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ScalingParameterError(name, f"{name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ScalingParameterError(name, f"{name} must be within {low}..{high}, got {value}")
        values[name] = value
    if values["min_instances"] > values["max_instances"]:
        raise ScalingParameterError(
            "min_instances",
            f"min_instances ({values['min_instances']}) is above max_instances ({values['max_instances']})",
        )
    return ScalingBounds(**values)


class CapacityModel:
    """Simulated instances of one revision; create it on the event loop that serves the requests."""

    def __init__(self, *, bounds: ScalingBounds, settings: CapacitySettings) -> None:
        self._loop = asyncio.get_running_loop()
        self.settings = settings
        self._bounds = bounds
        # min instances are warm from the start, as Cloud Run keeps them.
        self._ready = bounds.min_instances
        self._starting: deque[asyncio.TimerHandle] = deque()
        self._busy = 0
        self._queue: deque[_Waiter] = deque()
        self._closed = False
        now = self._loop.time()
        self._level_changed_at = now
        self._demand_area = 0.0
        self._window_start = now
        self._arrivals = 0
        self._below_since: float | None = None

    @property
    def bounds(self) -> ScalingBounds:
        return self._bounds

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one concurrency slot; yields the seconds spent queued. Raises `CapacityRejected`."""
        waited = await self._acquire()
        try:
            yield waited
        finally:
            self._release()

    def snapshot(self) -> CapacitySnapshot:
        capacity = self._capacity()
        demand = self._busy + len(self._queue)
        if capacity:
            utilization = min(1.0, self._busy / capacity)
        else:
            utilization = 1.0 if demand else 0.0
        return CapacitySnapshot(
            instances=self._ready + len(self._starting),
            ready_instances=self._ready,
            starting_instances=len(self._starting),
            min_instances=self._bounds.min_instances,
            max_instances=self._bounds.max_instances,
            concurrency=self._bounds.concurrency,
            busy=self._busy,
            queued=len(self._queue),
            utilization=utilization,
        )

    def set_bounds(self, bounds: ScalingBounds) -> CapacitySnapshot:
        """Apply new scaling settings now: start or stop instances to fit them, admit waiting requests."""
        self._bounds = bounds
        self._below_since = None
        current = self._ready + len(self._starting)
        if current < bounds.min_instances:
            self._start_instances(bounds.min_instances - current)
        elif current > bounds.max_instances:
            self._stop_instances(current - bounds.max_instances)
        self._admit_waiting()
        return self.snapshot()

    def autoscale_once(self) -> CapacitySnapshot:
        """One autoscaler step over the demand seen since the previous step."""
        now = self._loop.time()
        self._integrate_demand(now)
        window = now - self._window_start
        level = self._busy + len(self._queue)
        average_demand = self._demand_area / window if window > 0 else float(level)
        had_traffic = self._arrivals > 0 or level > 0
        self._demand_area, self._window_start, self._arrivals = 0.0, now, 0

        bounds = self._bounds
        per_instance = bounds.concurrency * self.settings.target_utilization
        # The small epsilon keeps float noise (0.65 * 80 * n) from asking for an extra instance.
        desired = math.ceil(average_demand / per_instance - 1e-9)
        if had_traffic:
            desired = max(desired, 1)
        desired = min(max(desired, bounds.min_instances), bounds.max_instances)

        current = self._ready + len(self._starting)
        if desired > current:
            self._start_instances(desired - current)
            self._below_since = None
        elif desired < current:
            if self._below_since is None:
                self._below_since = now
            if now - self._below_since >= self.settings.scale_down_delay_s:
                self._stop_instances(1)
        else:
            self._below_since = None
        return self.snapshot()

    def close(self) -> None:
        """Cancel cold starts and refuse everything still waiting; later requests get 503."""
        self._closed = True
        while self._starting:
            self._starting.pop().cancel()
        while self._queue:
            waiter = self._queue.popleft()
            if waiter.timer is not None:
                waiter.timer.cancel()
            if not waiter.future.done():
                waiter.future.set_exception(
                    InstanceStartTimeout(
                        SHUTTING_DOWN_MESSAGE, queued_for_s=self._loop.time() - waiter.enqueued_at
                    )
                )

    async def _acquire(self) -> float:
        now = self._loop.time()
        self._integrate_demand(now)
        self._arrivals += 1
        if self._closed:
            raise InstanceStartTimeout(SHUTTING_DOWN_MESSAGE, queued_for_s=0.0)
        if not self._queue and self._busy < self._capacity():
            self._busy += 1
            return 0.0
        if len(self._queue) >= self._queue_limit():
            raise self._rejection(0.0)
        if self._ready + len(self._starting) == 0:
            self._start_instances(1)
            if self._busy < self._capacity():
                self._busy += 1
                return 0.0

        waiter = _Waiter(future=self._loop.create_future(), enqueued_at=now)
        waiter.timer = self._loop.call_at(now + self.settings.max_queue_wait_s, self._expire, waiter)
        self._queue.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        return self._loop.time() - now

    def _abandon(self, waiter: _Waiter) -> None:
        """The waiting request went away (client gone, shutdown): give back whatever it had."""
        if waiter.timer is not None:
            waiter.timer.cancel()
        future = waiter.future
        if future.done() and not future.cancelled():
            if future.exception() is None:
                # The slot was granted in the same loop turn as the cancellation.
                self._release()
            return
        with contextlib.suppress(ValueError):
            self._integrate_demand(self._loop.time())
            self._queue.remove(waiter)

    def _release(self) -> None:
        self._integrate_demand(self._loop.time())
        self._busy -= 1
        self._admit_waiting()

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        now = self._loop.time()
        self._integrate_demand(now)
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)
        waiter.future.set_exception(self._rejection(now - waiter.enqueued_at))

    def _admit_waiting(self) -> None:
        capacity = self._capacity()
        while self._queue and self._busy < capacity:
            waiter = self._queue.popleft()
            if waiter.timer is not None:
                waiter.timer.cancel()
            if waiter.future.done():
                continue
            self._busy += 1
            waiter.future.set_result(None)

    def _rejection(self, waited_s: float) -> CapacityRejected:
        if self._ready + len(self._starting) >= self._bounds.max_instances:
            return NoAvailableInstance(NO_INSTANCE_MESSAGE, queued_for_s=waited_s)
        return InstanceStartTimeout(START_TIMEOUT_MESSAGE, queued_for_s=waited_s)

    def _start_instances(self, count: int) -> None:
        for _ in range(count):
            if self.settings.cold_start_s <= 0:
                self._ready += 1
            else:
                self._starting.append(self._loop.call_later(self.settings.cold_start_s, self._instance_ready))
        self._admit_waiting()

    def _instance_ready(self) -> None:
        # Every cold start lasts the same, so they finish in the order they began.
        self._starting.popleft()
        self._ready += 1
        self._admit_waiting()

    def _stop_instances(self, count: int) -> None:
        """Stop starting instances first (newest first), then ready ones; busy requests finish."""
        for _ in range(count):
            if self._starting:
                self._starting.pop().cancel()
            elif self._ready > 0:
                self._ready -= 1

    def _capacity(self) -> int:
        return self._ready * self._bounds.concurrency

    def _queue_limit(self) -> int:
        if self.settings.max_queued_requests is not None:
            return self.settings.max_queued_requests
        return DEFAULT_QUEUE_DEPTH_PER_SLOT * self._bounds.concurrency

    def _integrate_demand(self, now: float) -> None:
        self._demand_area += (self._busy + len(self._queue)) * (now - self._level_changed_at)
        self._level_changed_at = now


async def run_autoscaler(model: CapacityModel, interval_s: float) -> None:
    """Step the autoscaler every `interval_s` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        model.autoscale_once()
