"""A small local Slack for the demo and the tests: the Web API methods Remediator calls, the
`response_url` for ephemeral answers, a terminal rendering of Block Kit cards, and a user who clicks.

Implemented (request and answer shapes as documented by Slack; every answer is HTTP 200 with
`ok: true` or `ok: false` and an `error` code, as the real Web API does):
- `auth.test` (https://docs.slack.dev/reference/methods/auth.test)
- `chat.postMessage` with `channel`, `text`, `blocks`, `thread_ts`; answers `channel` (an id, also
  when given a `#name`), `ts`, `message` (https://docs.slack.dev/reference/methods/chat.postMessage)
- `chat.update` with `channel`, `ts`, `text`, `blocks` (https://docs.slack.dev/reference/methods/chat.update)
- `usergroups.users.list` with `usergroup`; answers `users`
  (https://docs.slack.dev/reference/methods/usergroups.users.list)
Every call needs `Authorization: Bearer <token>` (`not_authed` / `invalid_auth` otherwise).

`click` plays Slack's side of an interaction: a `block_actions` payload, form-encoded in a `payload`
field, signed the way Slack signs (`v0=` HMAC-SHA256 of `v0:<timestamp>:<body>` with the signing
secret, https://docs.slack.dev/authentication/verifying-requests-from-slack), posted to the app's
interactivity URL.

Faults for tests: `fail_next(n, status)` answers the next n Web API calls with an HTTP error, and
`fail_until(when)` does so until a clock (the one given, `time.time` by default) passes `when`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import aiohttp
from aiohttp import web

EMOJI = {
    ":large_yellow_circle:": "🟡",
    ":mag:": "🔍",
    ":brain:": "🧠",
    ":raised_hand:": "✋",
    ":hourglass_flowing_sand:": "⏳",
    ":hourglass:": "⌛",
    ":gear:": "⚙",
    ":stethoscope:": "🩺",
    ":white_check_mark:": "✅",
    ":rotating_light:": "🚨",
    ":x:": "❌",
    ":white_circle:": "⚪",
    ":pause_button:": "⏸",
    ":no_entry:": "⛔",
    ":alarm_clock:": "⏰",
    ":arrow_right:": "➡",
    ":large_green_circle:": "🟢",
}


@dataclass
class FakeMessage:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread: list[FakeMessage] = field(default_factory=list)
    updates: int = 0

    def field(self, name: str) -> str | None:
        """A section field's value, by its bold title (`*Status*\n...`), as plain text."""
        for block in self.blocks:
            for item in block.get("fields", []) if block.get("type") == "section" else []:
                title, _, value = str(item.get("text", "")).partition("\n")
                if title.strip("*") == name:
                    return plain_text(value)
        return None

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [
            element
            for block in self.blocks
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if element.get("type") == "button"
        ]


