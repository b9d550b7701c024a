"""Running the worker: as a `cleanup_ctx` inside another app (`remediator serve`), or alone with its
own `/healthz`, `/readyz` and `/metrics` (`remediator actuator`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from actuator.annotations import GrafanaAnnotations
from actuator.cloudrun import CloudRunChanger
from actuator.config import ActuatorConfig
from actuator.metrics import ActuatorMetrics
from actuator.verification import RecoveryVerifier
from actuator.worker import ActionWorker
from collector import CloudRunClients, CollectorConfig, PrometheusSource
from incidents.db import Store, StoreConfig
from incidents.endpoints import liveness, metrics_exposition, readiness

WORKER: web.AppKey[ActionWorker] = web.AppKey("actuator_worker", ActionWorker)
STORE: web.AppKey[Store] = web.AppKey("actuator_store", Store)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("actuator_registry", CollectorRegistry)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


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
        metrics = ActuatorMetrics(registry)
        clients = CloudRunClients.create(
            project=collector.project, region=collector.region, endpoint=collector.cloud_run_endpoint
        )
        prometheus = PrometheusSource.for_collector(collector)
        session = aiohttp.ClientSession() if config.grafana is not None else None
        worker = ActionWorker(
            store=store(app),
            changer=CloudRunChanger(clients, retry=config.retry, metrics=metrics),
            verifier=RecoveryVerifier(prometheus, thresholds=collector.thresholds, config=config.verify),
            metrics=metrics,
            config=config,
            annotations=(
                GrafanaAnnotations(session, config.grafana, metrics)
                if session is not None and config.grafana is not None
                else None
            ),
            max_concurrent=max_concurrent,
        )
        app[WORKER] = worker
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()
            if session is not None:
                await session.close()
            prometheus.close()
            clients.close()

    return run_worker


routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return liveness()


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    return await readiness(request.app[STORE])


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return metrics_exposition(request.app[REGISTRY])


def create_app(
    config: ActuatorConfig,
    collector: CollectorConfig,
    store_config: StoreConfig,
    *,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The actuator alone: the worker plus health and metrics endpoints."""
    app = web.Application()
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app.add_routes(routes)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = Store.from_config(store_config)
        yield
        await app[STORE].dispose()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(
        worker_context(config, collector, registry=app[REGISTRY], store=lambda a: a[STORE])
    )
    return app
