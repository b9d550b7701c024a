"""The analyzer: the webhook and incidents API (create_app), the decision engines, the policy guard,
background analysis and the evaluation harness. Other packages import from here."""

from analyzer.app import EngineFactory, create_app
from analyzer.config import DEFAULT_MAX_BODY_BYTES, AnalyzerConfig, ConfirmationConfig, ProcessingConfig
from analyzer.engines.base import DecisionEngine, EngineResult
from analyzer.engines.build import ENGINE_NAMES, build_engine
from analyzer.engines.gemini import (
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_SECONDS,
    GeminiConfig,
    GeminiEngine,
    GeminiExplainer,
    GenAIClient,
    TokenPrice,
    open_genai_client,
)
from analyzer.engines.hybrid import HybridEngine
from analyzer.engines.recording import RecordingClient, ReplayClient
from analyzer.engines.rules import RulesConfig, RulesEngine
from analyzer.evaluation import EvaluationReport, evaluate_scenario, load_scenarios, render_table
from analyzer.evidence import Evidence, EvidenceConfig
from analyzer.exceptions import AnalyzerError, Conflict, PayloadInvalid
from analyzer.explain import EvidenceExplainer, Explainer, Explanation
from analyzer.metrics import AnalyzerMetrics, LlmMetrics
from analyzer.policy import PolicyConfig, PolicyGuard, PolicyMode, manual_rollback_problem
from analyzer.processing import ContextSource, IncidentProcessor

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT_SECONDS",
    "ENGINE_NAMES",
    "AnalyzerConfig",
    "AnalyzerError",
    "AnalyzerMetrics",
    "ConfirmationConfig",
    "Conflict",
    "ContextSource",
    "DecisionEngine",
    "EngineFactory",
    "EngineResult",
    "EvaluationReport",
    "Evidence",
    "EvidenceConfig",
    "EvidenceExplainer",
    "Explainer",
    "Explanation",
    "GeminiConfig",
    "GeminiEngine",
    "GeminiExplainer",
    "GenAIClient",
    "HybridEngine",
    "IncidentProcessor",
    "LlmMetrics",
    "PayloadInvalid",
    "PolicyConfig",
    "PolicyGuard",
    "PolicyMode",
    "ProcessingConfig",
    "RecordingClient",
    "ReplayClient",
    "RulesConfig",
    "RulesEngine",
    "TokenPrice",
    "build_engine",
    "create_app",
    "evaluate_scenario",
    "load_scenarios",
    "manual_rollback_problem",
    "open_genai_client",
    "render_table",
]
