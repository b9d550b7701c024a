"""The Gemini decision engine and explainer, over an injected google-genai async client.

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
(see genai_client.py for the production one); tests pass one built against a local fake endpoint,
and the evaluation harness a recording or replaying one (recording.py). Nothing here speaks HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Final, Generic, Protocol, TypeVar

from google.genai import errors as genai_errors
from google.genai import types
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analyzer.engines.base import EngineResult
from analyzer.engines.prompting import (
    clean_text,
    estimate_tokens,
    load_prompt,
    render_decision_prompt,
    render_incident_record,
)
from analyzer.engines.rules import RulesEngine
from analyzer.explain import EvidenceExplainer, Explainer, Explanation
from analyzer.metrics import LlmMetrics
from incidents import ActionType, Decision, IncidentContext, RemediatorError
from incidents.secrets import Secret

log = logging.getLogger(__name__)

ENGINE_NAME: Final = "gemini"
DEFAULT_MODEL: Final = "gemini-2.5-flash"
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_RETRY_DELAY_SECONDS: Final = 0.5
# Statuses worth the one retry: quota (429) and the server's own failures.
RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
MAX_REASON_CHARS: Final = 300
MAX_SUMMARY_CHARS: Final = 1500


@dataclass(frozen=True, kw_only=True)
class TokenPrice:
    """USD per million tokens; output includes thinking tokens, which are billed as output."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    as_of: str


# Standard-tier list prices for text, prompts up to 200k tokens, as Google published them for the
# Gemini API and Vertex AI in March 2026. Override with GEMINI_INPUT_USD_PER_MTOK/GEMINI_OUTPUT_USD_PER_MTOK.
PRICES_AS_OF: Final = "2026-03"
LIST_PRICES: Final[dict[str, TokenPrice]] = {
    "gemini-2.5-flash": TokenPrice(input_usd_per_mtok=0.30, output_usd_per_mtok=2.50, as_of=PRICES_AS_OF),
    "gemini-2.5-flash-lite": TokenPrice(
        input_usd_per_mtok=0.10, output_usd_per_mtok=0.40, as_of=PRICES_AS_OF
    ),
    "gemini-2.5-pro": TokenPrice(input_usd_per_mtok=1.25, output_usd_per_mtok=10.00, as_of=PRICES_AS_OF),
    "gemini-2.0-flash": TokenPrice(input_usd_per_mtok=0.10, output_usd_per_mtok=0.40, as_of=PRICES_AS_OF),
    "gemini-2.0-flash-lite": TokenPrice(
        input_usd_per_mtok=0.075, output_usd_per_mtok=0.30, as_of=PRICES_AS_OF
    ),
}


def list_price(model: str) -> TokenPrice | None:
    """The list price of `model`, matching versioned names (`gemini-2.5-flash-001`) by the longest prefix."""
    name = model.rsplit("/", 1)[-1]
    matches = [known for known in LIST_PRICES if name == known or name.startswith(known + "-")]
    return LIST_PRICES[max(matches, key=len)] if matches else None


@dataclass(frozen=True, kw_only=True)
class GeminiConfig:
    """How to reach Gemini and what to ask it with. Built once (remediator/settings.py) and passed down.

    Vertex AI mode: `vertexai=True` with `project` and `location` (application default credentials),
    or with an `api_key` alone (Vertex AI express mode). Gemini API mode: `api_key`.
    """

    model: str = DEFAULT_MODEL
    vertexai: bool = False
    project: str | None = None
    location: str | None = None
    api_key: Secret | None = None
    # Replaces the endpoint in either mode (a proxy, a regional endpoint, a test double).
    base_url: str | None = None
    # Per model call; the one retry gets its own.
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    retry_delay: float = DEFAULT_RETRY_DELAY_SECONDS
    # Tokens the model may think with (0 turns thinking off where the model allows it); None: its default.
    thinking_budget: int | None = None
    # Overrides the list price of `model`.
    price: TokenPrice | None = None

    def token_price(self) -> TokenPrice | None:
        return self.price or list_price(self.model)

    def describe(self) -> str:
        """Where requests go, for logs (never the key)."""
        if self.vertexai and self.project:
            where = f"Vertex AI project {self.project} in {self.location or 'global'}"
        elif self.vertexai:
            where = "Vertex AI (API key)"
        else:
            where = "Gemini API (API key)"
        return f"{self.model} on {where}" + (f" via {self.base_url}" if self.base_url else "")


