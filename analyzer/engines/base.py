"""What every decision engine is: an object that turns an `IncidentContext` into a `Decision`.

Engines know nothing of HTTP or the store; the policy guard, not the engine, decides whether a
decision may act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from incidents import Decision, IncidentContext


@dataclass(frozen=True, kw_only=True)
class EngineResult:
    decision: Decision
    # Set when the configured engine could not answer and the rules engine decided instead.
    fallback_reason: str | None = None
    # Set when engines that must agree did not: the action needs a human's approval.
    approval_reason: str | None = None
    # Other opinions that were weighed (the hybrid engine's two answers), for the incident record.
    opinions: dict[str, Any] = field(default_factory=dict)
    # Token counts, latency and estimated cost of model calls.
    usage: dict[str, Any] | None = None


class DecisionEngine(Protocol):
    name: str

    async def decide(self, context: IncidentContext) -> EngineResult: ...
