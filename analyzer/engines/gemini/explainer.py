"""A model-written summary of an incident, with the evidence summary standing in when Gemini fails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

from analyzer.engines.gemini.answers import read_summary
from analyzer.engines.gemini.calls import GeminiCaller, ModelCall, _redacted, _unexpected_failure
from analyzer.engines.gemini.client import GenAIClient
from analyzer.engines.gemini.config import ENGINE_NAME, GeminiConfig
from analyzer.engines.prompting import load_prompt, render_incident_record
from analyzer.explain import EvidenceExplainer, Explainer, Explanation
from analyzer.metrics import LlmMetrics

log = logging.getLogger("analyzer.engines.gemini")


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
