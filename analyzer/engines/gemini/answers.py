"""Gemini's answers, validated: the decision schema it must fill, and why an answer is refused."""

from __future__ import annotations

import json
from typing import Any, Final

from google.genai import types
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analyzer.engines.gemini.config import ENGINE_NAME
from analyzer.engines.prompting import clean_text
from incidents import ActionType, Decision

MAX_SUMMARY_CHARS: Final = 1500


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
