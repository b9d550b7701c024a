"""The hybrid engine (rules and Gemini must agree to act), and both model-backed engines end to end
through the analyzer app: webhook -> context -> engine -> policy -> stored incident."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google.genai import types
from prometheus_client import CollectorRegistry

import analyzer
from analyzer import (
    AnalyzerConfig,
    DecisionEngine,
    EngineFactory,
    EngineResult,
    GeminiConfig,
    GeminiEngine,
    HybridEngine,
    LlmMetrics,
    ProcessingConfig,
    create_app,
    keys,
    load_scenarios,
)
from analyzer.evaluation import evaluate_scenario
from analyzer.policy import PolicyGuard, PolicyHistory, PolicyOutcome, Verdict
from incidents import ActionType, AlertInfo, Incident, IncidentContext, IncidentRepository, Store
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource, bad_deploy_context
from tests.support.fake_gemini import TEST_MODEL, FakeGemini, Reply, open_test_client, serve_fake_gemini

NOW = datetime(2026, 11, 28, 12, 0, 40, tzinfo=UTC)
GOOD = "demo-app-a-00001-ok"


def firing_alert() -> AlertInfo:
    return AlertInfo(
        name="HighErrorRate",
        status="firing",
        severity="critical",
        starts_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        fingerprint="8f3c1a2b9d0e4f56",
        labels={"service": "demo-app-a"},
    )


def library_context(scenario_id: str) -> IncidentContext:
    scenarios = load_scenarios(Path(analyzer.__file__).parent / "scenarios")
    return next(s.context for s in scenarios if s.id == scenario_id)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with serve_fake_gemini() as server:
        yield server


async def hybrid_decide(fake: FakeGemini, ctx: IncidentContext) -> tuple[EngineResult, PolicyOutcome]:
    config = fake.config()
    async with open_test_client(config) as client:
        result = await HybridEngine(gemini=GeminiEngine(client=client, config=config)).decide(ctx)
    outcome = PolicyGuard().evaluate(
        result.decision, ctx, PolicyHistory(), now=ctx.observed_at, approval_reason=result.approval_reason
    )
    return result, outcome


async def test_agreement_stands_at_the_lower_confidence(fake: FakeGemini) -> None:
    fake.answer(
        Reply.decision("ROLLBACK", target_revision=GOOD, confidence=0.85, root_cause="00002 regressed")
    )
    result, outcome = await hybrid_decide(fake, bad_deploy_context(firing_alert(), now=NOW))
    decision = result.decision
    assert (decision.engine, decision.action, decision.target_revision) == (
        "hybrid",
        ActionType.ROLLBACK,
        GOOD,
    )
    rules_confidence = result.opinions["rules"]["confidence"]
    assert rules_confidence > 0.85
    assert decision.confidence == 0.85
    assert result.approval_reason is None
    assert result.fallback_reason is None
    assert result.opinions["gemini"]["target_revision"] == GOOD
    assert result.opinions["agreement"] == "agree"
    assert decision.evidence[-1] == "gemini agrees: 00002 regressed"
    assert result.usage is not None
    assert result.usage["input_tokens"] == 1800
    assert outcome.verdict is Verdict.EXECUTE


async def test_gemini_holds_back_a_rules_rollback_it_does_not_back(fake: FakeGemini) -> None:
    fake.answer(
        Reply.decision("INVESTIGATE", confidence=0.7, root_cause="Every revision fails: a dependency.")
    )
    result, outcome = await hybrid_decide(fake, bad_deploy_context(firing_alert(), now=NOW))
    assert result.decision.action is ActionType.ROLLBACK
    assert result.decision.engine == "hybrid"
    assert result.approval_reason is not None
    assert result.approval_reason.startswith(
        "the engines disagree: rules proposes roll back to demo-app-a-00001-ok"
    )
    assert "gemini proposes investigate (confidence 0.70)" in result.approval_reason
    assert result.opinions["rules"]["action"] == "ROLLBACK"
    assert result.opinions["gemini"]["action"] == "INVESTIGATE"
    assert result.opinions["gemini"]["root_cause"] == "Every revision fails: a dependency."
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason == result.approval_reason


async def test_a_different_rollback_target_is_a_disagreement(fake: FakeGemini) -> None:
    fake.answer(Reply.decision("ROLLBACK", target_revision="demo-app-a-00000-older"))
    result, outcome = await hybrid_decide(fake, bad_deploy_context(firing_alert(), now=NOW))
    assert result.decision.target_revision == GOOD
    assert outcome.verdict is Verdict.AWAIT_APPROVAL


async def test_gemini_alone_never_acts(fake: FakeGemini) -> None:
    ctx = library_context("dependency-outage-long-serving")
    fake.answer(Reply.decision("ROLLBACK", target_revision=ctx.revisions[1].name, confidence=0.99))
    result, outcome = await hybrid_decide(fake, ctx)
    assert result.opinions["rules"]["action"] == "INVESTIGATE"
    assert result.decision.action is ActionType.INVESTIGATE
    assert result.approval_reason is not None
    assert "gemini disagrees: gemini proposes roll back" in result.decision.evidence[-1]
    assert outcome.verdict is Verdict.PASS
    assert outcome.decision.action is ActionType.INVESTIGATE


async def test_two_different_no_ops_need_no_approval(fake: FakeGemini) -> None:
    ctx = library_context("low-traffic-night")
    fake.answer(Reply.decision("INVESTIGATE", root_cause="A few errors at night."))
    result, outcome = await hybrid_decide(fake, ctx)
    assert result.opinions["rules"]["action"] == "NONE"
    assert result.decision.action is ActionType.NONE
    assert result.decision.engine == "hybrid"
    assert result.approval_reason is None
    assert result.opinions["agreement"] == "both change nothing"
    assert outcome.verdict is Verdict.PASS


async def test_scale_up_agreement_takes_the_rules_engines_bounded_scale(fake: FakeGemini) -> None:
    ctx = library_context("capacity-traffic-spike-503")
    fake.answer(Reply.decision("SCALE_UP", scale={"min_instances": 5, "max_instances": 1000}))
    result, outcome = await hybrid_decide(fake, ctx)
    assert result.decision.action is ActionType.SCALE_UP
    assert result.decision.scale is not None
    assert result.decision.scale.model_dump() == result.opinions["rules"]["scale"]
    assert result.decision.scale.max_instances <= 2 * (ctx.scaling.max_instances or 0)
    assert outcome.verdict is Verdict.EXECUTE


async def test_when_gemini_fails_the_rules_engine_decides_alone(fake: FakeGemini) -> None:
    fake.answer(Reply.error(503), Reply.error(503))
    result, outcome = await hybrid_decide(fake, bad_deploy_context(firing_alert(), now=NOW))
    assert result.decision.engine == "rules"
    assert result.fallback_reason is not None
    assert result.fallback_reason.startswith("api_error: 503 UNAVAILABLE")
    assert result.approval_reason is None
    assert result.opinions == {}
    assert result.usage is not None
    assert result.usage["calls"] == 2
    assert outcome.verdict is Verdict.EXECUTE


# A Gemini that proposes a rollback whatever the evidence: the rules engine must hold it back.


class AlwaysRollsBack:
    """A double of the engine's model client: every answer is a confident rollback to `target`."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.calls = 0

    @property
    def models(self) -> AlwaysRollsBack:
        return self

    async def generate_content(
        self, *, model: str, contents: Any, config: Any = None
    ) -> types.GenerateContentResponse:
        self.calls += 1
        reply = Reply.decision("ROLLBACK", target_revision=self.target, confidence=0.99)
        return types.GenerateContentResponse.model_validate(reply.body)


