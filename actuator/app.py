"""Running the worker: as a `cleanup_ctx` inside another app (`remediator serve`), or alone with its
own `/healthz`, `/readyz` and `/metrics` (`remediator actuator`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from actuator.annotations import GrafanaAnnotations
from actuator.cloudrun import CloudRunChanger
from actuator.config import ActuatorConfig
from actuator.metrics import ActuatorMetrics
from actuator.notifications import NotificationConfig, notifier_context
from actuator.verification import RecoveryVerifier
from actuator.worker import ActionWorker
from collector import CloudRunClients, CollectorConfig, PrometheusSource
from incidents import Store, StoreConfig
from incidents.runtime import EarlyStops, liveness, metrics_exposition, readiness

WORKER: web.AppKey[ActionWorker] = web.AppKey("actuator_worker", ActionWorker)
STORE: web.AppKey[Store] = web.AppKey("actuator_store", Store)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("actuator_registry", CollectorRegistry)
READINESS_WARNINGS: web.AppKey[list[str]] = web.AppKey("actuator_readiness_warnings")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@asynccontextmanager
async def open_action_worker(
    config: ActuatorConfig,
    collector: CollectorConfig,
    *,
    store: Store,
    registry: CollectorRegistry,
    clients: CloudRunClients | None = None,
    owner: str | None = None,
    max_concurrent: int = 4,
) -> AsyncIterator[ActionWorker]:
    """An ActionWorker with everything it uses (Cloud Run clients unless given, Prometheus, the
    Grafana session), all released on exit. The caller starts it, or runs actions one at a time."""
    metrics = ActuatorMetrics(registry)
    owns_clients = clients is None
    cloud_run = CloudRunClients.for_collector(collector) if clients is None else clients
    prometheus = PrometheusSource.for_collector(collector)
    session = aiohttp.ClientSession() if config.grafana is not None else None
    try:
        yield ActionWorker(
            store=store,
            changer=CloudRunChanger(cloud_run, retry=config.retry, metrics=metrics),
            verifier=RecoveryVerifier(prometheus, thresholds=collector.thresholds, config=config.verify),
            metrics=metrics,
            config=config,
            annotations=(
                GrafanaAnnotations(session, config.grafana, metrics)
                if session is not None and config.grafana is not None
                else None
            ),
            owner=owner,
            max_concurrent=max_concurrent,
        )
    finally:
        if session is not None:
            await session.close()
        prometheus.close()
        if owns_clients:
            cloud_run.close()


def worker_context(
    config: ActuatorConfig,
    collector: CollectorConfig,
    *,
    registry: CollectorRegistry,
    store: Callable[[web.Application], Store],
    max_concurrent: int = 4,
) -> CleanupContext:
    """A cleanup_ctx that runs an ActionWorker for the application's lifetime."""

    async def run_worker(app: web.Application) -> AsyncIterator[None]:
        async with open_action_worker(
            config, collector, store=store(app), registry=registry, max_concurrent=max_concurrent
        ) as worker:
            app[WORKER] = worker
            # On shutdown the worker stops taking work and hands its leases back at once, beside
            # the other workers' stops and the requests draining (incidents/runtime/shutdown.py).
            early = EarlyStops.enable(app)
            early.register("actuator", worker.stop)
            await worker.start()
            try:
                yield
            finally:
                await early.finish("actuator")

    return run_worker


routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return liveness()


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    warnings: list[str] = request.app[READINESS_WARNINGS]
    return await readiness(request.app[STORE], warnings=warnings)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return metrics_exposition(request.app[REGISTRY])


def create_app(
    config: ActuatorConfig,
    collector: CollectorConfig,
    store_config: StoreConfig,
    *,
    registry: CollectorRegistry | None = None,
    middlewares: Sequence[Middleware] = (),
    readiness_warnings: Sequence[str] = (),
    notifications: NotificationConfig | None = None,
) -> web.Application:
    """The actuator alone: the worker (and the notifier) plus health and metrics endpoints.
    `middlewares` guard them (the CLI passes the read-token check); `readiness_warnings` appear in
    /readyz."""
    app = web.Application(middlewares=list(middlewares))
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[READINESS_WARNINGS] = list(readiness_warnings)
    app.add_routes(routes)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = Store.from_config(store_config)
        yield
        await app[STORE].dispose()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(
        worker_context(config, collector, registry=app[REGISTRY], store=lambda a: a[STORE])
    )
    if notifications is not None:
        app.cleanup_ctx.append(
            notifier_context(notifications, registry=app[REGISTRY], store=lambda a: a[STORE])
        )
    return app
