"""Actuator settings: leases, Cloud Run call bounds, verification, and the Grafana annotation sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from incidents.secrets import Secret


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


@dataclass(frozen=True, kw_only=True)
class GrafanaConfig:
    url: str
    token: Secret | None = None
    timeout: float = 3.0


@dataclass(frozen=True, kw_only=True)
class ActuatorConfig:
    lease: timedelta = timedelta(seconds=30)
    # Poll interval when no LISTEN/NOTIFY wake-up arrives (always polling on SQLite).
    poll_interval: float = 0.5
    retry: RetryConfig = field(default_factory=RetryConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    grafana: GrafanaConfig | None = None