class ModelsAPI(Protocol):
    async def generate_content(
        self, *, model: str, contents: Any, config: Any = None
    ) -> types.GenerateContentResponse: ...


class GenAIClient(Protocol):
    """The part of `google.genai.client.AsyncClient` the engine uses."""

    @property
    def models(self) -> ModelsAPI: ...


# The answer the model must give: Decision without `engine`, with descriptions the model reads.


class ModelScale(BaseModel):
    model_config = ConfigDict(extra="ignore")

    min_instances: int = Field(
        ge=0, description="Minimum instances after the change; keep the current minimum."
    )
    max_instances: int = Field(
        ge=1, description="Maximum instances after the change; at most the scale-up limit."
    )


class ModelDecision(BaseModel):
    """The response schema sent with every decision request."""

    model_config = ConfigDict(extra="ignore")

    action: ActionType = Field(description="ROLLBACK, SCALE_UP, INVESTIGATE or NONE.")
    target_revision: str | None = Field(
        default=None,
        max_length=200,
        description="For ROLLBACK: the exact name of one listed rollback candidate. Otherwise null.",
    )
    scale: ModelScale | None = Field(
        default=None, description="For SCALE_UP: the new bounds. Otherwise null."
    )
    confidence: float = Field(
        ge=0, le=1, description="How strongly the evidence supports the action, 0 to 1."
    )
    root_cause: str = Field(description="One sentence, with the figures that show it.")
    explanation: str = Field(description="One or two sentences: what to do and why.")
    evidence: list[str] = Field(description="Three to six short facts from the data, each with its figures.")


class Refusal(Exception):
    """An answer that cannot be used; `reason` is the fallback reason (`token: detail`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_BLOCKING_FINISH: Final = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "MODEL_ARMOR",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_NORMAL_FINISH: Final = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED"})


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def answer_text(response: types.GenerateContentResponse) -> str:
    """The text of the first candidate, or a Refusal when the model gave none it could stand behind."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise Refusal(f"blocked: {_enum_text(feedback.block_reason)}")
    if not response.candidates:
        raise Refusal("empty: no candidates")
    finish = response.candidates[0].finish_reason
    if finish is not None:
        finish_text = _enum_text(finish)
        if finish_text in _BLOCKING_FINISH:
            raise Refusal(f"blocked: {finish_text}")
        if finish_text not in _NORMAL_FINISH:
            raise Refusal(f"invalid_output: the answer ended with {clean_text(finish_text, 40)}")
    text = response.text
    if text is None or not text.strip():
        raise Refusal("empty: the answer has no text")
    return text


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in first["loc"])
    got = first.get("input")
    shown = (
        "" if not where or isinstance(got, dict | list) or got is None else f" (got {json.dumps(got)[:60]})"
    )
    return clean_text(f"{where}: {message}{shown}" if where else message, 200)


def read_decision(response: types.GenerateContentResponse) -> Decision:
    """Validate Gemini's answer into a Decision, or raise a Refusal saying why it cannot be one."""
    text = answer_text(response)
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refusal(f"invalid_output: not JSON ({exc.msg} at character {exc.pos})") from None
    try:
        answer = ModelDecision.model_validate(payload)
        return Decision.model_validate(
            {
                "action": answer.action,
                "target_revision": answer.target_revision,
                "scale": answer.scale.model_dump() if answer.scale is not None else None,
                "confidence": answer.confidence,
                # Free text is stored and shown to people: printable, one line, bounded.
                "root_cause": clean_text(answer.root_cause, 500),
                "explanation": clean_text(answer.explanation, 500),
                "evidence": [clean_text(item, 300) for item in answer.evidence[:10]],
                "engine": ENGINE_NAME,
            }
        )
    except ValidationError as exc:
        raise Refusal(f"invalid_output: {_first_error(exc)}") from None


