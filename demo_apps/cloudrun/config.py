"""The emulator's settings: one frozen value built by `__main__` (or a test) and passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from demo_apps.cloudrun.images import DEFAULT_IMAGES
from demo_apps.cloudrun.oauth import DEFAULT_TOKEN_LIFETIME_S
from demo_apps.cloudrun.platform_metrics import PlatformMetricsConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_PROJECT = "local"
DEFAULT_REGION = "local"
# Cloud Run's default startup probe allows minutes; a local process that is not up in 30 s is broken.
DEFAULT_STARTUP_TIMEOUT_S = 30.0
# Cloud Run gives a container about 10 s between SIGTERM and SIGKILL.
DEFAULT_STOP_TIMEOUT_S = 5.0
DEFAULT_LOG_ENTRIES_PER_REVISION = 5000
# A revision process that dies after it was ready is started again, like a new Cloud Run instance.
DEFAULT_RESTART_BACKOFF_S = 0.5
MAX_RESTART_BACKOFF_S = 10.0


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    project: str = DEFAULT_PROJECT
    region: str = DEFAULT_REGION
    # Routers and revision processes always bind this address.
    bind_host: str = "127.0.0.1"
    images: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    log_entries_per_revision: int = DEFAULT_LOG_ENTRIES_PER_REVISION
    restart_backoff_s: float = DEFAULT_RESTART_BACKOFF_S
    # Environment every revision process inherits before Cloud Run's variables and the template's;
    # None: the emulator's own environment.
    base_env: Mapping[str, str] | None = None
    # Also write every revision log line to the emulator's stderr (handy when running it by hand).
    echo_revision_logs: bool = False
    # Cloud Run's own request and container metrics (GET /metrics): sampling and visibility delay.
    platform_metrics: PlatformMetricsConfig = field(default_factory=PlatformMetricsConfig)
    # The Prometheus that the Managed-Prometheus-shaped query API forwards to; None: that API
    # answers 503.
    prometheus_url: str | None = None
    # Lifetime of the access tokens POST /token issues.
    token_lifetime_s: int = DEFAULT_TOKEN_LIFETIME_S
    # A new revision of a service whose revisions are being scraped takes traffic only once it has
    # been scraped itself (at most this long; 0: at once). See ControlPlane._await_first_scrape.
    first_scrape_wait_s: float = 0.0

    @property
    def location_name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"
