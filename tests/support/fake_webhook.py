"""A local receiver of Remediator's signed event webhooks, verifying them as a consumer would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from actuator.notifications import verify_signature
from tests.support.real_parts import free_port

WEBHOOK_SECRET = "webhook-secret-for-tests"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    event: dict[str, Any]
    signature_ok: bool


@dataclass
class FakeWebhookReceiver:
    secret: str = WEBHOOK_SECRET
    url: str = ""
    received: list[Received] = field(default_factory=list)
    # Answer this status instead of 200 while `failing()` says so.
    failing: Callable[[], bool] = lambda: False
    fail_status: int = 500
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.failing():
            return web.Response(status=self.fail_status, text="receiver down")
        body = await request.read()
        headers = dict(request.headers)
        self.received.append(
            Received(
                headers=headers,
                body=body,
                event=json.loads(body),
                signature_ok=verify_signature(self.secret, request.headers, body),
            )
        )
        return web.Response(status=204)

    def events(self) -> list[dict[str, Any]]:
        return [item.event for item in self.received]

    def types(self) -> list[str]:
        return [item.event["type"].rsplit(".", 1)[-1] for item in self.received]


@asynccontextmanager
async def running_webhook_receiver(**kwargs: Any) -> AsyncIterator[FakeWebhookReceiver]:
    receiver = FakeWebhookReceiver(**kwargs)
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{port}/events"
    try:
        yield receiver
    finally:
        await runner.cleanup()
