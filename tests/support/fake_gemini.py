"""A local stand-in for Gemini's generateContent endpoint, for the real google-genai SDK.

The SDK is pointed at it with `http_options.base_url` (GeminiConfig.base_url). It serves the paths
the SDK calls:

    Vertex AI:  POST /v1beta1/projects/{project}/locations/{location}/publishers/google/models/
                     {model}:generateContent
    Gemini API: POST /{version}/models/{model}:generateContent

records every request (path, headers, JSON body), and answers from a script of `Reply`s, or from a
`responder` function when the script is empty. Nothing answers 200 by default: an unscripted request
gets a 500 and is counted in `unexpected`, so a test that asks more than it scripted fails.

`serve_fake_gemini()` runs it on the test's event loop; `fake_gemini_in_thread()` on a loop of its
own, for code that runs `asyncio.run` itself (the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.genai.client import AsyncClient
from google.oauth2.credentials import Credentials

from analyzer import GeminiConfig, open_genai_client
from incidents.runtime import Secret

VERTEX_PATH = (
    "/v1beta1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent"
)
API_KEY_PATH = "/{version}/models/{model}:generateContent"
TEST_PROJECT = "test-project"
TEST_LOCATION = "us-central1"
TEST_MODEL = "gemini-2.5-flash"
TEST_API_KEY = "fake-api-key-123"
DEFAULT_USAGE = {"promptTokenCount": 1800, "candidatesTokenCount": 160, "thoughtsTokenCount": 40}


def fixed_token_credentials() -> Credentials:
    """A fixed bearer token; the SDK needs real credentials there (AnonymousCredentials fail)."""
    return Credentials(token="test")  # type: ignore[no-untyped-call]


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    # Seconds to wait before answering (released early when the fake stops).
    delay: float = 0.0

    @classmethod
    def text(
        cls, text: str, *, finish: str = "STOP", usage: dict[str, int] | None = None, delay: float = 0.0
    ) -> Reply:
        usage = dict(usage or DEFAULT_USAGE)
        usage["totalTokenCount"] = sum(usage.values())
        return cls(
            body={
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": finish,
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": TEST_MODEL,
                "responseId": "fake-response",
            },
            delay=delay,
        )

    @classmethod
    def decision(
        cls,
        action: str,
        *,
        target_revision: str | None = None,
        scale: dict[str, int] | None = None,
        confidence: float = 0.9,
        root_cause: str = "The newest revision regressed after its deploy.",
        explanation: str = "Act on the evidence.",
        evidence: list[str] | None = None,
        usage: dict[str, int] | None = None,
    ) -> Reply:
        payload = {
            "action": action,
            "target_revision": target_revision,
            "scale": scale,
            "confidence": confidence,
            "root_cause": root_cause,
            "explanation": explanation,
            "evidence": evidence if evidence is not None else ["errors 8.0% on the newest revision"],
        }
        return cls.text(json.dumps(payload), usage=usage)

    @classmethod
    def error(cls, status: int, message: str = "fake failure", status_text: str | None = None) -> Reply:
        names = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 400: "INVALID_ARGUMENT"}
        return cls(
            status=status,
            body={
                "error": {
                    "code": status,
                    "message": message,
                    "status": status_text or names.get(status, "ERROR"),
                }
            },
        )

    @classmethod
    def finish(cls, reason: str) -> Reply:
        """A candidate that stopped for `reason` (SAFETY, RECITATION, ...) with no usable text."""
        return cls(
            body={
                "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": reason}],
                "usageMetadata": {"promptTokenCount": 1800, "totalTokenCount": 1800},
            }
        )

    @classmethod
    def prompt_blocked(cls, reason: str = "SAFETY") -> Reply:
        return cls(
            body={
                "promptFeedback": {"blockReason": reason},
                "usageMetadata": {"promptTokenCount": 1800, "totalTokenCount": 1800},
            }
        )

    @classmethod
    def no_candidates(cls) -> Reply:
        return cls(
            body={"candidates": [], "usageMetadata": {"promptTokenCount": 1800, "totalTokenCount": 1800}}
        )

    @classmethod
    def hang(cls, seconds: float) -> Reply:
        return cls.decision("INVESTIGATE").with_delay(seconds)

    def with_delay(self, seconds: float) -> Reply:
        return Reply(status=self.status, body=self.body, delay=seconds)


@dataclass(frozen=True, kw_only=True)
class SeenRequest:
    path: str
    match: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return self.match["model"]

    @property
    def prompt(self) -> str:
        return "".join(part.get("text", "") for part in self.body["contents"][0]["parts"])

    @property
    def system_instruction(self) -> str:
        return "".join(part.get("text", "") for part in self.body["systemInstruction"]["parts"])

    @property
    def generation_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.body.get("generationConfig", {})
        return config


Responder = Callable[[SeenRequest], Reply]


class FakeGemini:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.responder: Responder | None = None
        self.requests: list[SeenRequest] = []
        self.unexpected = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._lock = threading.Lock()

    def answer(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(VERTEX_PATH, self._generate)
        app.router.add_post(API_KEY_PATH, self._generate)
        return app

    async def _generate(self, request: web.Request) -> web.Response:
        seen = SeenRequest(
            path=request.path,
            match=dict(request.match_info),
            headers=dict(request.headers),
            body=await request.json(),
        )
        with self._lock:
            self.requests.append(seen)
            reply = self.script.pop(0) if self.script else None
        if reply is None and self.responder is not None:
            reply = self.responder(seen)
        if reply is None:
            self.unexpected += 1
            reply = Reply.error(500, "the fake's script is exhausted")
        if reply.delay and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
        return web.json_response(reply.body, status=reply.status)

    async def start(self) -> str:
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def config(self, *, vertexai: bool = True, **overrides: Any) -> GeminiConfig:
        """A GeminiConfig that reaches this fake: Vertex AI with a project, or the Gemini API with a key."""
        settings: dict[str, Any] = {"model": TEST_MODEL, "base_url": self.url, "retry_delay": 0.0}
        if vertexai:
            settings |= {"vertexai": True, "project": TEST_PROJECT, "location": TEST_LOCATION}
        else:
            settings |= {"api_key": Secret(TEST_API_KEY)}
        return GeminiConfig(**(settings | overrides))


@contextlib.asynccontextmanager
async def serve_fake_gemini() -> AsyncIterator[FakeGemini]:
    """The fake on the running loop. On a clean exit, every scripted reply must have been asked for,
    and nothing more."""
    fake = FakeGemini()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
    assert fake.unexpected == 0, f"{fake.unexpected} request(s) beyond the script"
    assert not fake.script, f"{len(fake.script)} scripted reply(ies) never asked for"


@contextlib.contextmanager
def fake_gemini_in_thread() -> Iterator[FakeGemini]:
    fake = FakeGemini()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-gemini", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.asynccontextmanager
async def open_test_client(config: GeminiConfig) -> AsyncIterator[AsyncClient]:
    """The production client for `config`, with a fixed-token credential in Vertex AI mode."""
    async with open_genai_client(config, credentials=fixed_token_credentials()) as client:
        yield client
