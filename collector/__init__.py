"""The read side of the world: metrics, Cloud Run state and logs, assembled into an IncidentContext."""

from collector.config import CollectorConfig, HealthThresholds
from collector.context import ContextBuilder, with_window
from collector.exceptions import CollectorError, SourceFailed
from collector.sources.base import SourceResult
from collector.sources.cloudrun import CloudRunClients, CloudRunSource, ServiceState, is_ready, short_name
from collector.sources.prometheus import PrometheusQueries, PrometheusSource, WindowFigures

__all__ = [
    "CloudRunClients",
    "CloudRunSource",
    "CollectorConfig",
    "CollectorError",
    "ContextBuilder",
    "HealthThresholds",
    "PrometheusQueries",
    "PrometheusSource",
    "ServiceState",
    "SourceFailed",
    "SourceResult",
    "WindowFigures",
    "is_ready",
    "short_name",
    "with_window",
]
