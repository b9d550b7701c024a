"""One model call: the timeout, exactly one retry on 429/5xx, usage, and failures that never leak the key."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.genai import errors, types

from analyzer.engines.gemini import GeminiCaller, GeminiConfig, read_summary
from incidents import RemediatorError
from incidents.runtime import Secret

KEY = Secret("AIza-secret-key")


@dataclass
class ScriptedModels:
    """Stands in for `client.models`: each call takes the next scripted outcome."""

    outcomes: list[Any]
    calls: int = 0
    configs: list[Any] = field(default_factory=list)

    async def generate_content(self, *, model: str, contents: Any, config: Any = None) -> Any:
        self.calls += 1
        self.configs.append(config)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(60)
        return outcome


@dataclass
class ScriptedClient:
    models: ScriptedModels


def ok(text: str = "All good.") -> types.GenerateContentResponse:
    return types.GenerateContentResponse(
        candidates=[
            types.Candidate(
                content=types.Content(role="model", parts=[types.Part(text=text)]), finish_reason="STOP"
            )
        ],
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=1000, candidates_token_count=100
        ),
    )


def api_error(code: int, status: str, message: str = "") -> errors.APIError:
    return errors.APIError(code, {"error": {"code": code, "status": status, "message": message}})


async def call(*outcomes: Any, gemini_timeout: float = 5.0) -> tuple[Any, ScriptedModels]:
    models = ScriptedModels(list(outcomes))
    caller = GeminiCaller(
        client=ScriptedClient(models),
        config=GeminiConfig(api_key=KEY, timeout=gemini_timeout, retry_delay=0.0),
    )
    result = await caller.call(system="s", prompt="p", schema=None, read=read_summary)
    return result, models


async def test_a_429_is_retried_once_and_usage_counts_both_requests() -> None:
    result, models = await call(api_error(429, "RESOURCE_EXHAUSTED"), ok())
    assert (result.value, result.failure, models.calls) == ("All good.", None, 2)
    assert (result.usage["calls"], result.usage["input_tokens"], result.usage["outcome"]) == (2, 1000, "ok")
    assert result.usage["cost_usd"] == pytest.approx((1000 * 0.30 + 100 * 2.50) / 1e6)


@pytest.mark.parametrize(
    ("outcomes", "failure", "calls"),
    [
        ((api_error(503, "UNAVAILABLE"), api_error(503, "UNAVAILABLE")), "api_error: 503 UNAVAILABLE", 2),
        ((api_error(400, "INVALID_ARGUMENT", "bad"),), "api_error: 400 INVALID_ARGUMENT bad", 1),
        (("hang",), "timeout: no answer within 0.2s", 1),
        ((ok("   "),), "empty: the answer has no text", 1),
    ],
)
async def test_failures_are_named_and_only_429_or_5xx_is_retried(
    outcomes: tuple[Any, ...], failure: str, calls: int
) -> None:
    result, models = await call(*outcomes, gemini_timeout=0.2)
    assert result.value is None and models.calls == calls
    assert (result.failure or "").startswith(failure)


async def test_the_key_is_redacted_from_a_failure_that_echoes_it() -> None:
    result, _ = await call(RuntimeError(f"could not reach endpoint with key={KEY.reveal()}"))
    assert result.failure is not None and "AIza" not in result.failure and "********" in result.failure


async def test_our_own_errors_are_not_passed_off_as_a_model_failure() -> None:
    with pytest.raises(RemediatorError, match="broken recording"):
        await call(RemediatorError("broken recording"))


async def test_the_sdk_gets_the_timeout_and_no_retries_of_its_own() -> None:
    _, models = await call(ok(), gemini_timeout=2.5)
    options = models.configs[0].http_options
    assert (options.timeout, options.retry_options.attempts) == (2500, 1)
