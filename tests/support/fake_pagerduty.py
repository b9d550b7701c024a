"""A local PagerDuty Events API v2 (`POST /v2/enqueue`) that checks what it is sent.

It answers as PagerDuty documents
(https://github.com/PagerDuty/developer-docs/blob/main/docs/events-API-v2/01-Overview.md):
202 with `status`, `message`, `dedup_key` for a valid event; 400 for an invalid one (unknown routing
key, a missing required field, a bad severity or event action); `fail_next` makes it answer 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.real_parts import free_port

ROUTING_KEY = "R0UTINGKEY0000000000000000000001"
SEVERITIES = {"critical", "error", "warning", "info"}


def problems(event: dict[str, Any]) -> list[str]:
    """What the Events API would refuse in `event` (empty when it is valid)."""
    found = []
    if event.get("routing_key") != ROUTING_KEY:
        found.append("routing_key")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        found.append("event_action")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        found.append("dedup_key")
    if action in ("acknowledge", "resolve") and not dedup:
        found.append("dedup_key")
    if action == "trigger":
        payload = event.get("payload") or {}
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            found.append("payload.summary")
        if not payload.get("source"):
            found.append("payload.source")
        if payload.get("severity") not in SEVERITIES:
            found.append("payload.severity")
        for link in event.get("links") or []:
            if not link.get("href"):
                found.append("links.href")
    return found


@dataclass
class FakePagerDuty:
    url: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    fail_count: int = 0

    def fail_next(self, count: int) -> None:
        self.fail_count = count

    async def enqueue(self, request: web.Request) -> web.Response:
        if self.fail_count > 0:
            self.fail_count -= 1
            return web.json_response({"status": "error", "message": "internal"}, status=503)
        event = await request.json()
        wrong = problems(event)
        if wrong:
            self.refused.append((event, wrong))
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": wrong}, status=400
            )
        self.events.append(event)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")},
            status=202,
        )


@asynccontextmanager
async def running_fake_pagerduty() -> AsyncIterator[FakePagerDuty]:
    fake = FakePagerDuty()
    app = web.Application()
    app.router.add_post("/v2/enqueue", fake.enqueue)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}/v2/enqueue"
    try:
        yield fake
    finally:
        await runner.cleanup()
