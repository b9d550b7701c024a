"""Typed keys for what the emulator's aiohttp application shares."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from demo_apps.cloudrun.config import EmulatorConfig
from demo_apps.cloudrun.control import ControlPlane
from demo_apps.cloudrun.failures import FailurePlan
from demo_apps.cloudrun.logstore import LogStore
from demo_apps.cloudrun.oauth import TokenIssuer
from demo_apps.cloudrun.platform_metrics import PlatformMetrics

CONFIG_KEY = web.AppKey("config", EmulatorConfig)
LOGS_KEY = web.AppKey("logs", LogStore)
FAILURES_KEY = web.AppKey("failures", FailurePlan)
# Routers forward requests with this one (keep-alive, no cookies, no decompression).
PROXY_SESSION_KEY = web.AppKey("proxy_session", aiohttp.ClientSession)
# Health checks and capacity pushes to revision processes.
CONTROL_SESSION_KEY = web.AppKey("control_session", aiohttp.ClientSession)
CONTROL_PLANE_KEY = web.AppKey("control_plane", ControlPlane)
# The platform metrics the routers record and `GET /metrics` exposes.
PLATFORM_METRICS_KEY = web.AppKey("platform_metrics", PlatformMetrics)
# Access tokens issued by `POST /token`, checked by the Managed-Prometheus-shaped query API.
TOKENS_KEY = web.AppKey("tokens", TokenIssuer)
# Queries forwarded to the local Prometheus.
FORWARD_SESSION_KEY = web.AppKey("forward_session", aiohttp.ClientSession)