def plain_text(text: str) -> str:
    """Slack mrkdwn as plain terminal text: links as `label (url)`, no markup, entities decoded."""
    text = re.sub(r"<([^|>]+)\|([^>]+)>", r"\2 (\1)", text)
    text = re.sub(r"<([^>]+)>", r"\1", text)
    for code, symbol in EMOJI.items():
        text = text.replace(code, symbol)
    text = text.replace("*", "").replace("`", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_blocks(blocks: list[dict[str, Any]], *, width: int = 88) -> str:
    """A Block Kit card as a framed block of text, for a terminal."""
    lines: list[str] = []

    def text_of(item: dict[str, Any] | None) -> str:
        return plain_text(str((item or {}).get("text", "")))

    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append(text_of(block.get("text")).upper())
        elif kind == "section":
            if block.get("text"):
                lines.extend(text_of(block["text"]).splitlines())
            fields = [text_of(item).replace("\n", ": ", 1) for item in block.get("fields", [])]
            for left, right in itertools.zip_longest(fields[::2], fields[1::2], fillvalue=""):
                lines.append(f"{left:<42}{right}".rstrip())
        elif kind == "context":
            lines.append("  " + " ".join(text_of(element) for element in block.get("elements", [])))
        elif kind == "actions":
            lines.append(
                "   ".join(f"[ {text_of(element.get('text'))} ]" for element in block.get("elements", []))
            )
        elif kind == "divider":
            lines.append("-" * (width - 4))
    inner = width - 4
    wrapped: list[str] = []
    for line in lines:
        while len(line) > inner:
            cut = line.rfind(" ", 0, inner)
            cut = cut if cut > inner // 2 else inner
            wrapped.append(line[:cut])
            line = "  " + line[cut:].lstrip()
        wrapped.append(line)
    border = "+" + "-" * (width - 2) + "+"
    return "\n".join([border, *(f"| {line:<{inner}} |" for line in wrapped), border])


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return f"v0={digest.hexdigest()}"


class FakeSlack:
    def __init__(
        self,
        *,
        token: str,
        signing_secret: str,
        groups: dict[str, list[str]] | None = None,
        on_post: Callable[[FakeMessage, FakeMessage | None], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.signing_secret = signing_secret
        self.groups = groups or {}
        # Called after every post and update: (the message, its parent when it is a thread reply).
        self.on_post = on_post
        self.clock = clock
        self.messages: dict[tuple[str, str], FakeMessage] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ephemeral: list[dict[str, Any]] = []
        self._channels: dict[str, str] = {}
        self._ts = itertools.count(1)
        self._fail_count = 0
        self._fail_status = 500
        self._fail_until: float | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # control

    def fail_next(self, count: int, *, status: int = 500) -> None:
        self._fail_count, self._fail_status = count, status

    def fail_until(self, when: float, *, status: int = 500) -> None:
        self._fail_until, self._fail_status = when, status

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def cards(self) -> list[FakeMessage]:
        """Top-level messages, in the order posted."""
        return sorted(self.messages.values(), key=lambda message: float(message.ts))

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == method]

    # serving

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._web_api)
        app.router.add_post("/respond/{token}", self._response_url)
        return app

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0][1]  # the port the system chose when given 0
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _web_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw:
            if request.content_type == "application/json":
                args.update(json.loads(raw))
            else:
                args.update({key: values[0] for key, values in parse_qs(raw.decode()).items()})
        self.calls.append((method, args))
        if self._fail_count > 0:
            self._fail_count -= 1
            return web.json_response({"ok": False, "error": "fatal_error"}, status=self._fail_status)
        if self._fail_until is not None and self.clock() < self._fail_until:
            return web.json_response({"ok": False, "error": "fatal_error"}, status=self._fail_status)
        header = request.headers.get("Authorization", "")
        if not header:
            return web.json_response({"ok": False, "error": "not_authed"})
        if header != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "usergroups.users.list": self._group_members,
        }.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(handler(args))

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"{self.base_url}/",
            "team": "Local",
            "user": "remediator",
            "team_id": "T0LOCAL",
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
        }

    def _channel_id(self, channel: str) -> str:
        if re.fullmatch(r"[CGD][A-Z0-9]+", channel):
            return channel
        return self._channels.setdefault(channel, f"C{len(self._channels) + 1:08d}")

    @staticmethod
    def _blocks(args: dict[str, Any]) -> list[dict[str, Any]] | None:
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        return blocks if isinstance(blocks, list) else None

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        blocks = self._blocks(args)
        if not args.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        channel = self._channel_id(str(args["channel"]))
        ts = f"{1_700_000_000 + next(self._ts)}.000100"
        message = FakeMessage(channel=channel, ts=ts, text=str(args.get("text") or ""), blocks=blocks or [])
        parent = None
        if args.get("thread_ts"):
            parent = self.messages.get((channel, str(args["thread_ts"])))
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            parent.thread.append(message)
        else:
            self.messages[(channel, ts)] = message
        if self.on_post is not None:
            self.on_post(message, parent)
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": message.text, "ts": ts}}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((str(args.get("channel")), str(args.get("ts"))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        blocks = self._blocks(args)
        if blocks is not None:
            message.blocks = blocks
        if args.get("text"):
            message.text = str(args["text"])
        message.updates += 1
        if self.on_post is not None:
            self.on_post(message, None)
        return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}

    def _group_members(self, args: dict[str, Any]) -> dict[str, Any]:
        group = str(args.get("usergroup") or "")
        if group not in self.groups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.groups[group])}

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.ephemeral.append({"token": request.match_info["token"], **body})
        return web.json_response({"ok": True})

    # Slack's side of a click

    def click_body(
        self, message: FakeMessage, *, action_id: str, user_id: str, user_name: str
    ) -> tuple[bytes, dict[str, Any]]:
        """The form body Slack sends for a click on one of the message's buttons."""
        button = next(button for button in message.buttons if button.get("action_id") == action_id)
        payload = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": "T0LOCAL"},
            "api_app_id": "A0LOCAL",
            "team": {"id": "T0LOCAL", "domain": "local"},
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel},
            "channel": {"id": message.channel, "name": "incidents"},
            "message": {"ts": message.ts, "text": message.text, "blocks": message.blocks},
            "response_url": f"{self.base_url}/respond/{message.ts}",
            "trigger_id": f"{message.ts}.trigger",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": button.get("block_id", ""),
                    "value": button.get("value"),
                    "action_ts": f"{self.clock():.6f}",
                }
            ],
        }
        return urlencode({"payload": json.dumps(payload)}).encode(), payload

    def signed_headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(self.clock()) if timestamp is None else timestamp)
        return {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(self.signing_secret, stamp, body),
        }

    async def click(
        self,
        session: aiohttp.ClientSession,
        url: str,
        message: FakeMessage,
        *,
        action_id: str,
        user_id: str,
        user_name: str,
    ) -> int:
        """Click a button on `message` as `user_id`; the interactivity URL's HTTP status."""
        body, _ = self.click_body(message, action_id=action_id, user_id=user_id, user_name=user_name)
        async with session.post(url, data=body, headers=self.signed_headers(body)) as response:
            await response.read()
            return response.status
