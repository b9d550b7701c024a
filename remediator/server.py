"""Composition of the long-running services from Settings: analyzer (+ actuator) and actuator alone."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from actuator import create_app as create_actuator_app
from actuator import worker_context
from actuator.notifications import notifier_context
from analyzer import (
    AnalyzerConfig,
    DecisionEngine,
    EngineFactory,
    Explainer,
    GeminiExplainer,
    LlmMetrics,
    build_engine,
    create_app,
    open_genai_client,
)
from analyzer import keys as analyzer_keys
from analyzer.middlewares import read_access_middleware
from collector import CollectorConfig, ContextBuilder
from incidents.db import resolve_database_url
from incidents.runtime import Secret
from remediator.settings import Settings, SettingsError, require_gemini

log = logging.getLogger("remediator.server")


async def collector_source(config: CollectorConfig) -> AsyncIterator[ContextBuilder]:
    async with ContextBuilder.open(config) as builder:
        yield builder


def engine_factory(settings: Settings, *, llm_metrics: LlmMetrics | None = None) -> EngineFactory:
    """The decision engine named by REMEDIATOR_ENGINE; a model-backed one owns its client for the
    application's lifetime."""
    name = settings.engine
    if name == "rules":

        async def rules(config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
            yield build_engine(name)

        return rules
    gemini = require_gemini(settings.gemini, asked_by=f"REMEDIATOR_ENGINE={name}")

    async def model_engine(config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
        async with open_genai_client(gemini) as client:
            yield build_engine(name, client=client, gemini=gemini, metrics=llm_metrics)

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
        app.cleanup_ctx.append(
            notifier_context(
                settings.notifications,
                registry=registry,
                store=lambda application: application[analyzer_keys.STORE],
            )
        )
    return app


def build_actuator_app(settings: Settings, *, readiness_warnings: tuple[str, ...] = ()) -> web.Application:
    """`remediator actuator`: the worker alone, with its own health and metrics endpoints (its
    /metrics behind REMEDIATOR_READ_TOKEN when set)."""
    return create_actuator_app(
        settings.actuator,
        settings.collector,
        settings.store,
        middlewares=[
            read_access_middleware(
                read_token=settings.analyzer.read_token,
                api_token=settings.analyzer.api_token,
                prefixes=("/metrics",),
            )
        ],
        readiness_warnings=readiness_warnings,
        notifications=settings.notifications,
    )


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine. Names other than localhost may
    resolve anywhere, so they count as exposed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(
    host: str, *, token: Secret | None, token_names: str, allow_insecure: bool
) -> str | None:
    """Refuse (SettingsError) to listen beyond loopback with nothing guarding what `token_names`
    would guard, unless the operator said --insecure-no-auth; then the warning to show."""
    if token is not None or is_loopback(host):
        return None
    if not allow_insecure:
        raise SettingsError(
            f"refusing to listen on {host} without {token_names}: anyone who can reach it could use it "
            f"unauthenticated; set {token_names} (or its _FILE variant), listen on 127.0.0.1, or pass "
            "--insecure-no-auth"
        )
    return f"listening on {host} with --insecure-no-auth: no {token_names}, so nothing is authenticated"


def secure_serve_settings(settings: Settings, *, host: str, allow_insecure: bool) -> Settings:
    """`remediator serve`: the webhook accepts alerts (a forged `resolved` cancels a remediation),
    so a non-loopback address needs WEBHOOK_TOKEN. Returns the settings to serve with."""
    warning = exposure_warning(
        host,
        token=settings.analyzer.webhook_token,
        token_names="WEBHOOK_TOKEN",
        allow_insecure=allow_insecure,
    )
    if warning is None:
        return settings
    log.warning(warning, extra={"host": host, "insecure_no_auth": True})
    return replace(settings, analyzer=replace(settings.analyzer, insecure_no_auth=True))


def actuator_readiness_warnings(settings: Settings, *, host: str, allow_insecure: bool) -> tuple[str, ...]:
    """`remediator actuator` serves only health, readiness and metrics: a non-loopback address needs
    a token for /metrics (REMEDIATOR_READ_TOKEN or REMEDIATOR_API_TOKEN)."""
    analyzer = settings.analyzer
    warning = exposure_warning(
        host,
        token=analyzer.read_token or analyzer.api_token,
        token_names="REMEDIATOR_READ_TOKEN",
        allow_insecure=allow_insecure,
    )
    if warning is None:
        return ()
    log.warning(warning, extra={"host": host, "insecure_no_auth": True})
    return (warning,)


def warn_if_store_is_not_durable(settings: Settings) -> None:
    """Without DATABASE_URL the store is a SQLite file under the working directory: fine on a laptop,
    gone with a container's filesystem (and with it cooldowns, flap history and open incidents)."""
    if settings.store.url is not None:
        return
    database = resolve_database_url(None).database or ""
    path = Path(database).expanduser().resolve()
    log.warning(
        "DATABASE_URL is not set: the incident store is the SQLite file %s, which does not survive a "
        "container restart without a volume (cooldowns, flap history and open incidents would be lost); "
        "set DATABASE_URL=postgresql://... for anything but a trial",
        path,
        extra={"store": "sqlite", "path": str(path), "durable": False},
    )