def previous_ready_revision(context: IncidentContext) -> str:
    """The newest ready revision older than the newest one serving traffic (any revision otherwise)."""
    serving = [i for i, r in enumerate(context.revisions) if r.traffic_percent]
    older = context.revisions[(serving[0] + 1 if serving else 1) :]
    ready = [r.name for r in older if r.ready]
    if ready:
        return ready[0]
    return context.revisions[-1].name if context.revisions else f"{context.service.name}-00001-abc"


LIBRARY = {s.id: s for s in load_scenarios(Path(analyzer.__file__).parent / "scenarios")}


@pytest.mark.parametrize("scenario_id", sorted(LIBRARY))
async def test_a_gemini_that_always_rolls_back_never_makes_the_hybrid_harmful(scenario_id: str) -> None:
    scenario = LIBRARY[scenario_id]
    client = AlwaysRollsBack(previous_ready_revision(scenario.context))
    hybrid = HybridEngine(gemini=GeminiEngine(client=client, config=GeminiConfig(retry_delay=0.0)))
    result = await evaluate_scenario(scenario, hybrid, PolicyGuard())
    assert client.calls == 1
    assert result.fallback_reason is None, result.fallback_reason
    assert not result.harmful, result


# End to end through the analyzer app

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def model_engine(config: GeminiConfig, *, hybrid: bool, metrics: LlmMetrics) -> EngineFactory:
    async def factory(analyzer_config: AnalyzerConfig) -> AsyncIterator[DecisionEngine]:
        async with open_test_client(config) as client:
            engine = GeminiEngine(client=client, config=config, metrics=metrics)
            yield HybridEngine(gemini=engine) if hybrid else engine

    return factory


