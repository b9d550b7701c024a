"""What the load generator observed: per revision (from `X-Revision`) and in total.

Each group counts responses, 5xx (`errors`), 429s (`status_429`), responses by status class, and
keeps latencies for p50/p95/p99 (a uniform reservoir sample once there are more than
LATENCY_SAMPLE_LIMIT, so memory stays flat on a long run). Requests that got no answer at all
(timeout, refused connection) are `failures`; they have no revision.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_SAMPLE_LIMIT = 100_000
UNKNOWN_REVISION = "unknown"
PERCENTILES = (50, 95, 99)


def percentile(sorted_values: list[float], percent: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(percent / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class ResponseTally:
    """Responses of one group (a revision, or all of them)."""

    requests: int = 0
    errors: int = 0
    status_429: int = 0
    status_classes: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    latencies_seen: int = 0

    def add(self, status: int, latency_s: float, rng: random.Random) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if status == 429:
            self.status_429 += 1
        self.status_classes[f"{status // 100}xx"] += 1
        self.latencies_seen += 1
        if len(self.latencies_s) < LATENCY_SAMPLE_LIMIT:
            self.latencies_s.append(latency_s)
        else:
            slot = rng.randrange(self.latencies_seen)
            if slot < LATENCY_SAMPLE_LIMIT:
                self.latencies_s[slot] = latency_s

    def as_json(self, elapsed_s: float) -> dict[str, object]:
        ordered = sorted(self.latencies_s)
        summary: dict[str, object] = {
            "requests": self.requests,
            "errors": self.errors,
            "status_429": self.status_429,
            "error_ratio": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "status_classes": dict(sorted(self.status_classes.items())),
            "rate": round(self.requests / elapsed_s, 3) if elapsed_s > 0 else 0.0,
        }
        for percent in PERCENTILES:
            value = percentile(ordered, percent)
            summary[f"p{percent}_ms"] = None if value is None else round(value * 1000.0, 2)
        return summary


class LoadStats:
    """Tallies since start or the last reset."""

    def __init__(self, *, clock: Callable[[], float], rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        self.reset()

    def reset(self) -> None:
        self.since = self._clock()
        self.sent = 0
        self.dropped = 0
        self.total = ResponseTally()
        self.revisions: dict[str, ResponseTally] = {}
        self.failures: Counter[str] = Counter()

    def record_sent(self) -> None:
        self.sent += 1

    def record_dropped(self) -> None:
        self.dropped += 1

    def record_response(self, revision: str | None, status: int, latency_s: float) -> None:
        revision = revision or UNKNOWN_REVISION
        tally = self.revisions.get(revision)
        if tally is None:
            tally = self.revisions[revision] = ResponseTally()
        tally.add(status, latency_s, self._rng)
        self.total.add(status, latency_s, self._rng)

    def record_failure(self, kind: str) -> None:
        self.failures[kind] += 1

    def as_json(self) -> dict[str, object]:
        elapsed = self._clock() - self.since
        return {
            "elapsed_s": round(elapsed, 3),
            "sent": self.sent,
            "dropped": self.dropped,
            "failures": dict(sorted(self.failures.items())),
            "totals": self.total.as_json(elapsed),
            "revisions": {name: tally.as_json(elapsed) for name, tally in sorted(self.revisions.items())},
        }
