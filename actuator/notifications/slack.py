"""Slack: one card per incident, updated in place as it moves on, each step added to its thread.

Wire formats (Slack Web API, through the official `slack-sdk` AsyncWebClient):
- `chat.postMessage` (channel, text, blocks; `thread_ts` for a reply) answers `ok`, `channel`, `ts`:
  https://docs.slack.dev/reference/methods/chat.postMessage
- `chat.update` (channel, ts, text, blocks) replaces the card's blocks:
  https://docs.slack.dev/reference/methods/chat.update
- Block Kit blocks (header, section with mrkdwn text and fields, context, actions with buttons whose
  `action_id` and `value` come back in the `block_actions` interaction payload):
  https://docs.slack.dev/reference/block-kit/blocks and
  https://docs.slack.dev/reference/block-kit/block-elements/button-element
- `text` is always sent with `blocks`: it is the notification's fallback text.
- Dynamic text is escaped for mrkdwn (`&`, `<`, `>`), since alert annotations and explanations are
  untrusted: https://docs.slack.dev/messaging/formatting-message-text#escaping

The card's `channel` and `ts` are kept on each delivery's result; a later event of the incident
updates that message (`chat.update`) instead of posting a new one. The Approve and Reject buttons are
on the card only while the incident awaits approval.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient

from actuator.notifications.base import Delivered, Notification
from actuator.notifications.config import SlackConfig
from actuator.notifications.exceptions import DeliveryFailed
from incidents import IncidentStatus
from incidents.outbox import APPROVE_ACTION_ID, REJECT_ACTION_ID

log = logging.getLogger(__name__)

SINK_NAME: Final = "slack"

STATUS_LABELS: Final[dict[str, str]] = {
    IncidentStatus.OPEN: ":large_yellow_circle: Open",
    IncidentStatus.ANALYZING: ":mag: Analyzing",
    IncidentStatus.DECIDED: ":brain: Decided",
    IncidentStatus.AWAITING_APPROVAL: ":raised_hand: Waiting for approval",
    IncidentStatus.QUEUED: ":hourglass_flowing_sand: Action queued",
    IncidentStatus.ACTING: ":gear: Acting",
    IncidentStatus.VERIFYING: ":stethoscope: Verifying recovery",
    IncidentStatus.RESOLVED: ":white_check_mark: Resolved",
    IncidentStatus.ESCALATED: ":rotating_light: Escalated: a human must look",
    IncidentStatus.FAILED: ":x: Failed: a human must look",
    IncidentStatus.CLOSED: ":white_circle: Closed",
    IncidentStatus.SUPPRESSED: ":pause_button: Held back by the policy",
}

# Steps added to the card's thread, with their emoji. The others only update the card.
THREADED: Final[dict[str, str]] = {
    "approved": ":white_check_mark:",
    "rejected": ":no_entry:",
    "approval_overdue": ":alarm_clock:",
    "approval_expired": ":hourglass:",
    "action_applied": ":arrow_right:",
    "resolved": ":large_green_circle:",
    "escalated": ":rotating_light:",
    "suppressed": ":pause_button:",
    "failed": ":x:",
    "closed": ":white_circle:",
}

# Slack API errors worth trying again later; the rest (bad token, unknown channel, ...) are refusals.
RETRYABLE_ERRORS: Final = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
MAX_TEXT: Final = 2900  # a section's text may hold 3000 characters


def escape(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) * 100:.1f}%"


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.0f} ms"


def _link(url: str | None, label: str) -> str:
    return f"<{url}|{escape(label)}>" if url else escape(label)


def evidence_lines(evidence: dict[str, Any] | None) -> list[str]:
    """The evidence in a few lines: per revision, error rate and p95 now against before."""
    if not evidence:
        return []
    lines = []
    service = evidence.get("service") or {}
    now, before = service.get("now") or {}, service.get("before") or {}
    rate = now.get("request_rate_rps")
    lines.append(
        f"• service: errors {_percent(now.get('error_rate'))} (before {_percent(before.get('error_rate'))}), "
        f"p95 {_ms(now.get('latency_p95_ms'))} (before {_ms(before.get('latency_p95_ms'))})"
        + (f", {float(rate):.1f} req/s" if rate is not None else "")
    )
    for revision in evidence.get("revisions") or []:
        figures = revision.get("now") or {}
        earlier = revision.get("before") or {}
        traffic = revision.get("traffic_percent")
        if all(
            part.get(key) is None for part in (figures, earlier) for key in ("error_rate", "latency_p95_ms")
        ):
            lines.append(
                f"• `{escape(revision.get('name'))}` ({'?' if traffic is None else traffic}% of traffic): "
                "no figures now or before"
            )
            continue
        lines.append(
            f"• `{escape(revision.get('name'))}` ({'?' if traffic is None else traffic}% of traffic): "
            f"errors {_percent(figures.get('error_rate'))} (before {_percent(earlier.get('error_rate'))}), "
            f"p95 {_ms(figures.get('latency_p95_ms'))} (before {_ms(earlier.get('latency_p95_ms'))})"
        )
    gaps = evidence.get("gaps") or []
    if gaps:
        lines.append(f"• could not read: {escape('; '.join(str(gap) for gap in gaps))}")
    return lines


def decision_text(incident: dict[str, Any]) -> str | None:
    decision = incident.get("decision")
    if not decision:
        return None
    action = decision.get("action")
    target = f" → `{escape(decision['target_revision'])}`" if decision.get("target_revision") else ""
    scale = decision.get("scale") or {}
    if scale:
        target = f" → min {scale.get('min_instances')} / max {scale.get('max_instances')} instances"
    confidence = decision.get("confidence")
    text = f"*Decision*: {escape(action)}{target} by {escape(decision.get('engine'))}" + (
        f", confidence {float(confidence):.2f}" if confidence is not None else ""
    )
    why = decision.get("explanation") or decision.get("root_cause")
    if why:
        text += f"\n{escape(why)}"
    policy = incident.get("policy") or {}
    if policy.get("verdict") and policy.get("verdict") != "pass":
        text += f"\n*Policy*: {escape(policy['verdict'])}" + (
            f": {escape(policy['reason'])}" if policy.get("reason") else ""
        )
    return _cut(text, MAX_TEXT)


def headline(notification: Notification) -> str:
    incident = notification.incident
    fired = ", ".join(notification.alert_names) or (incident.get("evidence") or {}).get("alert") or "alert"
    return f"{notification.service}: {fired} (incident {notification.incident_id})"


def awaiting_buttons(notification: Notification) -> bool:
    """Approve and Reject belong on the card only while the incident waits for a human."""
    return (
        notification.status == IncidentStatus.AWAITING_APPROVAL
        and notification.approval is None
        and notification.event_type not in ("approved", "rejected")
    )


def render_card(notification: Notification, *, buttons: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """The card for the incident as this event left it: (fallback text, blocks)."""
    incident = notification.incident
    status = notification.status
    label = STATUS_LABELS.get(status, status)
    approval = notification.approval
    if approval is not None and status == IncidentStatus.AWAITING_APPROVAL:
        # The answer is in; the status catches up with the next event.
        label = ":white_check_mark: Approved" if approval["outcome"] == "approved" else ":no_entry: Rejected"
    blocks: list[Block] = [HeaderBlock(text=_cut(headline(notification), 150))]
    fields = [
        MarkdownTextObject(text=f"*Status*\n{label}"),
        MarkdownTextObject(text=f"*Severity*\n{escape(incident.get('severity') or 'unknown')}"),
        MarkdownTextObject(text=f"*Service*\n{escape(notification.service)}"),
        MarkdownTextObject(
            text=f"*Incident*\n{_link(notification.incident_url, str(notification.incident_id))}"
        ),
    ]
    blocks.append(SectionBlock(fields=fields))
    summary = incident.get("summary") or (incident.get("evidence") or {}).get("alert_summary")
    fired = escape(", ".join(notification.alert_names) or "an alert")
    blocks.append(
        SectionBlock(
            text=MarkdownTextObject(
                text=_cut(f"*What fired*: {fired}" + (f": {escape(summary)}" if summary else ""), MAX_TEXT)
            )
        )
    )
    evidence = incident.get("evidence") or {}
    lines = evidence_lines(evidence)
    if lines:
        window = evidence.get("window_seconds")
        title = f"*Evidence* (last {window} s against before)" if window else "*Evidence*"
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut("\n".join([title, *lines]), MAX_TEXT))))
    decided = decision_text(incident)
    if decided:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=decided)))
    notes = []
    if approval:
        who = escape(approval.get("by") or approval.get("actor"))
        notes.append(f"{'Approved' if approval['outcome'] == 'approved' else 'Rejected'} by *{who}*")
    if status == IncidentStatus.RESOLVED and incident.get("mttr_seconds") is not None:
        notes.append(f"MTTR {float(incident['mttr_seconds']):.1f} s")
    if status in (IncidentStatus.ESCALATED, IncidentStatus.FAILED, IncidentStatus.CLOSED) and incident.get(
        "status_reason"
    ):
        notes.append(escape(_cut(str(incident["status_reason"]), 500)))
    if notes:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=" · ".join(notes))]))
    if buttons and awaiting_buttons(notification):
        value = str(notification.incident_id)
        blocks.append(
            ActionsBlock(
                block_id=f"approval-{notification.incident_id}",
                elements=[
                    ButtonElement(text="Approve", action_id=APPROVE_ACTION_ID, value=value, style="primary"),
                    ButtonElement(text="Reject", action_id=REJECT_ACTION_ID, value=value, style="danger"),
                ],
            )
        )
    links = [
        _link(notification.incident_url, "Incident API") if notification.incident_url else None,
        _link(notification.dashboard_url, "Grafana dashboard") if notification.dashboard_url else None,
    ]
    shown = [link for link in links if link]
    if shown:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=" · ".join(shown))]))
    text = f"{headline(notification)}: {label.split(' ', 1)[-1]}"
    return text, [block.to_dict() for block in blocks]


def thread_text(notification: Notification) -> str | None:
    emoji = THREADED.get(notification.event_type)
    if emoji is None:
        return None
    step = notification.event_type.replace("_", " ")
    message = notification.message
    if notification.event_type in ("approved", "rejected") and notification.approval:
        who = notification.approval.get("by") or notification.approval.get("actor")
        comment = notification.approval.get("comment")
        message = f"by {who}" + (f": {comment}" if comment else "")
    return _cut(f"{emoji} *{step}*: {escape(message)}", MAX_TEXT)


def _error_code(error: SlackApiError) -> str | None:
    data = error.response.data
    return str(data.get("error")) if isinstance(data, dict) and data.get("error") else None


class SlackSink:
    def __init__(self, config: SlackConfig, client: AsyncWebClient, *, timeout: float = 10.0) -> None:
        self.config = config
        self.client = client
        self.timeout = timeout

    @classmethod
    def create(cls, config: SlackConfig, session: aiohttp.ClientSession, *, timeout: float) -> SlackSink:
        client = AsyncWebClient(
            token=config.token.reveal(),
            base_url=config.api_url,
            session=session,
            timeout=max(1, int(timeout)),
            # The outbox worker owns retries and backoff, and counts every attempt.
            retry_handlers=[],
        )
        return cls(config, client, timeout=timeout)

    @property
    def name(self) -> str:
        return SINK_NAME

    def screen(self, *, event_type: str, severity: str | None, quiet: bool) -> str | None:
        # Quiet events still reach the card (so it never shows a stale state or live buttons); they
        # post nothing new (see deliver).
        return self.config.filter.refuses(event_type, severity)

    async def deliver(self, notification: Notification) -> Delivered:
        card = next((result for result in reversed(notification.earlier) if result.get("ts")), None)
        text, blocks = render_card(notification, buttons=self.config.buttons)
        reply = thread_text(notification)
        try:
            async with asyncio.timeout(self.timeout * 3):
                if card is not None:
                    try:
                        await self.client.chat_update(
                            channel=card["channel"], ts=card["ts"], text=text, blocks=blocks
                        )
                    except SlackApiError as exc:
                        if _error_code(exc) != "message_not_found":
                            raise
                        log.warning(
                            "the incident's card is gone from Slack; posting a new one",
                            extra={"incident_id": notification.incident_id, "ts": card["ts"]},
                        )
                    else:
                        if reply is not None and not notification.quiet:
                            await self.client.chat_postMessage(
                                channel=card["channel"], thread_ts=card["ts"], text=reply
                            )
                        return Delivered(result={"channel": card["channel"], "ts": card["ts"]})
                if notification.quiet:
                    return Delivered(sent=False, note="quiet event and no card to update")
                channel = self.config.channel_for(notification.service)
                posted = await self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
                # A fresh card already says where the incident stands: no thread reply, so a failed
                # reply can never make a retry post a second card.
                return Delivered(
                    result={"channel": str(posted["channel"]), "ts": str(posted["ts"]), "posted": True}
                )
        except SlackApiError as exc:
            status = exc.response.status_code
            error = _error_code(exc)
            retryable = status == 429 or status >= 500 or error in RETRYABLE_ERRORS
            raise DeliveryFailed(
                f"Slack answered HTTP {status}" + (f" {error}" if error else ""),
                sink=self.name,
                retryable=retryable,
                incident_id=notification.incident_id,
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(
                f"Slack unreachable: {type(exc).__name__}: {exc}"[:300],
                sink=self.name,
                retryable=True,
                incident_id=notification.incident_id,
            ) from None
