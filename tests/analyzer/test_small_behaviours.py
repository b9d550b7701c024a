"""Reads are logged at DEBUG, changes at INFO; an alert for a service Cloud Run does not know says so."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest

from analyzer import AnalyzerConfig, ProcessingConfig, RulesEngine, create_app
from incidents import ActionType, AlertInfo, IncidentContext, RecentAction, Store
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource, bad_deploy_context


async def test_reads_are_logged_at_debug_and_changes_at_info(
    store: Store, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        AnalyzerConfig(processing=ProcessingConfig(sweep_interval=60)),
        context_source=StaticContextSource().factory(),
        store=store,
    )
    client = await aiohttp_client(app)
    with caplog.at_level(logging.DEBUG, logger="analyzer.http"):
        await client.get("/api/v1/incidents")
        await client.post("/api/v1/alerts", json=payload(alert()))
    levels = {
        record.getMessage(): record.levelno for record in caplog.records if record.name == "analyzer.http"
    }
    assert levels["GET /api/v1/incidents 200"] == logging.DEBUG
    assert levels["POST /api/v1/alerts 200"] == logging.INFO


def unknown_service_context(
    alert: AlertInfo, *, now: datetime, recent: list[RecentAction] | None = None
) -> IncidentContext:
    """What the collector gathers for a service Cloud Run does not have: no revisions, no requests."""
    context = bad_deploy_context(alert, now=now, recent=recent).to_json_dict()
    context["revisions"] = []
    context["metrics"].update(
        requests_in_window=0, request_rate_rps=0.0, error_rate=None, latency_p95_ms=None
    )
    context["gaps"] = [f"cloud_run: service {context['service']['name']} not found"]
    return IncidentContext.model_validate(context)


def test_an_alert_for_a_service_cloud_run_does_not_know_says_so() -> None:
    info = AlertInfo.model_validate(
        {
            "name": "HighErrorRate",
            "status": "firing",
            "starts_at": "2026-11-28T12:00:00Z",
            "fingerprint": "f00d",
            "labels": {"service": "no-such-service"},
        }
    )
    context = unknown_service_context(info, now=datetime.fromisoformat("2026-11-28T12:01:00+00:00"))
    decision = RulesEngine().decide_now(context)
    assert decision.action is ActionType.INVESTIGATE
    assert "does not exist in Cloud Run" in decision.root_cause
    assert "quiet service" not in decision.explanation
    assert "CLOUD_RUN_PROJECT" in decision.explanation
