"""The decision engine by name: the one place that knows how `rules`, `gemini` and `hybrid` are made."""

from __future__ import annotations

from typing import Final

from analyzer.engines.base import DecisionEngine
from analyzer.engines.gemini import GeminiConfig, GeminiEngine, GenAIClient
from analyzer.engines.hybrid import HybridEngine
from analyzer.engines.rules import RulesEngine
from analyzer.metrics import LlmMetrics

ENGINE_NAMES: Final = ("rules", "gemini", "hybrid")


def build_engine(
    name: str,
    *,
    client: GenAIClient | None = None,
    gemini: GeminiConfig | None = None,
    metrics: LlmMetrics | None = None,
) -> DecisionEngine:
    """`rules` needs nothing; `gemini` and `hybrid` need an open Gemini client (and its config)."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {name!r}; one of {', '.join(ENGINE_NAMES)}")
    if name == "rules":
        return RulesEngine()
    if client is None:
        raise ValueError(f"the {name} engine needs a Gemini client")
    engine = GeminiEngine(client=client, config=gemini, metrics=metrics)
    return HybridEngine(gemini=engine) if name == "hybrid" else engine
