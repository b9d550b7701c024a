"""`POST /api/v1/slack/interactions`: an Approve or Reject click on an incident's Slack card.

What Slack sends (https://docs.slack.dev/interactivity/handling-user-interaction): an
`application/x-www-form-urlencoded` body whose `payload` field is JSON; for a button it is a
`block_actions` payload (https://docs.slack.dev/reference/interaction-payloads/block_actions-payload)
with `user` (`id`, `username`, `name`), `actions[]` (`action_id`, `value`) and a `response_url`.

Order of checks, each refusing with nothing changed:
1. the signature (`X-Slack-Signature`, HMAC-SHA256 of `v0:<timestamp>:<body>` with the signing secret)
   and its timestamp (`X-Slack-Request-Timestamp`, at most 5 minutes old), verified with
   `slack_sdk.signature.SignatureVerifier` (constant-time compare): 401
   (https://docs.slack.dev/authentication/verifying-requests-from-slack);
2. the payload: form field, JSON, a known button, an incident id: 400;
3. the clicking user: on the allow-list (user ids, or members of allowed user groups): 403.

Then the click goes to the same functions as the HTTP API (`analyzer.approvals`), with the actor
`slack:<user id>` and the user's name, and the same checks: an approval that expired, that no longer
fits Cloud Run as it is now, or that cannot be checked against it, is refused with the reason. A
click on an incident that is no longer waiting (a second click, or a colleague was faster) changes
nothing and says who decided. Every refusal is answered 200 with an ephemeral message; ephemeral
messages go through the payload's `response_url` with
`response_type: ephemeral` and `replace_original: false`
(https://docs.slack.dev/messaging/modifying-messages). The card itself is updated by the notifier,
from the outbox event the decision wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from analyzer import approvals, keys
from analyzer.exceptions import (
    ApprovalRefused,
    CloudRunUnavailable,
    Conflict,
    FeatureDisabled,
    Forbidden,
    PayloadInvalid,
    Unauthorized,
)
from incidents.db import Store
from incidents.models import utcnow
from incidents.outbox import APPROVE_ACTION_ID, REJECT_ACTION_ID, OutboxRepository
from incidents.repository import IncidentRepository
from incidents.runtime import Secret

log = logging.getLogger(__name__)

SLACK_API_URL: Final = "https://slack.com/api/"
MAX_AGE_SECONDS: Final = 300
TIMESTAMP_HEADER: Final = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER: Final = "X-Slack-Signature"
DECISIONS: Final = {APPROVE_ACTION_ID: "approve", REJECT_ACTION_ID: "reject"}
SLACK_USER_ID: Final = re.compile(r"[A-Z0-9]{2,32}")

routes = web.RouteTableDef()


@dataclass(frozen=True, kw_only=True)
class SlackInteractionsConfig:
    signing_secret: Secret
    # Who may approve or reject: Slack user ids, and user-group ids whose members may (resolved with
    # `usergroups.users.list`, which needs `bot_token`). Both None: anyone who can click the card.
    approvers: frozenset[str] | None = None
    approver_groups: frozenset[str] | None = None
    bot_token: Secret | None = None
    api_url: str = SLACK_API_URL
    # How long a user group's members are remembered.
    group_ttl_seconds: float = 60.0


@dataclass(frozen=True, kw_only=True)
class Click:
    decision: str  # approve | reject
    incident_id: int
    user_id: str
    user_name: str
    response_url: str | None


@dataclass
class SlackInteractions:
    """What the endpoint needs while the app runs: the verifier, an HTTP session, cached group members
    and the ephemeral answers still being sent."""

    config: SlackInteractionsConfig
    session: aiohttp.ClientSession
    clock: Clock = field(default_factory=Clock)
    groups: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    answers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def verifier(self) -> SignatureVerifier:
        return SignatureVerifier(self.config.signing_secret.reveal(), clock=self.clock)

    def verify(self, body: bytes, headers: Any) -> None:
        """401 unless the request carries a fresh timestamp and a valid signature for the body."""
        timestamp = headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise Unauthorized(f"Slack requests need {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
        if not timestamp.isdigit():
            raise Unauthorized(f"{TIMESTAMP_HEADER} must be Unix seconds")
        age = self.clock.now() - int(timestamp)
        if abs(age) > MAX_AGE_SECONDS:
            raise Unauthorized(f"stale Slack request: signed {age:.0f}s ago, more than {MAX_AGE_SECONDS}s")
        if not self.verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            raise Unauthorized("Slack signature does not match")

    async def members(self, group: str) -> frozenset[str]:
        cached = self.groups.get(group)
        if cached is not None and time.monotonic() - cached[0] < self.config.group_ttl_seconds:
            return cached[1]
        token = self.config.bot_token
        if token is None:
            raise Forbidden(f"user group {group} cannot be resolved: set SLACK_BOT_TOKEN")
        client = AsyncWebClient(
            token=token.reveal(),
            base_url=self.config.api_url,
            session=self.session,
            timeout=3,
            retry_handlers=[],
        )
        try:
            response = await client.usergroups_users_list(usergroup=group)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not read a Slack user group", extra={"group": group, "error": str(exc)[:300]})
            raise Forbidden(f"members of user group {group} could not be read from Slack") from None
        users = frozenset(str(user) for user in response.get("users") or [])
        self.groups[group] = (time.monotonic(), users)
        return users

    async def authorize(self, user_id: str) -> None:
        approvers, groups = self.config.approvers, self.config.approver_groups
        if approvers is None and groups is None:
            return
        if approvers is not None and user_id in approvers:
            return
        for group in sorted(groups or ()):
            if user_id in await self.members(group):
                return
        raise Forbidden(f"Slack user {user_id} may not approve or reject incidents")

    def answer(self, response_url: str | None, text: str) -> None:
        """An ephemeral message to the clicking user, sent after the acknowledgement."""
        if not response_url or not response_url.startswith(("https://", "http://")):
            return
        task = asyncio.create_task(self._send(response_url, text))
        self.answers.add(task)
        task.add_done_callback(self.answers.discard)

    async def _send(self, response_url: str, text: str) -> None:
        client = AsyncWebhookClient(response_url, session=self.session, timeout=5, retry_handlers=[])
        try:
            response = await client.send(text=text, response_type="ephemeral", replace_original=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "ephemeral Slack answer failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]}
            )
            return
        if response.status_code >= 300:
            log.warning("ephemeral Slack answer refused", extra={"status": response.status_code})

    async def close(self) -> None:
        if self.answers:
            _, pending = await asyncio.wait(self.answers, timeout=5)
            for task in pending:
                task.cancel()


def parse_click(body: bytes) -> Click:
    """The button click in a form-encoded `block_actions` payload; 400 naming what is wrong."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise PayloadInvalid("body must be a form with a payload field", field="payload") from None
    raw = form.get("payload")
    if not raw or len(raw) != 1:
        raise PayloadInvalid("body must have exactly one payload field", field="payload")
    try:
        payload = json.loads(raw[0])
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(f"payload is not JSON: {exc.msg}", field="payload") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise PayloadInvalid("payload must be a block_actions interaction", field="payload.type")
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise PayloadInvalid("payload.user.id is missing", field="payload.user")
    if not SLACK_USER_ID.fullmatch(user["id"]):
        raise PayloadInvalid("payload.user.id is not a Slack user id", field="payload.user")
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise PayloadInvalid("payload.actions must hold the one clicked button", field="payload.actions")
    action = actions[0]
    decision = DECISIONS.get(str(action.get("action_id")))
    if decision is None:
        known = ", ".join(sorted(DECISIONS))
        raise PayloadInvalid(f"unknown action_id; one of {known}", field="payload.actions.action_id")
    value = action.get("value")
    if not isinstance(value, str) or not value.isdigit() or int(value) < 1:
        raise PayloadInvalid("the button's value must be an incident id", field="payload.actions.value")
    name = user.get("name") or user.get("username") or user["id"]
    response_url = payload.get("response_url")
    return Click(
        decision=decision,
        incident_id=int(value),
        user_id=user["id"],
        user_name=str(name)[:80],
        response_url=response_url if isinstance(response_url, str) else None,
    )


