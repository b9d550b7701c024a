"""The client the engine talks to: the part of google-genai it uses (`GenAIClient`), and the
production client for a GeminiConfig, open for the lifetime of its user.

The SDK speaks HTTP through aiohttp when it is installed. Left alone it creates its own session by
subclassing `aiohttp.ClientSession`, which aiohttp deprecates (a DeprecationWarning per event loop);
handing it a plain session avoids that, and makes the session's lifetime ours: it closes when the
`async with` ends.

Credentials: an API key from the config, or (Vertex AI with a project) application default
credentials that the SDK loads on the first request. `credentials=` replaces them; tests pass a
fixed-token `google.oauth2.credentials.Credentials` to reach a local fake endpoint.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
from google import genai
from google.auth.credentials import Credentials
from google.genai import types
from google.genai.client import AsyncClient

from analyzer.engines.gemini.config import GeminiConfig


class ModelsAPI(Protocol):
    async def generate_content(
        self, *, model: str, contents: Any, config: Any = None
    ) -> types.GenerateContentResponse: ...


class GenAIClient(Protocol):
    """The part of `google.genai.client.AsyncClient` the engine uses."""

    @property
    def models(self) -> ModelsAPI: ...


@asynccontextmanager
async def open_genai_client(
    config: GeminiConfig, *, credentials: Credentials | None = None
) -> AsyncIterator[AsyncClient]:
    session = aiohttp.ClientSession()
    try:
        vertex_with_project = config.vertexai and bool(config.project)
        client = genai.Client(
            vertexai=config.vertexai,
            # In Vertex AI mode a project means application default credentials; a key is used alone.
            api_key=None if vertex_with_project or config.api_key is None else config.api_key.reveal(),
            credentials=credentials if config.vertexai else None,
            project=config.project if vertex_with_project else None,
            location=(config.location or "global") if vertex_with_project else None,
            http_options=types.HttpOptions(
                base_url=config.base_url,
                timeout=math.ceil(config.timeout * 1000),
                aiohttp_client=session,
            ),
        )
        try:
            yield client.aio
        finally:
            await client.aio.aclose()
    finally:
        await session.close()
