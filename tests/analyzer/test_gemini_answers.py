"""Gemini's answers: a Decision when valid, otherwise a Refusal whose reason names the problem."""

from __future__ import annotations

import json

import pytest
from google.genai import types

from analyzer.engines.gemini import Refusal, read_decision, read_summary


def response(
    text: str | None, *, finish: str | None = "STOP", blocked: str | None = None
) -> types.GenerateContentResponse:
    parts = [types.Part(text=text)] if text is not None else []
    return types.GenerateContentResponse(
        candidates=[types.Candidate(content=types.Content(role="model", parts=parts), finish_reason=finish)],
        prompt_feedback=types.GenerateContentResponsePromptFeedback(block_reason=blocked)
        if blocked
        else None,
    )


def answer(**fields: object) -> str:
    return json.dumps(
        {
            "confidence": 0.9,
            "root_cause": "errors rose",
            "explanation": "roll back",
            "evidence": ["e"],
            **fields,
        }
    )


def test_a_valid_answer_becomes_a_gemini_decision_with_printable_bounded_text() -> None:
    decision = read_decision(
        response(
            answer(
                action="ROLLBACK", target_revision="a-00001", root_cause="line one\n\x1b[31mtwo" + "x" * 900
            )
        )
    )
    assert (decision.action.value, decision.target_revision, decision.engine) == (
        "ROLLBACK",
        "a-00001",
        "gemini",
    )
    assert "\x1b" not in decision.root_cause and "\n" not in decision.root_cause
    assert len(decision.root_cause) <= 500


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (response("Sure, roll back."), "invalid_output: not JSON"),
        (response(answer(action="RESTART")), "invalid_output: action: Input should be"),
        (response(answer(action="ROLLBACK")), "invalid_output: a ROLLBACK decision needs target_revision"),
        (response(answer(action="NONE", confidence=1.7)), "invalid_output: confidence"),
        (
            response('{"action": "ROLLB', finish="MAX_TOKENS"),
            "invalid_output: the answer ended with MAX_TOKENS",
        ),
        (response(answer(action="NONE"), finish="SAFETY"), "blocked: SAFETY"),
        (response(None, blocked="PROHIBITED_CONTENT"), "blocked: PROHIBITED_CONTENT"),
        (response("   "), "empty: the answer has no text"),
        (types.GenerateContentResponse(candidates=[]), "empty: no candidates"),
    ],
)
def test_an_unusable_answer_is_refused_with_the_reason(
    reply: types.GenerateContentResponse, reason: str
) -> None:
    with pytest.raises(Refusal) as refused:
        read_decision(reply)
    assert refused.value.reason.startswith(reason)


def test_a_summary_is_a_few_printable_lines() -> None:
    assert read_summary(response("First line.\n\n\x07Second line.")) == "First line.\nSecond line."
    with pytest.raises(Refusal, match="empty"):
        read_summary(response("\n\n"))
