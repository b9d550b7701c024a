"""The human in the demo's loop (`remediator demo --mode approve`): a local fake Slack that shows the
incident card in the terminal as it changes and, after a pause, clicks Approve with a signed request,
as an on-call engineer would."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import aiohttp

from incidents.outbox import APPROVE_ACTION_ID
from remediator.fakeslack import FakeMessage, FakeSlack, plain_text, render_blocks

DEMO_USER_ID = "U0ONCALL"
DEMO_USER_NAME = "on-call"
CHANNEL = "#incidents"


class SlackApprover:
    def __init__(self, say: Callable[[str], None], *, pause: float = 5.0) -> None:
        self.say = say
        self.pause = pause
        self.slack = FakeSlack(
            token=f"xoxb-demo-{secrets.token_urlsafe(12)}",
            signing_secret=secrets.token_urlsafe(24),
            on_post=self._on_post,
        )
        self.interactions_url: str | None = None
        self.clicked_by: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._clicks: set[asyncio.Task[None]] = set()
        self._shown_status: dict[str, str] = {}

    async def start(self) -> None:
        await self.slack.start()
        self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        for task in self._clicks:
            task.cancel()
        await asyncio.gather(*self._clicks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        await self.slack.stop()

    def remediator_env(self, remediator_url: str) -> dict[str, str]:
        """What `remediator serve` needs to post cards here and take clicks from here."""
        self.interactions_url = f"{remediator_url}/api/v1/slack/interactions"
        return {
            "REMEDIATOR_MODE": "approve",
            "SLACK_BOT_TOKEN": self.slack.token,
            "SLACK_SIGNING_SECRET": self.slack.signing_secret,
            "SLACK_CHANNEL": CHANNEL,
            "SLACK_API_URL": self.slack.api_url,
            "SLACK_APPROVERS": DEMO_USER_ID,
            "REMEDIATOR_PUBLIC_URL": remediator_url,
            "NOTIFY_POLL_SECONDS": "0.25",
        }

    def card(self) -> FakeMessage | None:
        cards = self.slack.cards()
        return cards[-1] if cards else None

    def _on_post(self, message: FakeMessage, parent: FakeMessage | None) -> None:
        if parent is not None:
            self.say(f"slack thread: {plain_text(message.text)}")
            return
        status = message.field("Status") or "?"
        if message.buttons and self.clicked_by is None and not self._clicks:
            self.say(f"slack card in {CHANNEL}, waiting for a human:\n{render_blocks(message.blocks)}")
            task = asyncio.create_task(self._approve(message))
            self._clicks.add(task)
            return
        if self._shown_status.get(message.ts) != status:
            verb = "posted" if message.updates == 0 else "updated"
            self.say(f"slack card {verb}: {status}")
        self._shown_status[message.ts] = status

    async def _approve(self, message: FakeMessage) -> None:
        await asyncio.sleep(self.pause)
        assert self._http is not None
        assert self.interactions_url is not None
        self.say(f"slack: {DEMO_USER_NAME} ({DEMO_USER_ID}) clicks Approve")
        try:
            status = await self.slack.click(
                self._http,
                self.interactions_url,
                message,
                action_id=APPROVE_ACTION_ID,
                user_id=DEMO_USER_ID,
                user_name=DEMO_USER_NAME,
            )
        except aiohttp.ClientError as exc:
            self.say(f"slack: the click did not reach Remediator: {type(exc).__name__}: {exc}")
            return
        if status == 200:
            self.clicked_by = DEMO_USER_NAME
        self.say(f"slack: Remediator answered the signed click with HTTP {status}")