async def _already_decided(store: Store, incident_id: int) -> str:
    """What to tell a user whose click came too late: who decided, or where the incident stands."""
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
        decided = await OutboxRepository(session).approval_decision(incident_id, until=utcnow())
    if decided is not None:
        who = decided.get("by") or decided.get("actor")
        return (
            f"Incident {incident_id} was already {decided['outcome']} by {who}; "
            f"it is {incident.status} now. Nothing changed."
        )
    why = f" ({incident.status_reason})" if incident.status_reason else ""
    return f"Incident {incident_id} is {incident.status}{why}, not waiting for approval. Nothing changed."


@routes.post("/api/v1/slack/interactions")
async def slack_interactions(request: web.Request) -> web.Response:
    slack = request.app.get(keys.SLACK)
    if slack is None:
        raise FeatureDisabled("Slack interactions are disabled: set SLACK_SIGNING_SECRET to enable them")
    body = await request.read()
    slack.verify(body, request.headers)
    click = parse_click(body)
    await slack.authorize(click.user_id)
    store = request.app[keys.STORE]
    extra = {"incident_id": click.incident_id, "slack_user": click.user_id, "decision": click.decision}
    try:
        # The same checks as the HTTP API: an expired or stale approval is refused, and so is one
        # that cannot be checked against Cloud Run.
        await approvals.answer(
            store,
            click.incident_id,
            approved=click.decision == "approve",
            by=click.user_name,
            comment=None,
            now=utcnow(),
            rules=request.app[keys.APPROVALS],
            metrics=request.app[keys.METRICS],
            wake=request.app[keys.PROCESSOR].notify,
            actor=f"slack:{click.user_id}",
        )
    except (ApprovalRefused, CloudRunUnavailable) as exc:
        log.info("Slack approval refused; nothing changed: %s", exc.message, extra=extra)
        slack.answer(click.response_url, f"Incident {click.incident_id}: {exc.message}.")
        return web.Response(status=200)
    except Conflict:
        log.info("Slack click on an incident no longer waiting; nothing changed", extra=extra)
        slack.answer(click.response_url, await _already_decided(store, click.incident_id))
        return web.Response(status=200)
    log.info("Slack click decided an incident", extra=extra)
    verb = "approved" if click.decision == "approve" else "rejected"
    slack.answer(click.response_url, f"You {verb} incident {click.incident_id}.")
    return web.Response(status=200)


def slack_context(config: SlackInteractionsConfig) -> Any:
    """A cleanup_ctx owning the endpoint's HTTP session and its ephemeral answers."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            interactions = SlackInteractions(config=config, session=session)
            app[keys.SLACK] = interactions
            try:
                yield
            finally:
                await interactions.close()

    return run
