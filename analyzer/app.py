"""The analyzer's aiohttp application: `create_app(config)`.

Resources live in `cleanup_ctx` entries, one per resource, so each is released only if it started:
the incident store, the context source (collector) and the engine, and the background processor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from analyzer import keys
from analyzer.approvals import ApprovalRules, ServiceStates, approval_expiry_context
from analyzer.config import READ_PROTECTED_PREFIXES, AnalyzerConfig
from analyzer.engines.base import DecisionEngine
from analyzer.engines.build import build_engine
from analyzer.explain import EvidenceExplainer, Explainer
from analyzer.metrics import AnalyzerMetrics
from analyzer.middlewares import access_log_middleware, error_middleware, read_access_middleware
from analyzer.policy import PolicyGuard
from analyzer.processing import ContextSource, IncidentProcessor
from analyzer.pubsub import push_verifier_context
from analyzer.ratelimit import SlidingWindowLimit
from analyzer.routes import routes
from analyzer.slack import routes as slack_routes
from analyzer.slack import slack_context
from analyzer.webhook import RecentNotifications
from collector import CollectorConfig
from incidents import Store, upgrade
from incidents.runtime import EarlyStops

ContextSourceFactory = Callable[[CollectorConfig], AsyncIterator[ContextSource]]
EngineFactory = Callable[[AnalyzerConfig], AsyncIterator[DecisionEngine]]


async def _rules_engine(config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
    yield build_engine("rules")


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
        middlewares=[
            access_log_middleware,
            error_middleware,
            read_access_middleware(
                read_token=config.read_token,
                api_token=config.api_token,
                prefixes=READ_PROTECTED_PREFIXES,
            ),
        ],
    )
    app[keys.CONFIG] = config
    app[keys.REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[keys.METRICS] = AnalyzerMetrics(app[keys.REGISTRY])
    app.add_routes(routes)
    app.add_routes(slack_routes)

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
                    lifecycle=config.lifecycle,
                )
                app[keys.PROCESSOR] = processor
                # Approvals are checked against Cloud Run as the context source reads it.
                app[keys.APPROVALS] = ApprovalRules(
                    ttl=config.approval_ttl,
                    cloud_run=source if isinstance(source, ServiceStates) else None,
                )
                # Stopped at shutdown's start, beside the other workers (incidents/runtime/shutdown.py).
                early = EarlyStops.enable(app)
                early.register("analysis", processor.stop)
                await processor.start()
                try:
                    yield
                finally:
                    await early.finish("analysis")

    app[keys.RECENT_NOTIFICATIONS] = RecentNotifications()
    app[keys.EXPLAINER] = explainer if explainer is not None else EvidenceExplainer()
    app[keys.EXPLAIN_LIMIT] = SlidingWindowLimit(limit=config.explain_per_minute)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(processor_ctx)
    if config.slack is not None:
        app.cleanup_ctx.append(slack_context(config.slack))
    if config.cloud_monitoring is not None and config.cloud_monitoring.pubsub is not None:
        app.cleanup_ctx.append(push_verifier_context(config.cloud_monitoring.pubsub))
    app.cleanup_ctx.append(
        approval_expiry_context(
            lambda application: application[keys.STORE],
            ttl=config.approval_ttl,
            # Often enough that an expiry is announced within a sixtieth of the time to live (at
            # most 30 s late); a late approval is refused at once in any case.
            interval=max(
                config.processing.sweep_interval, min(30.0, config.approval_ttl.total_seconds() / 60)
            ),
            on_expired=lambda incident_id: _approval_expired(app, incident_id),
        )
    )
    return app


def _approval_expired(app: web.Application, incident_id: int) -> None:
    app[keys.METRICS].approvals.labels("expired").inc()
    # A first expiry sends the incident back to analysis (analyzer/approvals.py): start it now.
    app[keys.PROCESSOR].notify([incident_id])
