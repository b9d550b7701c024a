"""Recent error log lines through Cloud Logging's `entries:list` (real Google or the emulator).

Log lines are untrusted text: they are capped in number and length and stripped of control
characters here, and nothing in them is ever interpreted.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from collector.exceptions import SourceFailed
from incidents import LogLine, format_rfc3339

SOURCE = "logs"
GOOGLE_LOGGING_ENDPOINT = "https://logging.googleapis.com"
_FILTER_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str, limit: int) -> str:
    """Control and bidi characters out, newlines flattened, length capped (with a marker)."""
    flat = _CONTROL.sub("", text.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)] + "…"


def quoted(value: str) -> str:
    """`value` as a double-quoted string of the Logging query language, so that nothing in it can end
    the string and add a comparison (a `service` label reaches here from an alert). Inside the quotes
    a backslash escapes the next character, so backslashes and quotes are escaped; control characters
    have no business in a filter value and are refused.
    https://cloud.google.com/logging/docs/view/logging-query-language
    """
    if _FILTER_CONTROL.search(value):
        raise ValueError(f"a filter value cannot hold control characters: {value[:60]!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, kw_only=True)
class LogQuery:
    project: str
    service: str
    since: datetime
    limit: int

    def filter(self) -> str:
        return " AND ".join(
            [
                'resource.type="cloud_run_revision"',
                f"resource.labels.service_name={quoted(self.service)}",
                "severity>=ERROR",
                f"timestamp>={quoted(format_rfc3339(self.since))}",
            ]
        )

    def body(self) -> dict[str, Any]:
        return {
            "resourceNames": [f"projects/{self.project}"],
            "filter": self.filter(),
            "orderBy": "timestamp desc",
            "pageSize": self.limit,
        }


class TokenProvider:
    """Bearer tokens from application default credentials, refreshed in a thread when stale."""

    def __init__(self) -> None:
        self._credentials: Any = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        import google.auth
        import google.auth.transport.requests

        async with self._lock:
            if self._credentials is None:
                self._credentials, _ = await asyncio.to_thread(
                    google.auth.default, scopes=["https://www.googleapis.com/auth/logging.read"]
                )
            if not self._credentials.valid:
                await asyncio.to_thread(self._credentials.refresh, google.auth.transport.requests.Request())
            return str(self._credentials.token)


class LogsSource:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint: str | None,
        project: str,
        max_lines: int,
        max_chars: int,
        lookback: timedelta,
        timeout: float,
        tokens: TokenProvider | None = None,
    ) -> None:
        self.session = session
        self.endpoint = (endpoint or GOOGLE_LOGGING_ENDPOINT).rstrip("/")
        self.project = project
        self.max_lines = max_lines
        self.max_chars = max_chars
        self.lookback = lookback
        self.timeout = timeout
        # Plain-HTTP endpoints are local emulators; only Google's API needs a token.
        self.tokens = (
            tokens
            if tokens is not None
            else (TokenProvider() if self.endpoint.startswith("https://") else None)
        )

    async def read(self, service: str, *, now: datetime) -> list[LogLine]:
        query = LogQuery(
            project=self.project, service=service, since=now - self.lookback, limit=self.max_lines
        )
        try:
            body = query.body()
        except ValueError as exc:
            raise SourceFailed(SOURCE, str(exc), service=service) from None
        headers = {}
        if self.tokens is not None:
            headers["Authorization"] = f"Bearer {await self.tokens.token()}"
        try:
            async with self.session.post(
                f"{self.endpoint}/v2/entries:list",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                if response.status != 200:
                    detail = (await response.text())[:200]
                    raise SourceFailed(SOURCE, f"HTTP {response.status}: {detail}", service=service)
                document = await response.json()
        except aiohttp.ClientError as exc:
            raise SourceFailed(SOURCE, f"{type(exc).__name__}: {exc}"[:200], service=service) from exc
        entries = document.get("entries") or []
        return [self._line(entry) for entry in entries[: self.max_lines]]

    def _line(self, entry: dict[str, Any]) -> LogLine:
        payload = entry.get("jsonPayload")
        if isinstance(payload, dict):
            message = str(payload.get("message") or payload)
        else:
            message = str(entry.get("textPayload") or "")
        labels = (entry.get("resource") or {}).get("labels") or {}
        return LogLine(
            timestamp=entry.get("timestamp"),
            severity=str(entry.get("severity") or "DEFAULT")[:16],
            revision=labels.get("revision_name"),
            message=clean_text(message, self.max_chars),
        )
