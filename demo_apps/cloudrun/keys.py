"""Typed keys for what the emulator's aiohttp application shares."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from demo_apps.cloudrun.config import EmulatorConfig
from demo_apps.cloudrun.control import ControlPlane
from demo_apps.cloudrun.failures import FailurePlan
from demo_apps.cloudrun.logstore import LogStore

CONFIG_KEY = web.AppKey("config", EmulatorConfig)
LOGS_KEY = web.AppKey("logs", LogStore)
FAILURES_KEY = web.AppKey("failures", FailurePlan)
# Routers forward requests with this one (keep-alive, no cookies, no decompression).
PROXY_SESSION_KEY = web.AppKey("proxy_session", aiohttp.ClientSession)
# Health checks and capacity pushes to revision processes.
CONTROL_SESSION_KEY = web.AppKey("control_session", aiohttp.ClientSession)
CONTROL_PLANE_KEY = web.AppKey("control_plane", ControlPlane)
