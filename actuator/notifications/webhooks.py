"""Signed event webhooks: every announced incident change as a CloudEvents 1.0 JSON event.

Structured content mode: the whole event is the JSON body, sent with
`Content-Type: application/cloudevents+json; charset=utf-8` (CloudEvents HTTP protocol binding,
section 3.2, https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md;
JSON format, https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md).
Attributes: `specversion` "1.0", `id` (the outbox event id: a redelivery has the same id, so a consumer
can drop duplicates), `source`, `type` (`dev.remediator.incident.<event type>`), `subject` (the
service), `time`, `datacontenttype` "application/json", and `data`: `{"incident": ..., "event": ...}`.

Signature: two headers on every request,

    X-Remediator-Timestamp: 1767225600                 (Unix seconds when it was signed)
    X-Remediator-Signature: v1=<hex HMAC-SHA256>      (key: the sink's secret; message:
                                                        timestamp + "." + the raw body bytes)

A receiver recomputes the HMAC over the timestamp header, a dot and the body exactly as received,
compares in constant time, and refuses timestamps older than a few minutes (replays). See
`signature_for` and `verify_signature`, which the tests use as a receiver would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import aiohttp

from actuator.notifications.base import Delivered, Notification
from actuator.notifications.config import WebhookConfig
from actuator.notifications.exceptions import DeliveryFailed
from incidents import format_rfc3339
from incidents.outbox import CLOUDEVENT_TYPE_PREFIX

CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
TIMESTAMP_HEADER: Final = "X-Remediator-Timestamp"
SIGNATURE_HEADER: Final = "X-Remediator-Signature"
SIGNATURE_VERSION: Final = "v1"
# Worth another try later: timeouts, throttling, the receiver's own failures.
RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})


def cloudevent(notification: Notification, *, source: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(notification.event_id),
        "source": source,
        "type": f"{CLOUDEVENT_TYPE_PREFIX}{notification.event_type}",
        "subject": notification.service,
        "time": format_rfc3339(notification.occurred_at),
        "datacontenttype": "application/json",
        "data": {
            "incident": notification.summary(),
            "event": {
                "type": notification.event_type,
                "actor": notification.actor,
                "message": notification.message,
                "detail": notification.detail,
                "quiet": notification.quiet,
            },
        },
    }


def signature_for(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    max_age_seconds: float = 300,
) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature, compared in constant time."""
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > max_age_seconds:
        return False
    return hmac.compare_digest(signature_for(secret, timestamp, body), signature)


class WebhookSink:
    def __init__(
        self,
        config: WebhookConfig,
        session: aiohttp.ClientSession,
        *,
        source: str,
        announce_quiet: bool = False,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.session = session
        self.source = source
        self.announce_quiet = announce_quiet
        self.timeout = timeout
        self.clock = clock

    @property
    def name(self) -> str:
        return f"webhook:{self.config.name}"

    def screen(self, *, event_type: str, severity: str | None, quiet: bool) -> str | None:
        if quiet and not self.announce_quiet:
            return "quiet: closed without anyone asked or anything done"
        return self.config.filter.refuses(event_type, severity)

    async def deliver(self, notification: Notification) -> Delivered:
        body = json.dumps(cloudevent(notification, source=self.source), separators=(",", ":")).encode()
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": CONTENT_TYPE,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature_for(self.config.secret.reveal(), timestamp, body),
        }
        try:
            async with self.session.post(
                self.config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                detail = (await response.text())[:200]
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(
                f"{self.name} unreachable: {type(exc).__name__}: {exc}"[:300],
                sink=self.name,
                retryable=True,
                incident_id=notification.incident_id,
            ) from None
        if 200 <= status < 300:
            return Delivered(result={"status": status})
        raise DeliveryFailed(
            f"{self.name} answered HTTP {status}: {detail}".rstrip(": "),
            sink=self.name,
            retryable=status >= 500 or status in RETRYABLE_STATUSES,
            incident_id=notification.incident_id,
        )
