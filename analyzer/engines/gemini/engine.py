"""The Gemini decision engine, over an injected google-genai async client.

    GeminiEngine.decide(context)
        render the context as data (prompting.py) and the system instruction (prompts/decision_system.md)
        -> client.models.generate_content: JSON output constrained by `ModelDecision`, temperature 0,
           under a per-call timeout, retried exactly once on 429 or 5xx
        -> validate the answer into a Decision (engine "gemini")
        any failure -> the rules engine decides; EngineResult.fallback_reason says why:
           `timeout: ...`, `api_error: 503 ...`, `invalid_output: ...`, `blocked: SAFETY`, `empty: ...`
           (the text before the first ':' labels remediator_engine_fallbacks_total)

A validated answer is never fixed here: a rollback target that is not a candidate, or a scale-up
beyond the limit, reaches the policy guard exactly as Gemini gave it, and the guard overrules it.

Token counts (from the response's usage metadata), latency and an estimated cost go to
EngineResult.usage and to `LlmMetrics`. The cost uses list prices (`LIST_PRICES`, dated) unless
GeminiConfig.price overrides them.

The client is anything with `client.models.generate_content(...)` like `google.genai.Client(...).aio`
(see client.py for the production one); tests pass one built against a local fake endpoint,
and the evaluation harness a recording or replaying one (recording.py). Nothing here speaks HTTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from analyzer.engines.base import EngineResult
from analyzer.engines.gemini.answers import ModelDecision, read_decision
from analyzer.engines.gemini.calls import GeminiCaller
from analyzer.engines.gemini.client import GenAIClient
from analyzer.engines.gemini.config import ENGINE_NAME, GeminiConfig
from analyzer.engines.prompting import load_prompt, render_decision_prompt
from analyzer.engines.rules import RulesEngine
from analyzer.metrics import LlmMetrics
from incidents import Decision, IncidentContext

log = logging.getLogger("analyzer.engines.gemini")


@dataclass(frozen=True, kw_only=True)
class GeminiAnswer:
    """Gemini's own decision, or why there is none; before any fallback."""

    decision: Decision | None
    failure: str | None
    usage: dict[str, Any]


class GeminiEngine:
    name = ENGINE_NAME

    def __init__(
        self,
        *,
        client: GenAIClient,
        config: GeminiConfig | None = None,
        metrics: LlmMetrics | None = None,
        rules: RulesEngine | None = None,
    ) -> None:
        self.config = config or GeminiConfig()
        self.caller = GeminiCaller(client=client, config=self.config, metrics=metrics)
        self.rules = rules or RulesEngine()
        self.system_instruction = load_prompt("decision_system")

    async def ask(self, context: IncidentContext) -> GeminiAnswer:
        """Gemini's validated decision, unfixed, or the failure that prevented one."""
        call = await self.caller.call(
            system=self.system_instruction,
            prompt=render_decision_prompt(context),
            schema=ModelDecision,
            read=read_decision,
        )
        return GeminiAnswer(decision=call.value, failure=call.failure, usage=call.usage)

    async def decide(self, context: IncidentContext) -> EngineResult:
        answer = await self.ask(context)
        if answer.decision is None:
            log.warning(
                "gemini could not decide; the rules engine decides",
                extra={"service": context.service.name, "reason": answer.failure},
            )
            return EngineResult(
                decision=self.rules.decide_now(context), fallback_reason=answer.failure, usage=answer.usage
            )
        return EngineResult(decision=answer.decision, usage=answer.usage)
