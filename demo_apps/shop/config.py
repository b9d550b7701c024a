"""The shop's settings, read once from Cloud Run's environment at start.

Identity and serving (Cloud Run sets these):

    PORT                      port to listen on (1..65535)                               8080
    HOST                      bind address                                               127.0.0.1
    K_SERVICE                 service name; the `service` label of every metric          demo-app-a
    K_REVISION                revision name; the `revision` label, and `X-Revision`       <service>-local
    K_CONFIGURATION           configuration name                                         <service>

Capacity model (see capacity.py):

    DEMO_CONCURRENCY          requests one simulated instance serves at once (1..1000)   80
    DEMO_MIN_INSTANCES        instances kept warm even without traffic (0..1000)         0
    DEMO_MAX_INSTANCES        upper bound of the autoscaler (1..1000)                    100
    DEMO_SERVICE_TIME_MS      time one request occupies a slot (0..60000)                20
    DEMO_COLD_START_MS        time before a new instance takes requests (0..60000)       500
    DEMO_MAX_QUEUE_WAIT_MS    longest a request waits for a slot before it is rejected   10 x service time
                              (1..300000)                                                + cold start,
                                                                                         at least 100
    DEMO_MAX_QUEUED_REQUESTS  requests that may wait at once (1..1000000)                10 x concurrency
    DEMO_SCALE_DOWN_DELAY_S   how long demand must stay low before an instance goes      30
                              (0..3600)

Baked-in faults, a "bad deploy" that no API call can switch off (see faults.py):

    DEMO_ERROR_RATE           percent of requests answered 500 (0..100)                  0
    DEMO_LATENCY_MS           extra latency added to a request (0..60000)                0
    DEMO_LATENCY_RATE         percent of requests that get DEMO_LATENCY_MS (0..100)      100
    DEMO_FAIL_STARTUP         1: log an error and exit non-zero at start, so the         unset
                              revision never becomes ready
    DEMO_WARMUP_ERRORS_S      answer every request 503 for this many seconds from the    0
                              first one, then serve normally: a healthy revision with
                              a startup blip (0..3600)

Other:

    DEMO_RANDOM_SEED          seed for the fault dice, for repeatable runs               unset (random)
    DEMO_GCP_MONITORING       1: also export metrics to Cloud Monitoring (needs the      unset
                              `gcp` extra)
    GOOGLE_CLOUD_PROJECT      project for Cloud Monitoring; unset: Application Default   unset
                              Credentials' project

Flags accept 1/true/yes/on and 0/false/no/off. A value the shop cannot use raises `ConfigError`
naming the variable, before anything listens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from demo_apps.shop.exceptions import ConfigError

DEFAULT_SERVICE = "demo-app-a"
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CONCURRENCY = 80
DEFAULT_MIN_INSTANCES = 0
DEFAULT_MAX_INSTANCES = 100
DEFAULT_SERVICE_TIME_MS = 20.0
DEFAULT_COLD_START_MS = 500.0
DEFAULT_SCALE_DOWN_DELAY_S = 30.0
# The autoscaler aims for this share of busy slots, like Cloud Run's default CPU/concurrency target.
DEFAULT_TARGET_UTILIZATION = 0.65
DEFAULT_AUTOSCALE_INTERVAL_S = 1.0
DEFAULT_GCP_EXPORT_INTERVAL_S = 60.0
# Cloud Run gives a container about 10 s between SIGTERM and SIGKILL; leave room for the exporters.
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0

MAX_INSTANCES_LIMIT = 1000
MAX_CONCURRENCY_LIMIT = 1000
MAX_LATENCY_MS = 60_000.0

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True, kw_only=True)
class ShopConfig:
    """Everything the shop needs to run; built once by `from_env` (or directly in tests)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    service: str = DEFAULT_SERVICE
    revision: str = f"{DEFAULT_SERVICE}-local"
    configuration: str = DEFAULT_SERVICE

    concurrency: int = DEFAULT_CONCURRENCY
    min_instances: int = DEFAULT_MIN_INSTANCES
    max_instances: int = DEFAULT_MAX_INSTANCES
    service_time_ms: float = DEFAULT_SERVICE_TIME_MS
    cold_start_ms: float = DEFAULT_COLD_START_MS
    max_queue_wait_ms: float | None = None
    max_queued_requests: int | None = None
    scale_down_delay_s: float = DEFAULT_SCALE_DOWN_DELAY_S
    target_utilization: float = DEFAULT_TARGET_UTILIZATION
    autoscale_interval_s: float = DEFAULT_AUTOSCALE_INTERVAL_S

    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_rate: float = 100.0
    fail_startup: bool = False
    warmup_errors_s: float = 0.0

    random_seed: int | None = None
    gcp_monitoring: bool = False
    gcp_project: str | None = None
    gcp_export_interval_s: float = DEFAULT_GCP_EXPORT_INTERVAL_S
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S

    def __post_init__(self) -> None:
        _check_range("PORT", self.port, 1, 65535)
        _check_range("DEMO_CONCURRENCY", self.concurrency, 1, MAX_CONCURRENCY_LIMIT)
        _check_range("DEMO_MIN_INSTANCES", self.min_instances, 0, MAX_INSTANCES_LIMIT)
        _check_range("DEMO_MAX_INSTANCES", self.max_instances, 1, MAX_INSTANCES_LIMIT)
        if self.min_instances > self.max_instances:
            raise ConfigError(
                "DEMO_MIN_INSTANCES",
                f"{self.min_instances} is above DEMO_MAX_INSTANCES ({self.max_instances})",
            )
        _check_range("DEMO_SERVICE_TIME_MS", self.service_time_ms, 0, MAX_LATENCY_MS)
        _check_range("DEMO_COLD_START_MS", self.cold_start_ms, 0, MAX_LATENCY_MS)
        if self.max_queue_wait_ms is not None:
            _check_range("DEMO_MAX_QUEUE_WAIT_MS", self.max_queue_wait_ms, 1, 300_000)
        if self.max_queued_requests is not None:
            _check_range("DEMO_MAX_QUEUED_REQUESTS", self.max_queued_requests, 1, 1_000_000)
        _check_range("DEMO_SCALE_DOWN_DELAY_S", self.scale_down_delay_s, 0, 3600)
        _check_range("target_utilization", self.target_utilization, 0.05, 1.0)
        _check_range("autoscale_interval_s", self.autoscale_interval_s, 0.01, 60)
        _check_range("DEMO_ERROR_RATE", self.error_rate, 0, 100)
        _check_range("DEMO_LATENCY_MS", self.latency_ms, 0, MAX_LATENCY_MS)
        _check_range("DEMO_LATENCY_RATE", self.latency_rate, 0, 100)
        _check_range("DEMO_WARMUP_ERRORS_S", self.warmup_errors_s, 0, 3600)
        _check_range("gcp_export_interval_s", self.gcp_export_interval_s, 1, 3600)
        _check_range("shutdown_timeout_s", self.shutdown_timeout_s, 0, 60)

    @property
    def queue_wait_limit_ms(self) -> float:
        """DEMO_MAX_QUEUE_WAIT_MS, or the default that lets a request ride out one cold start."""
        if self.max_queue_wait_ms is not None:
            return self.max_queue_wait_ms
        return max(100.0, 10.0 * self.service_time_ms + self.cold_start_ms)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ShopConfig:
        """Read Cloud Run's and the demo's variables; raise `ConfigError` naming a bad one."""
        service = _text(environ, "K_SERVICE", DEFAULT_SERVICE)
        return cls(
            host=_text(environ, "HOST", DEFAULT_HOST),
            port=_integer(environ, "PORT", DEFAULT_PORT),
            service=service,
            revision=_text(environ, "K_REVISION", f"{service}-local"),
            configuration=_text(environ, "K_CONFIGURATION", service),
            concurrency=_integer(environ, "DEMO_CONCURRENCY", DEFAULT_CONCURRENCY),
            min_instances=_integer(environ, "DEMO_MIN_INSTANCES", DEFAULT_MIN_INSTANCES),
            max_instances=_integer(environ, "DEMO_MAX_INSTANCES", DEFAULT_MAX_INSTANCES),
            service_time_ms=_number(environ, "DEMO_SERVICE_TIME_MS", DEFAULT_SERVICE_TIME_MS),
            cold_start_ms=_number(environ, "DEMO_COLD_START_MS", DEFAULT_COLD_START_MS),
            max_queue_wait_ms=_optional_number(environ, "DEMO_MAX_QUEUE_WAIT_MS"),
            max_queued_requests=_optional_integer(environ, "DEMO_MAX_QUEUED_REQUESTS"),
            scale_down_delay_s=_number(environ, "DEMO_SCALE_DOWN_DELAY_S", DEFAULT_SCALE_DOWN_DELAY_S),
            error_rate=_number(environ, "DEMO_ERROR_RATE", 0.0),
            latency_ms=_number(environ, "DEMO_LATENCY_MS", 0.0),
            latency_rate=_number(environ, "DEMO_LATENCY_RATE", 100.0),
            fail_startup=_flag(environ, "DEMO_FAIL_STARTUP"),
            warmup_errors_s=_number(environ, "DEMO_WARMUP_ERRORS_S", 0.0),
            random_seed=_optional_integer(environ, "DEMO_RANDOM_SEED"),
            gcp_monitoring=_flag(environ, "DEMO_GCP_MONITORING"),
            gcp_project=environ.get("GOOGLE_CLOUD_PROJECT", "").strip() or None,
        )


def _check_range(variable: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(variable, f"{value} is outside {low:g}..{high:g}")


def _text(environ: Mapping[str, str], variable: str, default: str) -> str:
    return environ.get(variable, "").strip() or default


def _optional_integer(environ: Mapping[str, str], variable: str) -> int | None:
    raw = environ.get(variable, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(variable, f"expected an integer, got {raw!r}") from None


def _integer(environ: Mapping[str, str], variable: str, default: int) -> int:
    found = _optional_integer(environ, variable)
    return default if found is None else found


def _optional_number(environ: Mapping[str, str], variable: str) -> float | None:
    raw = environ.get(variable, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(variable, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(variable, f"expected a finite number, got {raw!r}")
    return value


def _number(environ: Mapping[str, str], variable: str, default: float) -> float:
    found = _optional_number(environ, variable)
    return default if found is None else found


def _flag(environ: Mapping[str, str], variable: str) -> bool:
    raw = environ.get(variable, "").strip().lower()
    if raw in _TRUE_WORDS:
        return True
    if raw in _FALSE_WORDS:
        return False
    raise ConfigError(variable, f"expected 1 or 0, got {raw!r}")
