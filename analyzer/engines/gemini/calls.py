"""One request to Gemini: under a timeout, retried exactly once on 429 or 5xx, measured and metered."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from google.genai import errors as genai_errors
from google.genai import types
from pydantic import BaseModel

from analyzer.engines.gemini.answers import Refusal
from analyzer.engines.gemini.client import GenAIClient
from analyzer.engines.gemini.config import GeminiConfig, token_cost
from analyzer.engines.prompting import clean_text, estimate_tokens
from analyzer.metrics import LlmMetrics
from incidents import RemediatorError
from incidents.runtime import Secret

log = logging.getLogger("analyzer.engines.gemini")

# Statuses worth the one retry: quota (429) and the server's own failures.
RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
MAX_REASON_CHARS: Final = 300

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
        cost = token_cost(price, tally.input_tokens, tally.output_tokens)
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
        cost = token_cost(self.config.token_price(), input_tokens, output_tokens)
        if cost is not None:
            self.metrics.cost.labels(model).inc(cost)