@pytest.fixture
async def app_client(
    store: Store, aiohttp_client: ClientFactory, fake: FakeGemini
) -> AsyncIterator[Callable[[bool], Awaitable[TestClient[Any, Any]]]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(hybrid: bool) -> TestClient[Any, Any]:
        registry = CollectorRegistry()
        app = create_app(
            AnalyzerConfig(processing=ProcessingConfig(sweep_interval=0.05, workers=2)),
            context_source=StaticContextSource().factory(),
            engine=model_engine(fake.config(), hybrid=hybrid, metrics=LlmMetrics(registry)),
            registry=registry,
            store=store,
        )
        clients.append(await aiohttp_client(app))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def analyze_one_alert(client: TestClient[Any, Any], store: Store) -> Incident:
    response = await client.post("/api/v1/alerts", json=payload(alert()))
    assert response.status == 200
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()
    async with store.session() as session:
        [incident] = await IncidentRepository(session).list_incidents()
    return incident


async def test_app_with_the_gemini_engine_records_its_decision_and_usage(
    app_client: Any, store: Store, fake: FakeGemini
) -> None:
    fake.answer(Reply.decision("ROLLBACK", target_revision=GOOD, confidence=0.92))
    client = await app_client(False)
    incident = await analyze_one_alert(client, store)
    assert incident.status == "queued"
    assert incident.engine == "gemini"
    assert incident.engine_fallback_reason is None
    assert incident.decision is not None
    assert incident.decision["target_revision"] == GOOD
    assert incident.llm_usage is not None
    assert (incident.llm_usage["model"], incident.llm_usage["input_tokens"]) == (TEST_MODEL, 1800)
    assert incident.llm_usage["cost_usd"] > 0
    metrics = await (await client.get("/metrics")).text()
    assert f'remediator_llm_tokens_total{{kind="input",model="{TEST_MODEL}"}} 1800.0' in metrics
    assert (
        f'remediator_llm_request_duration_seconds_count{{model="{TEST_MODEL}",outcome="ok"}} 1.0' in metrics
    )


async def test_app_falls_back_to_the_rules_engine_and_says_why(
    app_client: Any, store: Store, fake: FakeGemini
) -> None:
    fake.answer(Reply.text("I cannot help with that."))
    client = await app_client(False)
    incident = await analyze_one_alert(client, store)
    assert incident.status == "queued"
    assert incident.engine == "rules"
    assert incident.engine_fallback_reason is not None
    assert incident.engine_fallback_reason.startswith("invalid_output: not JSON")
    assert incident.llm_usage is not None
    assert incident.llm_usage["outcome"] == "invalid_output"
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    assert detail["engine_fallback_reason"] == incident.engine_fallback_reason
    assert "engine.fallback" in [event["kind"] for event in detail["timeline"]]
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_engine_fallbacks_total{reason="invalid_output"} 1.0' in metrics


async def test_app_with_the_hybrid_engine_waits_for_a_human_when_the_engines_disagree(
    app_client: Any, store: Store, fake: FakeGemini
) -> None:
    fake.answer(Reply.decision("INVESTIGATE", confidence=0.75, root_cause="Errors began before the deploy."))
    client = await app_client(True)
    incident = await analyze_one_alert(client, store)
    assert incident.status == "awaiting_approval"
    assert incident.engine == "hybrid"
    assert incident.engine_fallback_reason is None
    assert incident.policy_reason is not None
    assert incident.policy_reason.startswith("the engines disagree")
    proposed = incident.proposed_decision
    assert proposed is not None
    assert proposed["action"] == "ROLLBACK"
    assert proposed["opinions"]["rules"]["action"] == "ROLLBACK"
    assert proposed["opinions"]["rules"]["evidence"]
    assert proposed["opinions"]["gemini"]["action"] == "INVESTIGATE"
    assert proposed["opinions"]["gemini"]["root_cause"] == "Errors began before the deploy."
    assert incident.llm_usage is not None
    assert incident.llm_usage["calls"] == 1


async def test_app_with_the_hybrid_engine_acts_when_the_engines_agree(
    app_client: Any, store: Store, fake: FakeGemini
) -> None:
    fake.answer(Reply.decision("ROLLBACK", target_revision=GOOD, confidence=0.88))
    client = await app_client(True)
    incident = await analyze_one_alert(client, store)
    assert incident.status == "queued"
    assert (incident.engine, incident.confidence) == ("hybrid", 0.88)
    assert incident.proposed_decision is not None
    assert incident.proposed_decision["opinions"]["agreement"] == "agree"
