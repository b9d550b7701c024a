"""The decision engine by name."""

from __future__ import annotations

from typing import Any

import pytest

from analyzer import ENGINE_NAMES, GeminiConfig, GeminiEngine, HybridEngine, RulesEngine, build_engine


class NoClient:
    """Never called: building an engine makes no request."""

    @property
    def models(self) -> Any:
        raise AssertionError("no request while building")


def test_each_name_builds_its_engine() -> None:
    assert ENGINE_NAMES == ("rules", "gemini", "hybrid")
    assert isinstance(build_engine("rules"), RulesEngine)
    config = GeminiConfig(model="gemini-2.5-flash-lite")
    gemini = build_engine("gemini", client=NoClient(), gemini=config)
    assert isinstance(gemini, GeminiEngine) and gemini.config == config
    hybrid = build_engine("hybrid", client=NoClient(), gemini=config)
    assert isinstance(hybrid, HybridEngine) and hybrid.gemini.config == config
    assert {build_engine("rules").name, gemini.name, hybrid.name} == set(ENGINE_NAMES)


def test_a_model_engine_without_a_client_or_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="the hybrid engine needs a Gemini client"):
        build_engine("hybrid")
    with pytest.raises(ValueError, match="unknown engine 'magic'"):
        build_engine("magic")
