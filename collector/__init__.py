"""The read side of the world: metrics, Cloud Run state and logs, assembled into an IncidentContext."""

from collector.config import CollectorConfig, HealthThresholds
from collector.context import ContextBuilder, with_window
from collector.exceptions import CollectorError, SourceFailed
from collector.sources.auth import AuthenticationFailed, GoogleBearerAuth
from collector.sources.base import SourceResult
from collector.sources.cloudrun import (
    CloudRunClients,
    CloudRunSource,
    ServiceState,
    is_ready,
    short_name,
    traffic_by_revision,
)
from collector.sources.prometheus import PrometheusSource, WindowFigures
from collector.sources.queries import (
    AppQueries,
    CloudRunQueries,
    MetricsProfile,
    MetricsTiming,
    PrometheusQueries,
    queries_for,
)

__all__ = [
    "AppQueries",
    "AuthenticationFailed",
    "CloudRunClients",
    "CloudRunQueries",
    "CloudRunSource",
    "CollectorConfig",
    "CollectorError",
    "ContextBuilder",
    "GoogleBearerAuth",
    "HealthThresholds",
    "MetricsProfile",
    "MetricsTiming",
    "PrometheusQueries",
    "PrometheusSource",
    "ServiceState",
    "SourceFailed",
    "SourceResult",
    "WindowFigures",
    "is_ready",
    "queries_for",
    "short_name",
    "traffic_by_revision",
    "with_window",
]