def read_summary(response: types.GenerateContentResponse) -> str:
    """The explainer's answer: a few lines of printable text."""
    lines = [clean_text(line, MAX_SUMMARY_CHARS) for line in answer_text(response).splitlines()]
    summary = "\n".join(line for line in lines if line)[:MAX_SUMMARY_CHARS]
    if not summary:
        raise Refusal("empty: the answer has no text")
    return summary


T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ModelCall(Generic[T]):
    """What a request (and its one retry) came to: a validated value, or why there is none."""

    value: T | None
    failure: str | None
    usage: dict[str, Any]


@dataclass
class _Tally:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    model_version: str | None = None
    latencies_ms: list[int] = field(default_factory=list)

    def add(self, response: types.GenerateContentResponse) -> tuple[int, int]:
        usage = response.usage_metadata
        prompt = (usage.prompt_token_count or 0) if usage else 0
        thinking = (usage.thoughts_token_count or 0) if usage else 0
        output = ((usage.candidates_token_count or 0) if usage else 0) + thinking
        self.input_tokens += prompt
        self.output_tokens += output
        self.thinking_tokens += thinking
        self.model_version = response.model_version or self.model_version
        return prompt, output


def _cost(price: TokenPrice | None, input_tokens: int, output_tokens: int) -> float | None:
    if price is None:
        return None
    return (input_tokens * price.input_usd_per_mtok + output_tokens * price.output_usd_per_mtok) / 1e6


def _api_failure(error: genai_errors.APIError) -> str:
    detail = " ".join(part for part in (str(error.code), error.status or "", error.message or "") if part)
    return "api_error: " + clean_text(detail, MAX_REASON_CHARS - 11)


def _unexpected_failure(error: Exception) -> str:
    return "api_error: " + clean_text(f"{type(error).__name__}: {error}", MAX_REASON_CHARS - 11)


def _redacted(text: str, secret: Secret | None) -> str:
    """A failure text is stored and logged: the API key must not ride along in an echoed message."""
    return text.replace(secret.reveal(), "********") if secret is not None else text


