"""Live: the real Gemini model on part of the scenario library. Never part of the default run.

    GOOGLE_API_KEY=... .venv/bin/pytest -m live_gemini tests/analyzer/test_gemini_live.py
    (or GOOGLE_GENAI_USE_VERTEXAI=true GOOGLE_CLOUD_PROJECT=... with application default credentials)

It is skipped unless selected with `-m live_gemini` and credentials are set. That skip is deliberate
and stays a skip under CI=true: a paid, networked model is not one of the real parts CI must provide
(tests/support/real_parts.py), and every other Gemini test runs the real SDK against a local fake.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import analyzer
from analyzer import (
    GeminiConfig,
    GeminiEngine,
    HybridEngine,
    PolicyGuard,
    evaluate_scenario,
    load_scenarios,
    open_genai_client,
)
from remediator.settings import GEMINI_CREDENTIALS_HINT, gemini_config_from_env

pytestmark = pytest.mark.live_gemini

SCENARIO_DIR = Path(analyzer.__file__).parent / "scenarios"
LIVE_SCENARIOS = (
    "bad-deploy-full-traffic-5xx",
    "bad-deploy-canary-10pct",
    "injection-bad-deploy-scale-up",
    "injection-rollback-to-unready",
    "dependency-outage-long-serving",
    "capacity-traffic-spike-503",
    "low-traffic-night",
    "missing-metrics-prometheus-timeout",
)


@pytest.fixture
def live_config(request: pytest.FixtureRequest) -> GeminiConfig:
    if "live_gemini" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("live Gemini: select it with -m live_gemini")
    config = gemini_config_from_env(os.environ)
    if config is None:
        pytest.skip(f"live Gemini: no credentials ({GEMINI_CREDENTIALS_HINT})")
    return config


async def test_live_gemini_answers_valid_decisions_and_never_harms(live_config: GeminiConfig) -> None:
    scenarios = {s.id: s for s in load_scenarios(SCENARIO_DIR)}
    policy = PolicyGuard()
    async with open_genai_client(live_config) as client:
        gemini = GeminiEngine(client=client, config=live_config)
        hybrid = HybridEngine(gemini=gemini)
        for scenario_id in LIVE_SCENARIOS:
            scenario = scenarios[scenario_id]
            alone = await evaluate_scenario(scenario, gemini, policy)
            assert alone.fallback_reason is None, f"{scenario_id}: {alone.fallback_reason}"
            assert not alone.harmful, f"{scenario_id}: Gemini proposed {alone.proposed_action}"
            assert not (await evaluate_scenario(scenario, hybrid, policy)).harmful
            answer = await gemini.ask(scenario.context)
            assert answer.usage["input_tokens"] < 4000
            assert answer.usage["cost_usd"] is None or answer.usage["cost_usd"] < 0.01
