"""Does the fault still hold at decision time? Checked on a fresh, short window right before an
automatic ROLLBACK or SCALE_UP is queued.

The alert windows (30 s) and the context's window (60 s) still hold errors that have stopped: a new,
healthy revision that answers 503 for its first seconds (a cold start) looks like a bad deploy for
as long as its blip stays in those windows. So before changing anything:

    rollback  the failing revision alone, over `confirm_window`: still over a threshold -> holds
    scale-up  the serving revisions together, over `confirm_window`
    holds     the action goes ahead
    stopped   every figure known and within the thresholds: nothing is changed, the incident closes
              as recovered before any action, with the figures on its timeline
    unknown   the figures could not be read, or too few requests to judge: a human decides (missing
              evidence never means more action)

A revision younger than `startup_grace` is checked once it is that old. When it alerted during that
time its traffic may have begun well after its creation (readiness, the traffic move), and its blip
with it, but no later than the condition the alert fired on: the check then also waits until
`startup_grace` after the fault's estimated onset (the first moment the alert's condition held on a
short window), or, when the onset is unknown, two windows after the alert began. A blip at start-up
has to be over by then to count as one; a bad deploy fails just the same afterwards and is acted on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from analyzer.config import ConfirmationConfig
from analyzer.evidence import Evidence, EvidenceConfig, Health, ms, pct
from collector import SourceResult
from incidents import ActionType, Decision, Figures, IncidentContext, Revision, utcnow


class FaultState(StrEnum):
    HOLDS = "holds"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class FaultConfirmation:
    state: FaultState
    reason: str
    figures: Figures | None = None
    # Seconds spent waiting for a young revision to pass its start-up grace, and until when.
    waited_seconds: float = 0.0
    waited_until: datetime | None = None

    def as_data(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "figures": self.figures.model_dump() if self.figures is not None else None,
            "waited_seconds": round(self.waited_seconds, 1),
            "waited_until": self.waited_until.isoformat() if self.waited_until is not None else None,
        }


class FreshFigures(Protocol):
    """What the check reads: the collector's `fresh_figures`."""

    async def fresh_figures(
        self, service: str, revisions: list[str], *, window_seconds: int, now: datetime
    ) -> SourceResult[Figures]: ...


async def confirm_fault(
    context: IncidentContext,
    decision: Decision,
    source: FreshFigures,
    *,
    config: ConfirmationConfig,
    evidence: EvidenceConfig,
    onset: datetime | None = None,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> FaultConfirmation:
    """Whether the fault the decision acts on still holds now; see the module docstring. `onset` is
    the fault's estimated onset (collector's `estimate_onset`), when known."""
    reading = Evidence(context, evidence)
    revisions = _revisions_to_check(reading, decision)
    if not revisions:
        return FaultConfirmation(state=FaultState.UNKNOWN, reason="no serving revision to check")
    waited = 0.0
    waited_until: datetime | None = None
    newest = revisions[0]
    if decision.action is ActionType.ROLLBACK and newest.created_at is not None:
        ready_at = newest.created_at + config.startup_grace
        alerted = context.alert.starts_at
        if alerted - newest.created_at < config.startup_grace:
            # It alerted during its start-up: a revision takes traffic some time after its creation
            # (readiness, a first scrape), and a blip starts with that traffic, no later than the
            # condition the alert fired on. The estimated onset is when that condition first held,
            # so a blip of up to `startup_grace - confirm_window` is over `startup_grace` after it.
            # Without an onset, the alert's start bounds it less tightly: a window after it.
            began = alerted + 2 * config.confirm_window
            if onset is not None and onset <= alerted:
                began = min(began, onset + config.startup_grace)
            ready_at = max(ready_at, began)
        wait = (ready_at - clock()).total_seconds()
        if wait > 0:
            await sleep(wait)
            waited, waited_until = wait, ready_at
    window = max(1, int(config.confirm_window.total_seconds()))
    names = [r.name for r in revisions]
    result = await source.fresh_figures(context.service.name, names, window_seconds=window, now=clock())
    if result.value is None:
        return FaultConfirmation(
            state=FaultState.UNKNOWN,
            reason=f"{', '.join(names)} over the last {window}s could not be read ({result.gap})",
            waited_seconds=waited,
            waited_until=waited_until,
        )
    figures = result.value
    judged = reading.health(figures, window)
    described = (
        f"{', '.join(names)} over the last {window}s: "
        f"{figures.request_rate_rps or 0:.1f}/s, errors {pct(figures.error_rate)}, "
        f"p95 {ms(figures.latency_p95_ms)}"
    )
    if judged.state is Health.FAILING:
        return FaultConfirmation(
            state=FaultState.HOLDS,
            reason=f"{described}: still failing",
            figures=figures,
            waited_seconds=waited,
            waited_until=waited_until,
        )
    if judged.state is Health.HEALTHY:
        return FaultConfirmation(
            state=FaultState.STOPPED,
            reason=f"{described}: within the thresholds, the fault has stopped",
            figures=figures,
            waited_seconds=waited,
            waited_until=waited_until,
        )
    return FaultConfirmation(
        state=FaultState.UNKNOWN,
        reason=f"{described}: {judged.describe()}",
        figures=figures,
        waited_seconds=waited,
        waited_until=waited_until,
    )


def _revisions_to_check(reading: Evidence, decision: Decision) -> list[Revision]:
    if decision.action is ActionType.ROLLBACK:
        failing = reading.newest_serving()
        return [failing] if failing is not None else []
    return reading.serving()
