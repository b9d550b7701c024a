"""`POST /api/v1/incidents/{id}/explain` with the Gemini explainer, and its fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from analyzer import (
    AnalyzerConfig,
    GeminiExplainer,
    GenAIClient,
    LlmMetrics,
    ProcessingConfig,
    create_app,
    keys,
)
from analyzer.engines.prompting import DATA_CLOSE, DATA_OPEN, load_prompt
from analyzer.explain import compose_summary
from incidents import Store
from incidents.runtime import Secret
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource
from tests.support.fake_gemini import TEST_MODEL, FakeGemini, Reply, open_test_client, serve_fake_gemini

API_TOKEN = "api-token-for-explain-tests"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with serve_fake_gemini() as server:
        yield server


@pytest.fixture
async def make_client(
    store: Store, aiohttp_client: ClientFactory
) -> AsyncIterator[Callable[[FakeGemini], Awaitable[TestClient[Any, Any]]]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(fake: FakeGemini) -> TestClient[Any, Any]:
        registry = CollectorRegistry()
        config = fake.config()
        explainer = GeminiExplainer(
            open_client=partial(open_test_client, config), config=config, metrics=LlmMetrics(registry)
        )
        app = create_app(
            AnalyzerConfig(
                processing=ProcessingConfig(sweep_interval=0.05, workers=2), api_token=Secret(API_TOKEN)
            ),
            context_source=StaticContextSource().factory(),
            registry=registry,
            store=store,
            explainer=explainer,
        )
        clients.append(await aiohttp_client(app))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def decided_incident(client: TestClient[Any, Any]) -> dict[str, Any]:
    """One incident, decided by the (default) rules engine."""
    body = await (await client.post("/api/v1/alerts", json=payload(alert()))).json()
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()
    [incident_id] = body["opened_incidents"]
    detail: dict[str, Any] = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    return detail


async def test_gemini_writes_the_summary_from_the_fenced_incident_record(
    make_client: Any, fake: FakeGemini
) -> None:
    client = await make_client(fake)
    detail = await decided_incident(client)
    fake.answer(
        Reply.text(
            "demo-app-a-00002-bad fails with 8% errors since its deploy.\n\n"
            "Remediator rolled back to demo-app-a-00001-ok.\u202e\x07"
        )
    )
    response = await client.post(f"/api/v1/incidents/{detail['id']}/explain", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body == {
        "id": detail["id"],
        "summary": "demo-app-a-00002-bad fails with 8% errors since its deploy.\n"
        "Remediator rolled back to demo-app-a-00001-ok.",
        "source": "gemini",
        "fallback_reason": None,
    }
    [request] = fake.requests
    assert request.system_instruction == load_prompt("explain_system")
    assert request.generation_config["responseMimeType"] == "text/plain"
    assert "responseSchema" not in request.generation_config
    assert request.generation_config["temperature"] == 0
    prompt = request.prompt
    assert prompt.count(DATA_OPEN) == prompt.count(DATA_CLOSE) == 1
    section = prompt[prompt.index(DATA_OPEN) : prompt.index(DATA_CLOSE)]
    assert f"incident {detail['id']} on demo-app-a: status queued" in section
    assert "final decision: ROLLBACK to demo-app-a-00001-ok" in section
    metrics = await (await client.get("/metrics")).text()
    assert (
        f'remediator_llm_request_duration_seconds_count{{model="{TEST_MODEL}",outcome="ok"}} 1.0' in metrics
    )


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ((Reply.error(500), Reply.error(500)), "api_error: 500 INTERNAL"),
        ((Reply.finish("SAFETY"),), "blocked: SAFETY"),
        ((Reply.text("   "),), "empty: the answer has no text"),
    ],
    ids=["api error", "blocked", "empty"],
)
async def test_the_evidence_summary_stands_in_when_gemini_fails(
    make_client: Any, fake: FakeGemini, replies: tuple[Reply, ...], reason: str
) -> None:
    client = await make_client(fake)
    detail = await decided_incident(client)
    fake.answer(*replies)
    body = await (await client.post(f"/api/v1/incidents/{detail['id']}/explain", headers=AUTH)).json()
    assert body["source"] == "rules"
    assert body["fallback_reason"].startswith(reason)
    assert body["summary"] == compose_summary(detail)


async def test_a_client_that_cannot_open_falls_back_too(fake: FakeGemini) -> None:
    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[GenAIClient]:
        raise RuntimeError("no application default credentials")
        yield  # pragma: no cover

    explainer = GeminiExplainer(open_client=broken, config=fake.config())
    incident = {"id": 3, "service": "demo-app-a", "status": "escalated", "alert_names": ["HighErrorRate"]}
    explanation = await explainer.explain(incident)
    assert explanation.source == "rules"
    assert explanation.fallback_reason == "api_error: RuntimeError: no application default credentials"
    assert explanation.summary == compose_summary(incident)
