"""Gemini's configuration and the prices its cost estimate uses."""

from __future__ import annotations

import pytest

from analyzer.engines.gemini import GeminiConfig, TokenPrice, list_price
from analyzer.engines.gemini.config import token_cost
from incidents.runtime import Secret


def test_list_prices_match_versioned_model_names() -> None:
    flash, lite = list_price("gemini-2.5-flash"), list_price("gemini-2.5-flash-lite")
    assert flash is not None
    assert lite is not None
    assert list_price("gemini-2.5-flash-001") == flash
    assert list_price("publishers/google/models/gemini-2.5-flash-lite-preview") == lite
    assert lite.input_usd_per_mtok < flash.input_usd_per_mtok
    assert list_price("some-other-model") is None


def test_cost_is_per_million_tokens_and_unknown_without_a_price() -> None:
    price = TokenPrice(input_usd_per_mtok=0.30, output_usd_per_mtok=2.50, as_of="test")
    assert token_cost(price, 1_000_000, 200_000) == pytest.approx(0.30 + 0.50)
    assert token_cost(None, 1_000_000, 200_000) is None


def test_a_configured_price_overrides_the_list_price() -> None:
    configured = TokenPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0, as_of="configured")
    assert GeminiConfig(model="gemini-2.5-flash", price=configured).token_price() == configured
    assert GeminiConfig(model="gemini-2.5-flash").token_price() == list_price("gemini-2.5-flash")
    assert GeminiConfig(model="some-other-model").token_price() is None


def test_the_description_names_where_requests_go_and_never_the_key() -> None:
    key = Secret("AIza-not-for-logs")
    vertex = GeminiConfig(vertexai=True, project="p", location="europe-west1", api_key=key)
    assert vertex.describe() == "gemini-2.5-flash on Vertex AI project p in europe-west1"
    express = GeminiConfig(vertexai=True, api_key=key, base_url="http://127.0.0.1:1")
    assert express.describe() == "gemini-2.5-flash on Vertex AI (API key) via http://127.0.0.1:1"
    assert "AIza" not in GeminiConfig(api_key=key).describe() + repr(GeminiConfig(api_key=key))
