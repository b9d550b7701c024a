"""Log lines as the incidents API shows them to readers who do not hold the API token.

The error log lines on an incident's context come straight from the service's logs and can carry
whatever the service printed: request headers, tokens, email addresses, keys. Readers with the read
token (or none configured) see them trimmed and with those patterns replaced; the API token's
holder sees them as recorded. The patterns favour hiding too much over too little: a long hex or
base64 run is hidden even when it is only a trace id.
"""

from __future__ import annotations

import re
from typing import Any

# Characters shown of each log message; the Gemini prompt shows the same amount.
MAX_MESSAGE_CHARS = 200

_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers and bearer/basic credentials, whatever follows the scheme.
    (re.compile(r"(?i)\b(authorization|proxy-authorization)\s*[:=]\s*\S+(?:\s+\S+)?"), r"\1: [redacted]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    # key=value and key: value pairs whose key names a secret.
    (
        re.compile(
            r"(?i)\b([\w-]*(?:token|secret|password|passwd|pwd|api[_-]?key|access[_-]?key|credential|"
            r"session[_-]?id|cookie)[\w-]*)(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"
        ),
        r"\1\2[redacted]",
    ),
    # URLs with credentials: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1[redacted]@"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[email]"),
    # AWS access key ids, and long hex or base64 runs (keys, tokens, JWT parts, signatures).
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[redacted]"),
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), "[hex]"),
    (re.compile(r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*\d)[A-Za-z0-9+/_-]{32,}={0,2}"), "[secret]"),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    return text


def trim(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def redact_context_logs(context: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of an incident's context whose `logs` messages are redacted, then trimmed."""
    if not context or not isinstance(context.get("logs"), list):
        return context
    lines = []
    for line in context["logs"]:
        if isinstance(line, dict) and isinstance(line.get("message"), str):
            line = {**line, "message": trim(redact_text(line["message"]))}
        lines.append(line)
    return {**context, "logs": lines}
