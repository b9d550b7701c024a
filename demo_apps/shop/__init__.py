"""The demo shop: one aiohttp process per Cloud Run revision, with fault injection, a capacity model
and OpenTelemetry metrics. Run it with `python -m demo_apps.shop`; see config.py for the environment."""

from __future__ import annotations

from demo_apps.shop.app import create_app
from demo_apps.shop.capacity import (
    CapacityModel,
    CapacitySettings,
    CapacitySnapshot,
    ScalingBounds,
    parse_scaling_body,
    run_autoscaler,
)
from demo_apps.shop.catalog import CATALOG, ITEM_IDS, CatalogItem
from demo_apps.shop.config import ShopConfig
from demo_apps.shop.exceptions import (
    BadRequest,
    CapacityRejected,
    ConfigError,
    FaultParameterError,
    InjectedFault,
    InjectedServerError,
    InjectedTimeout,
    InstanceStartTimeout,
    NoAvailableInstance,
    NotFound,
    ScalingParameterError,
    ShopError,
    TelemetryError,
    WarmingUp,
)
from demo_apps.shop.faults import (
    DeployFaults,
    FaultInjector,
    FaultOutcome,
    FaultSpec,
    FaultType,
    parse_fault_query,
)
from demo_apps.shop.logs import StructuredLogger
from demo_apps.shop.middlewares import REVISION_HEADER, is_counted
from demo_apps.shop.telemetry import REQUEST_DURATION_BUCKETS_S, ShopTelemetry, build_telemetry

__all__ = [
    "CATALOG",
    "ITEM_IDS",
    "REQUEST_DURATION_BUCKETS_S",
    "REVISION_HEADER",
    "BadRequest",
    "CapacityModel",
    "CapacityRejected",
    "CapacitySettings",
    "CapacitySnapshot",
    "CatalogItem",
    "ConfigError",
    "DeployFaults",
    "FaultInjector",
    "FaultOutcome",
    "FaultParameterError",
    "FaultSpec",
    "FaultType",
    "InjectedFault",
    "InjectedServerError",
    "InjectedTimeout",
    "InstanceStartTimeout",
    "NoAvailableInstance",
    "NotFound",
    "ScalingBounds",
    "ScalingParameterError",
    "ShopConfig",
    "ShopError",
    "ShopTelemetry",
    "StructuredLogger",
    "TelemetryError",
    "WarmingUp",
    "build_telemetry",
    "create_app",
    "is_counted",
    "parse_fault_query",
    "parse_scaling_body",
    "run_autoscaler",
]
