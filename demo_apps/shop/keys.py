"""Typed keys for the shop's application, request and response state."""

from __future__ import annotations

from aiohttp import web

from demo_apps.shop.capacity import CapacityModel
from demo_apps.shop.catalog import CartStore
from demo_apps.shop.config import ShopConfig
from demo_apps.shop.faults import FaultInjector
from demo_apps.shop.logs import StructuredLogger
from demo_apps.shop.telemetry import ShopTelemetry

CONFIG = web.AppKey("config", ShopConfig)
LOGGER = web.AppKey("logger", StructuredLogger)
FAULTS = web.AppKey("faults", FaultInjector)
CARTS = web.AppKey("carts", CartStore)
CAPACITY = web.AppKey("capacity", CapacityModel)
TELEMETRY = web.AppKey("telemetry", ShopTelemetry)

# Set by the error middleware so the request log line says what went wrong.
LOG_MESSAGE = web.ResponseKey("log_message", str)
