"""The lifecycle watcher: incidents that wait on the world are analysed again when it changes.

Every `watch_interval` seconds it reads, with one Cloud Run GetService call per service, the traffic
of every service that has

    an escalated, suppressed or waiting incident     what did the last analysis (or action) see?
    a resolved incident whose alert still fires      what did the verified recovery leave serving?

and compares it with what the incident's last word was about. A change that holds for
`change_settle` (so the revision that took the traffic has figures of its own to be judged by):

    a revision that did not serve now does           new_revision: a new fault
    the split between serving revisions moved        traffic_moved

sends a waiting incident back to analysis (`request_reanalysis`), or opens a recurrence of a resolved
one (`open_following`): the alert that never stopped firing is now about something else. It also
closes escalated incidents whose alerts have all resolved for the grace.

The baseline is read from the store (the context the last round stored, or the traffic an applied
action left), so a restart forgets nothing but how long a change has already held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from analyzer.metrics import AnalyzerMetrics
from collector import SourceFailed
from incidents import Action, ActionRepository, Incident, IncidentRepository, IncidentStatus, Store, utcnow
from incidents.lifecycle import (
    LifecycleConfig,
    Relation,
    Trigger,
    close_quiet_escalations,
    open_following,
    request_reanalysis,
)
from incidents.states import REANALYSABLE_STATUSES

log = logging.getLogger("analyzer.processing")

ACTOR = "watcher"
# Cloud Run reads at once: the Admin API's read quota is per minute and per project, and one call
# per watched service every few seconds stays far inside it.
MAX_CONCURRENT_READS = 8


@runtime_checkable
class TrafficSource(Protocol):
    """Where the watcher reads a service's traffic (the collector's ContextBuilder)."""

    async def traffic(self, service: str) -> dict[str, int]: ...


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """The traffic an incident's last word was about: percent per serving revision, or only which
    revisions served (`exact` False) when the record does not say how much each took."""

    shares: dict[str, int]
    exact: bool
    source: str


@dataclass(frozen=True, kw_only=True)
class Change:
    trigger: Trigger
    reason: str
    before: dict[str, int]
    now: dict[str, int]

    @property
    def key(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.now.items()))


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _after_action(action: Action) -> Baseline | None:
    """What an applied action left serving: its traffic targets when they name every revision, else
    the revisions its verification judged."""
    result = action.result or {}
    spec = result.get("traffic")
    if (
        isinstance(spec, list)
        and spec
        and all(t.get("type") == "REVISION" and t.get("revision") for t in spec)
    ):
        shares = {t["revision"]: int(t.get("percent") or 0) for t in spec if t.get("percent")}
        return Baseline(shares=shares, exact=True, source=f"action {action.id}")
    revisions = (result.get("verification") or {}).get("revisions")
    if isinstance(revisions, list) and revisions and "traffic" in result:
        return Baseline(shares=dict.fromkeys(revisions, 0), exact=False, source=f"action {action.id}")
    return None


def baseline_of(incident: Incident, actions: Sequence[Action]) -> Baseline | None:
    """The traffic the incident's latest analysis or applied action was about; None when unknown
    (no context with revisions, e.g. Cloud Run was unreadable then: no change can be told)."""
    context = incident.context or {}
    seen_at = _time(context.get("observed_at"))
    applied = [action for action in actions if action.applied_at is not None]
    latest = max(applied, key=lambda action: action.applied_at or datetime.min) if applied else None
    if (
        latest is not None
        and latest.applied_at is not None
        and (seen_at is None or latest.applied_at >= seen_at)
    ):
        after = _after_action(latest)
        if after is not None:
            return after
    revisions = context.get("revisions") or []
    shares = {r["name"]: int(r.get("traffic_percent") or 0) for r in revisions if r.get("traffic_percent")}
    if not shares:
        return None
    return Baseline(shares=shares, exact=True, source="analysis")


def _split(shares: dict[str, int]) -> str:
    return ", ".join(f"{name} {percent}%" for name, percent in sorted(shares.items())) or "nothing"


def change_between(baseline: Baseline, now: dict[str, int]) -> Change | None:
    """How the traffic `now` differs from the baseline, if it does."""
    before = baseline.shares
    new = sorted(set(now) - set(before))
    if new:
        takes = ", ".join(f"{name} ({now[name]}%)" for name in new)
        return Change(
            trigger=Trigger.NEW_REVISION,
            reason=f"{takes} took traffic (was: {_split(before)})",
            before=before,
            now=now,
        )
    moved = set(now) != set(before) or (baseline.exact and now != before)
    if moved:
        return Change(
            trigger=Trigger.TRAFFIC_MOVED,
            reason=f"traffic moved from {_split(before)} to {_split(now)}",
            before=before,
            now=now,
        )
    return None


class LifecycleWatcher:
    def __init__(
        self,
        *,
        store: Store,
        traffic: TrafficSource | None,
        config: LifecycleConfig,
        metrics: AnalyzerMetrics,
        notify: Callable[[list[int]], None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.traffic = traffic
        self.config = config
        self.metrics = metrics
        self.notify = notify
        self._clock = clock
        # incident id -> (the change seen, when it was first seen): a change must hold to count.
        self._seen: dict[int, tuple[tuple[tuple[str, int], ...], datetime]] = {}

    async def tick(self) -> list[int]:
        """One look at the world; returns the incidents sent to analysis (re-analysed or recurred)."""
        now = self._clock()
        async with self.store.session() as session:
            closed = await close_quiet_escalations(
                IncidentRepository(session), now=now, grace=self.config.escalated_close_grace
            )
        for incident_id in closed:
            log.info(
                "escalated incident closed: its alerts stayed resolved", extra={"incident_id": incident_id}
            )
        if self.traffic is None:
            return []
        async with self.store.session() as session:
            watched = await IncidentRepository(session).list_watched(
                statuses=[status.value for status in REANALYSABLE_STATUSES],
                resolved_since=now - self.config.watch_resolved_for,
            )
            actions = ActionRepository(session)
            baselines = {
                incident.id: (incident, baseline_of(incident, await actions.list_for_incident(incident.id)))
                for incident in watched
            }
        for incident_id in set(self._seen) - set(baselines):
            del self._seen[incident_id]
        services = sorted({incident.service for incident, baseline in baselines.values() if baseline})
        traffic = await self._read(services)
        started = []
        for incident_id, (incident, baseline) in baselines.items():
            current = traffic.get(incident.service)
            change = change_between(baseline, current) if baseline is not None and current else None
            if change is None:
                self._seen.pop(incident_id, None)
                continue
            key, first = self._seen.get(incident_id, (None, now))
            if key != change.key:
                self._seen[incident_id] = (change.key, now)
                first = now
            if now - first < self.config.change_settle:
                continue
            del self._seen[incident_id]
            analysed = await self._act(incident_id, change, now=now)
            if analysed is not None:
                started.append(analysed)
        if started:
            self.notify(started)
        return started

    async def _read(self, services: list[str]) -> dict[str, dict[str, int]]:
        assert self.traffic is not None
        source = self.traffic
        limit = asyncio.Semaphore(MAX_CONCURRENT_READS)

        async def read(service: str) -> tuple[str, dict[str, int] | None]:
            async with limit:
                try:
                    return service, await source.traffic(service)
                except SourceFailed as exc:
                    log.warning("cannot read the traffic of %s: %s", service, exc.message)
                    return service, None

        results = await asyncio.gather(*(read(service) for service in services))
        return {service: shares for service, shares in results if shares}

    async def _act(self, incident_id: int, change: Change, *, now: datetime) -> int | None:
        data = {"traffic_before": change.before, "traffic_now": change.now}
        async with self.store.session() as session:
            incidents = IncidentRepository(session)
            incident = await incidents.get(incident_id, for_update=True)
            status = IncidentStatus(incident.status)
            if status in REANALYSABLE_STATUSES:
                if not await request_reanalysis(
                    session,
                    incident_id,
                    change.reason,
                    trigger=change.trigger,
                    actor=ACTOR,
                    now=now,
                    data=data,
                ):
                    return None
                self.metrics.reanalyses.labels(change.trigger.value).inc()
                log.info(
                    "incident sent back to analysis: %s",
                    change.reason,
                    extra={"incident_id": incident_id, "trigger": change.trigger.value},
                )
                return incident_id
            if status is not IncidentStatus.RESOLVED or await incidents.list_following(incident_id):
                return None
            firing = list(await incidents.list_firing_alerts(incident_id))
            if not firing:
                return None
            reason = f"{change.reason} while {firing[0].alertname} still fires after the verified recovery"
            recurred, opened = await open_following(
                incidents, incident, firing, relation=Relation.RECURRED, reason=reason, now=now, actor=ACTOR
            )
        if not opened:
            return None
        self.metrics.recurrences.inc()
        self.metrics.incidents_opened.inc()
        log.info(
            "incident recurred after resolution: %s",
            reason,
            extra={"incident_id": recurred.id, "previous_incident_id": incident_id},
        )
        return recurred.id

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("lifecycle watch failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.config.watch_interval)
