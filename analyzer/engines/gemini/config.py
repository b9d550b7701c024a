"""How to reach Gemini, what to ask it with, and what its tokens cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from incidents.runtime import Secret

ENGINE_NAME: Final = "gemini"
DEFAULT_MODEL: Final = "gemini-2.5-flash"
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_RETRY_DELAY_SECONDS: Final = 0.5


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


def token_cost(price: TokenPrice | None, input_tokens: int, output_tokens: int) -> float | None:
    """Estimated USD for the tokens at `price`; None when the price is unknown."""
    if price is None:
        return None
    return (input_tokens * price.input_usd_per_mtok + output_tokens * price.output_usd_per_mtok) / 1e6
