"""The hybrid engine: the rules engine and Gemini decide on the same context, and must agree to act.

- They agree (the same action; for ROLLBACK the same target; for SCALE_UP the action is enough and the
  rules engine's bounded scale is taken): the decision stands as engine "hybrid", at the lower of the
  two confidences.
- Both answer INVESTIGATE or NONE, differently: nothing would change either way, so the rules
  engine's answer stands, without approval.
- Otherwise they disagree: the rules engine's decision is returned with an `approval_reason`, so a
  human decides with both opinions (and their evidence) on the incident. A rules ROLLBACK that Gemini
  does not back waits for approval; a Gemini ROLLBACK that the rules engine does not back is shown to
  the human who investigates, and never executed.
- Gemini fails: the rules engine alone decides under the normal policy; `fallback_reason` says why.

So Gemini can hold back a false positive of the rules engine, but never acts on its own answer.
"""

from __future__ import annotations

from typing import Any, Final

from analyzer.engines.base import EngineResult
from analyzer.engines.gemini import GeminiEngine
from analyzer.engines.rules import RulesEngine
from incidents import ActionType, Decision, IncidentContext, describe_decision

ENGINE_NAME: Final = "hybrid"
NO_CHANGE: Final = frozenset({ActionType.INVESTIGATE, ActionType.NONE})


def agree(rules: Decision, model: Decision) -> bool:
    if rules.action is not model.action:
        return False
    if rules.action is ActionType.ROLLBACK:
        return rules.target_revision == model.target_revision
    return True


def _said(engine: str, decision: Decision) -> str:
    return f"{engine} proposes {describe_decision(decision)} (confidence {decision.confidence:.2f})"


class HybridEngine:
    name = ENGINE_NAME

    def __init__(self, *, gemini: GeminiEngine, rules: RulesEngine | None = None) -> None:
        self.gemini = gemini
        self.rules = rules or gemini.rules

    async def decide(self, context: IncidentContext) -> EngineResult:
        rules = self.rules.decide_now(context)
        answer = await self.gemini.ask(context)
        model = answer.decision
        if model is None:
            return EngineResult(decision=rules, fallback_reason=answer.failure, usage=answer.usage)
        opinions: dict[str, Any] = {"rules": rules.to_json_dict(), "gemini": model.to_json_dict()}
        if agree(rules, model):
            opinions["agreement"] = "agree"
            decision = rules.model_copy(
                update={
                    "engine": ENGINE_NAME,
                    "confidence": min(rules.confidence, model.confidence),
                    "evidence": [*rules.evidence, f"gemini agrees: {model.root_cause}"],
                }
            )
            return EngineResult(decision=decision, opinions=opinions, usage=answer.usage)
        if rules.action in NO_CHANGE and model.action in NO_CHANGE:
            opinions["agreement"] = "both change nothing"
            decision = rules.model_copy(
                update={
                    "engine": ENGINE_NAME,
                    "evidence": [
                        *rules.evidence,
                        f"gemini would answer {model.action.value}: {model.root_cause}",
                    ],
                }
            )
            return EngineResult(decision=decision, opinions=opinions, usage=answer.usage)
        reason = f"the engines disagree: {_said('rules', rules)}; {_said('gemini', model)}"
        opinions["agreement"] = "disagree"
        opinions["reason"] = reason
        decision = rules.model_copy(
            update={
                "engine": ENGINE_NAME,
                "evidence": [*rules.evidence, f"gemini disagrees: {_said('gemini', model)}"],
            }
        )
        return EngineResult(decision=decision, approval_reason=reason, opinions=opinions, usage=answer.usage)
