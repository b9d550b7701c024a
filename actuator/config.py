"""Actuator settings: leases, Cloud Run call bounds, verification, and the Grafana annotation sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from incidents.runtime import Secret


@dataclass(frozen=True, kw_only=True)
class RetryConfig:
    """Exponential backoff for Cloud Run calls that fail with 429, 5xx or a timeout."""

    attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 8.0
    multiplier: float = 2.0
    call_timeout: float = 10.0  # one HTTP call
    operation_timeout: float = 60.0  # waiting for a long-running operation to finish


@dataclass(frozen=True, kw_only=True)
class VerifyConfig:
    # Recovery must hold for this many consecutive checks, `interval` apart...
    consecutive_checks: int = 3
    interval: float = 5.0
    # ...over this window of fresh metrics on the revisions now serving...
    window_seconds: int = 20
    # ...and is given up (the incident escalates) after this long without it.
    timeout: timedelta = timedelta(minutes=3)
    # Count only checks whose whole window lies after the change (metrics that arrive minutes late,
    # as Cloud Monitoring's do, would otherwise show the minutes before the rollback).
    fresh_data_only: bool = False


@dataclass(frozen=True, kw_only=True)
class GrafanaConfig:
    url: str
    token: Secret | None = None
    timeout: float = 3.0


# A lease this short lets another worker take over a dead one's action within seconds (a kill -9,
# a lost node); the heartbeat renews it several times per lease, so a live worker rides out a
# database blip of a few seconds without losing it.
DEFAULT_LEASE = timedelta(seconds=8)
MAX_HEARTBEAT_SECONDS = 2.0


@dataclass(frozen=True, kw_only=True)
class ActuatorConfig:
    lease: timedelta = DEFAULT_LEASE
    # How often a working worker renews its lease; None: a quarter of the lease, at most 2 s. A
    # renewal that fails is retried at once until the lease would end.
    heartbeat_interval: float | None = None
    # The safety net under the work queue's wake-ups (incidents/queue.py): a worker looks for work at
    # least this often, for a wake-up lost between processes. An expired lease needs no poll: the
    # worker wakes when the soonest one ends.
    poll_interval: float = 5.0
    # On shutdown, how long an UpdateService already sent may take to finish before the worker
    # stops anyway (its lease then lapses instead of being handed back).
    shutdown_grace: float = 3.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    grafana: GrafanaConfig | None = None
    # The policy's bounds, checked again when the action runs: the settings may have changed since
    # it was queued, or it may come from an older process or a hand-written row.
    allowed_services: frozenset[str] | None = None
    max_instances_ceiling: int = 100

    @property
    def heartbeat(self) -> float:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return min(MAX_HEARTBEAT_SECONDS, self.lease.total_seconds() / 4)
