"""The shop's application factory."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from demo_apps.shop.capacity import CapacityModel, CapacitySettings, bounds_from_config, run_autoscaler
from demo_apps.shop.catalog import CartStore
from demo_apps.shop.config import ShopConfig
from demo_apps.shop.faults import DeployFaults, FaultInjector
from demo_apps.shop.keys import CAPACITY, CARTS, CONFIG, FAULTS, LOGGER, TELEMETRY
from demo_apps.shop.logs import StructuredLogger
from demo_apps.shop.middlewares import error_middleware, request_context_middleware, simulation_middleware
from demo_apps.shop.routes import SHOP_ROUTES, setup_routes
from demo_apps.shop.telemetry import build_telemetry


def create_app(
    config: ShopConfig,
    *,
    logger: StructuredLogger | None = None,
    cloud_monitoring_client: Any = None,
) -> web.Application:
    """The shop for one revision. `cloud_monitoring_client` stands in for Google's client in tests."""
    if logger is None:
        logger = StructuredLogger(
            service=config.service, revision=config.revision, project=config.gcp_project
        )
    app = web.Application(
        middlewares=[
            request_context_middleware(config),
            error_middleware(),
            simulation_middleware(),
        ]
    )
    app[CONFIG] = config
    app[LOGGER] = logger
    app[FAULTS] = FaultInjector(
        deploy=DeployFaults.from_config(config), rng=random.Random(config.random_seed)
    )
    app[CARTS] = CartStore()
    app.cleanup_ctx.append(capacity_context)
    app.cleanup_ctx.append(telemetry_context(cloud_monitoring_client))
    setup_routes(app)
    return app


async def capacity_context(app: web.Application) -> AsyncIterator[None]:
    """The capacity model lives on the serving loop, with its autoscaler beside it."""
    config = app[CONFIG]
    model = CapacityModel(bounds=bounds_from_config(config), settings=CapacitySettings.from_config(config))
    app[CAPACITY] = model
    autoscaler = asyncio.create_task(
        run_autoscaler(model, config.autoscale_interval_s), name="shop-autoscaler"
    )
    deploy = app[FAULTS].deploy
    if deploy.error_rate > 0 or deploy.latency_ms > 0:
        app[LOGGER].warning(
            f"revision {config.revision} starts with baked-in faults: error_rate={deploy.error_rate:g}% "
            f"latency_ms={deploy.latency_ms:g} latency_rate={deploy.latency_rate:g}%"
        )
    yield
    autoscaler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await autoscaler
    model.close()


def telemetry_context(cloud_monitoring_client: Any) -> Callable[[web.Application], AsyncIterator[None]]:
    async def telemetry(app: web.Application) -> AsyncIterator[None]:
        shop_telemetry = build_telemetry(
            app[CONFIG],
            app[CAPACITY].snapshot,
            cloud_monitoring_client=cloud_monitoring_client,
            routes=SHOP_ROUTES,
        )
        app[TELEMETRY] = shop_telemetry
        yield
        # A Cloud Monitoring reader exports once more on shutdown, over the network.
        await asyncio.to_thread(shop_telemetry.shutdown)

    return telemetry
