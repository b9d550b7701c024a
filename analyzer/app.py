"""The analyzer's aiohttp application: `create_app(config)`.

Resources live in `cleanup_ctx` entries, one per resource, so each is released only if it started:
the incident store, the context source (collector) and the engine, and the background processor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from analyzer import keys
from analyzer.engines.base import DecisionEngine
from analyzer.engines.rules import RulesEngine
from analyzer.explain import EvidenceExplainer, Explainer
from analyzer.metrics import AnalyzerMetrics
from analyzer.middlewares import access_log_middleware, error_middleware
from analyzer.policy import PolicyConfig, PolicyGuard
from analyzer.processing import ContextSource, IncidentProcessor, ProcessingConfig
from analyzer.routes import routes
from analyzer.webhook import RecentNotifications
from collector.config import CollectorConfig
from incidents.db import Store, StoreConfig
from incidents.migrate import upgrade
from incidents.secrets import Secret

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class AnalyzerConfig:
    store: StoreConfig = field(default_factory=StoreConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    webhook_token: Secret | None = None
    api_token: Secret | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Bring the schema up to date at start-up (the local stack); production runs `remediator db upgrade`.
    migrate_on_start: bool = False


ContextSourceFactory = Callable[[CollectorConfig], AsyncIterator[ContextSource]]
EngineFactory = Callable[[AnalyzerConfig], AsyncIterator[DecisionEngine]]


async def _rules_engine(config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
    yield RulesEngine()


def create_app(
    config: AnalyzerConfig,
    *,
    context_source: ContextSourceFactory,
    engine: EngineFactory | None = None,
    registry: CollectorRegistry | None = None,
    store: Store | None = None,
    explainer: Explainer | None = None,
) -> web.Application:
    """Build the analyzer. `context_source` and `engine` are async-generator factories so they
    own their resources (HTTP sessions, SDK clients) for exactly the application's lifetime."""
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[access_log_middleware, error_middleware],
    )
    app[keys.CONFIG] = config
    app[keys.REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[keys.METRICS] = AnalyzerMetrics(app[keys.REGISTRY])
    app.add_routes(routes)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        app[keys.STORE] = store if store is not None else Store.from_config(config.store)
        if config.migrate_on_start:
            await upgrade(app[keys.STORE])
        yield
        if owned:
            await app[keys.STORE].dispose()

    async def processor_ctx(app: web.Application) -> AsyncIterator[None]:
        async for source in context_source(config.collector):
            async for decision_engine in (engine or _rules_engine)(config):
                processor = IncidentProcessor(
                    store=app[keys.STORE],
                    context_source=source,
                    engine=decision_engine,
                    policy=PolicyGuard(config.policy),
                    metrics=app[keys.METRICS],
                    config=config.processing,
                )
                app[keys.PROCESSOR] = processor
                await processor.start()
                try:
                    yield
                finally:
                    await processor.stop()

    app[keys.RECENT_NOTIFICATIONS] = RecentNotifications()
    app[keys.EXPLAINER] = explainer if explainer is not None else EvidenceExplainer()
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(processor_ctx)
    return app
