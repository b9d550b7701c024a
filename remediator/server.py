"""Composition of the long-running services from Settings: analyzer (+ actuator) and actuator alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from actuator import create_app as create_actuator_app
from actuator import worker_context
from analyzer import keys as analyzer_keys
from analyzer.app import AnalyzerConfig, EngineFactory, create_app
from analyzer.engines.base import DecisionEngine
from analyzer.engines.rules import RulesEngine
from collector import CollectorConfig, ContextBuilder
from remediator.settings import Settings, SettingsError


async def collector_source(config: CollectorConfig) -> AsyncIterator[ContextBuilder]:
    async with ContextBuilder.open(config) as builder:
        yield builder


def engine_factory(settings: Settings) -> EngineFactory:
    """The decision engine named by REMEDIATOR_ENGINE."""
    if settings.engine == "rules":

        async def rules(config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
            yield RulesEngine()

        return rules
    raise SettingsError(f"REMEDIATOR_ENGINE={settings.engine} is not available in this build")


def build_server_app(settings: Settings, *, with_actuator: bool = True) -> web.Application:
    """`remediator serve`: the analyzer, and (by default) the actuator worker in the same process."""
    registry = CollectorRegistry()
    app = create_app(
        settings.analyzer,
        context_source=collector_source,
        engine=engine_factory(settings),
        registry=registry,
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
