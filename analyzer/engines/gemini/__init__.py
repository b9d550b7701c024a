"""Gemini: configuration and prices, the client, one call with its retry, validated answers, the
decision engine and the explainer. See engine.py for the flow."""

from analyzer.engines.gemini.answers import ModelDecision, Refusal, read_decision, read_summary
from analyzer.engines.gemini.calls import GeminiCaller, ModelCall
from analyzer.engines.gemini.client import GenAIClient, open_genai_client
from analyzer.engines.gemini.config import (
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_SECONDS,
    GeminiConfig,
    TokenPrice,
    list_price,
)
from analyzer.engines.gemini.engine import GeminiAnswer, GeminiEngine
from analyzer.engines.gemini.explainer import GeminiExplainer

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT_SECONDS",
    "GeminiAnswer",
    "GeminiCaller",
    "GeminiConfig",
    "GeminiEngine",
    "GeminiExplainer",
    "GenAIClient",
    "ModelCall",
    "ModelDecision",
    "Refusal",
    "TokenPrice",
    "list_price",
    "open_genai_client",
    "read_decision",
    "read_summary",
]
