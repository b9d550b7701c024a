"""Composition of the long-running services from Settings: analyzer (+ actuator) and actuator alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web
from prometheus_client import CollectorRegistry

from actuator import create_app as create_actuator_app
from actuator import worker_context
from analyzer import keys as analyzer_keys
from analyzer.app import AnalyzerConfig, EngineFactory, create_app
from analyzer.engines.base import DecisionEngine
from analyzer.engines.gemini import GeminiEngine, GeminiExplainer
from analyzer.engines.genai_client import open_genai_client
from analyzer.engines.hybrid import HybridEngine
from analyzer.engines.rules import RulesEngine
from analyzer.explain import Explainer
from analyzer.metrics import LlmMetrics
from collector import CollectorConfig, ContextBuilder
from remediator.settings import GEMINI_CREDENTIALS_HINT, Settings, SettingsError


async def collector_source(config: CollectorConfig) -> AsyncIterator[ContextBuilder]:
    async with ContextBuilder.open(config) as builder:
        yield builder


def engine_factory(settings: Settings, *, llm_metrics: LlmMetrics | None = None) -> EngineFactory:
    """The decision engine named by REMEDIATOR_ENGINE; a model-backed one owns its client for the
    application's lifetime."""
    if settings.engine == "rules":

        async def rules(config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
            yield RulesEngine()

        return rules
    gemini = settings.gemini
    if gemini is None:
        raise SettingsError(
            f"REMEDIATOR_ENGINE={settings.engine} needs Gemini credentials: {GEMINI_CREDENTIALS_HINT}"
        )
    hybrid = settings.engine == "hybrid"

    async def model_engine(config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
        async with open_genai_client(gemini) as client:
            engine = GeminiEngine(client=client, config=gemini, metrics=llm_metrics)
            yield HybridEngine(gemini=engine) if hybrid else engine

    return model_engine


def explainer_for(settings: Settings, *, llm_metrics: LlmMetrics | None = None) -> Explainer | None:
    """Gemini writes the incident summaries whenever it is configured, whatever engine decides."""
    if settings.gemini is None:
        return None
    return GeminiExplainer(
        open_client=partial(open_genai_client, settings.gemini), config=settings.gemini, metrics=llm_metrics
    )


def build_server_app(settings: Settings, *, with_actuator: bool = True) -> web.Application:
    """`remediator serve`: the analyzer, and (by default) the actuator worker in the same process."""
    registry = CollectorRegistry()
    llm_metrics = LlmMetrics(registry) if settings.gemini is not None else None
    app = create_app(
        settings.analyzer,
        context_source=collector_source,
        engine=engine_factory(settings, llm_metrics=llm_metrics),
        registry=registry,
        explainer=explainer_for(settings, llm_metrics=llm_metrics),
    )
    if with_actuator:
        app.cleanup_ctx.append(
            worker_context(
                settings.actuator,
                settings.collector,
                registry=registry,
                store=lambda application: application[analyzer_keys.STORE],
            )
        )
    return app


def build_actuator_app(settings: Settings) -> web.Application:
    """`remediator actuator`: the worker alone, with its own health and metrics endpoints."""
    return create_actuator_app(settings.actuator, settings.collector, settings.store)
