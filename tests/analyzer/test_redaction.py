"""Log lines shown to readers without the API token: secrets replaced, length trimmed."""

from __future__ import annotations

import pytest

from analyzer.exceptions import RateLimited
from analyzer.ratelimit import SlidingWindowLimit
from analyzer.redaction import MAX_MESSAGE_CHARS, redact_context_logs, redact_text


@pytest.mark.parametrize(
    ("line", "hidden", "kept"),
    [
        ("GET /x 401 Authorization: Bearer abc.def.ghi", "abc.def.ghi", "GET /x 401"),
        ("retrying with bearer eyJhbGciOiJIUzI1NiJ9 now", "eyJhbGciOiJIUzI1NiJ9", "retrying with"),
        ("login failed password=hunter2 user=bob", "hunter2", "user=bob"),
        ('config {"api_key": "AIzaSyD-1234567890abcdefghij"}', "AIzaSyD", "config"),
        ("X-Auth-Token: 8c1e0f", "8c1e0f", "X-Auth-Token"),
        ("mail to alice.smith+ops@example.co.uk bounced", "alice.smith", "bounced"),
        ("connect postgresql://app:s3cret@db:5432/shop refused", "s3cret", "db:5432/shop refused"),
        ("digest 3f786850e387550fdab836ed7e6dc881de23001b mismatch", "3f786850e3875", "mismatch"),
        ("sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo== bad", "Zm9vYmFy", "bad"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "used"),
    ],
)
def test_secrets_are_replaced(line: str, hidden: str, kept: str) -> None:
    redacted = redact_text(line)
    assert hidden not in redacted
    assert kept in redacted


@pytest.mark.parametrize(
    "line",
    [
        "upstream demo-app-a-00002-bad returned 503 after 1200 ms on /api/v1/incidents/42",
        "GET /api/checkout 500 (payment-gateway timeout after 3000 ms)",
        "revision demo-app-a-00002-vnp is not ready: container failed to start",
    ],
)
def test_ordinary_lines_stay_readable(line: str) -> None:
    assert redact_text(line) == line


def test_context_logs_are_redacted_and_trimmed_in_a_copy() -> None:
    context = {
        "service": {"name": "demo-app-a"},
        "logs": [{"message": "token=abc " + "y" * 500, "severity": "ERROR"}, "not a line"],
    }
    shown = redact_context_logs(context)
    assert shown is not None
    assert shown["logs"][0]["message"].startswith("token=[redacted] y")
    assert len(shown["logs"][0]["message"]) == MAX_MESSAGE_CHARS
    assert shown["logs"][1] == "not a line"
    assert context["logs"][0]["message"].startswith("token=abc")  # the original is not modified
    assert redact_context_logs(None) is None
    assert redact_context_logs({"logs": None}) == {"logs": None}


def test_the_sliding_window_admits_the_limit_then_says_when_to_retry() -> None:
    now = [100.0]
    limit = SlidingWindowLimit(limit=2, window=60, clock=lambda: now[0])
    limit.admit("explaining")
    now[0] = 130.0
    limit.admit("explaining")
    with pytest.raises(RateLimited) as refused:
        limit.admit("explaining")
    assert refused.value.retry_after == 30
    now[0] = 160.0  # the first admission left the window
    limit.admit("explaining")
    with pytest.raises(RateLimited) as again:
        limit.admit("explaining")
    assert again.value.retry_after == 30