class GeminiCaller:
    """One generate_content request under the timeout, retried once on 429/5xx; measured and metered."""

    def __init__(
        self, *, client: GenAIClient, config: GeminiConfig, metrics: LlmMetrics | None = None
    ) -> None:
        self.client = client
        self.config = config
        self.metrics = metrics

    def generation_config(
        self, *, system: str, schema: type[BaseModel] | None
    ) -> types.GenerateContentConfig:
        timeout_ms = math.ceil(self.config.timeout * 1000)
        return types.GenerateContentConfig(
            system_instruction=system,
            temperature=0.0,
            response_mime_type="application/json" if schema is not None else "text/plain",
            response_schema=schema,
            thinking_config=(
                types.ThinkingConfig(thinking_budget=self.config.thinking_budget)
                if self.config.thinking_budget is not None
                else None
            ),
            # This caller owns the retry (exactly one); the SDK must not add its own on top.
            http_options=types.HttpOptions(
                timeout=timeout_ms, retry_options=types.HttpRetryOptions(attempts=1)
            ),
        )

    async def call(
        self,
        *,
        system: str,
        prompt: str,
        schema: type[BaseModel] | None,
        read: Callable[[types.GenerateContentResponse], T],
    ) -> ModelCall[T]:
        config = self.generation_config(system=system, schema=schema)
        tally = _Tally()
        started = time.perf_counter()
        value: T | None = None
        failure: str | None = None
        for attempt in (1, 2):
            retry = False
            attempt_started = time.perf_counter()
            try:
                async with asyncio.timeout(self.config.timeout):
                    response = await self.client.models.generate_content(
                        model=self.config.model, contents=prompt, config=config
                    )
            except TimeoutError:
                failure = f"timeout: no answer within {self.config.timeout:g}s"
            except genai_errors.APIError as exc:
                failure = _api_failure(exc)
                retry = attempt == 1 and exc.code in RETRYABLE_STATUS
            except RemediatorError:
                # Ours, not the model's: a broken recording or configuration must not pass as a fallback.
                raise
            except Exception as exc:  # the transport, credentials, or the SDK itself: Gemini failed
                failure = _unexpected_failure(exc)
            else:
                input_tokens, output_tokens = tally.add(response)
                self._meter_tokens(input_tokens, output_tokens)
                try:
                    value, failure = read(response), None
                except Refusal as refusal:
                    failure = clean_text(refusal.reason, MAX_REASON_CHARS)
            if failure is not None:
                failure = _redacted(failure, self.config.api_key)
            tally.calls += 1
            elapsed = time.perf_counter() - attempt_started
            tally.latencies_ms.append(round(elapsed * 1000))
            if self.metrics is not None:
                outcome = "ok" if failure is None else failure.split(":", 1)[0]
                self.metrics.request_duration.labels(self.config.model, outcome).observe(elapsed)
            if not retry:
                break
            log.info("gemini request failed, retrying once", extra={"reason": failure})
            await asyncio.sleep(self.config.retry_delay)
        price = self.config.token_price()
        cost = _cost(price, tally.input_tokens, tally.output_tokens)
        usage: dict[str, Any] = {
            "model": self.config.model,
            "model_version": tally.model_version,
            "calls": tally.calls,
            "input_tokens": tally.input_tokens,
            "output_tokens": tally.output_tokens,
            "thinking_tokens": tally.thinking_tokens,
            "estimated_input_tokens": estimate_tokens(system + prompt),
            "latency_ms": round((time.perf_counter() - started) * 1000),
            "call_latencies_ms": tally.latencies_ms,
            "cost_usd": round(cost, 8) if cost is not None else None,
            "prices_usd_per_mtok": (
                {"input": price.input_usd_per_mtok, "output": price.output_usd_per_mtok, "as_of": price.as_of}
                if price is not None
                else None
            ),
            "outcome": "ok" if failure is None else failure.split(":", 1)[0],
        }
        return ModelCall(value=value if failure is None else None, failure=failure, usage=usage)

    def _meter_tokens(self, input_tokens: int, output_tokens: int) -> None:
        if self.metrics is None:
            return
        model = self.config.model
        self.metrics.tokens.labels(model, "input").inc(input_tokens)
        self.metrics.tokens.labels(model, "output").inc(output_tokens)
        cost = _cost(self.config.token_price(), input_tokens, output_tokens)
        if cost is not None:
            self.metrics.cost.labels(model).inc(cost)


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


ClientOpener = Callable[[], AbstractAsyncContextManager[GenAIClient]]


class GeminiExplainer:
    """A model-written summary of an incident; the evidence summary when Gemini fails.

    Explaining is rare and on demand, so each call opens its own client through `open_client`.
    """

    def __init__(
        self,
        *,
        open_client: ClientOpener,
        config: GeminiConfig | None = None,
        metrics: LlmMetrics | None = None,
        fallback: Explainer | None = None,
    ) -> None:
        self.open_client = open_client
        self.config = config or GeminiConfig()
        self.metrics = metrics
        self.fallback = fallback or EvidenceExplainer()
        self.system_instruction = load_prompt("explain_system")

    async def explain(self, incident: dict[str, Any]) -> Explanation:
        try:
            async with self.open_client() as client:
                caller = GeminiCaller(client=client, config=self.config, metrics=self.metrics)
                call = await caller.call(
                    system=self.system_instruction,
                    prompt=render_incident_record(incident),
                    schema=None,
                    read=read_summary,
                )
        except Exception as exc:  # the client could not even be opened (credentials, configuration)
            call = ModelCall(
                value=None,
                failure=_redacted(_unexpected_failure(exc), self.config.api_key),
                usage={},
            )
        if call.value is None:
            log.warning(
                "gemini could not explain; the evidence summary stands in", extra={"reason": call.failure}
            )
            composed = await self.fallback.explain(incident)
            return replace(composed, fallback_reason=call.failure)
        return Explanation(summary=call.value, source=ENGINE_NAME)
