"""What happens after the webhook answered: evidence, decision, policy, and the queued action.

For one incident:
    take the analysis lease (open -> analyzing)
    -> collect the IncidentContext and estimate the fault onset (network; no transaction open)
    -> run the engine
    -> in ONE transaction: re-check the lease, run the policy on fresh history, store the decision,
       queue the action (and NOTIFY the actuator on PostgreSQL), move the incident on.

A failure is recorded on the incident and retried up to `max_attempts`, then the incident fails with
the reason. An incident left `analyzing` by a crashed process is picked up again when its lease runs
out (the sweep), so work survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from analyzer.engines.base import DecisionEngine, EngineResult
from analyzer.metrics import AnalyzerMetrics
from analyzer.policy import PolicyGuard, PolicyHistory, PolicyOutcome, Verdict, describe
from incidents import (
    CHANGING_ACTIONS,
    ActionStatus,
    ActionType,
    AlertInfo,
    Decision,
    IncidentContext,
    IncidentStatus,
    RecentAction,
)
from incidents.db import Store
from incidents.models import Action, Incident, IncidentAlert, utcnow
from incidents.repository import ActionRepository, IncidentRepository

log = logging.getLogger(__name__)

ACTIONS_CHANNEL = "remediator_actions"
# Serializes the global-cap check across analyzers on PostgreSQL (pg_advisory_xact_lock key).
POLICY_LOCK_KEY = 0x52454D45  # "REME"


class ContextSource(Protocol):
    """The collector, as the analyzer sees it."""

    async def build_context(
        self, alert: AlertInfo, *, recent_actions: list[RecentAction], now: datetime
    ) -> IncidentContext: ...

    async def estimate_onset(self, alert: AlertInfo) -> tuple[datetime, str] | None: ...


@dataclass(frozen=True, kw_only=True)
class ProcessingConfig:
    lease: timedelta = timedelta(seconds=60)
    max_attempts: int = 3
    workers: int = 4
    sweep_interval: float = 5.0
    # How far back the store's actions count as `recent_actions` in the context.
    history_window: timedelta = timedelta(hours=24)


def recent_action_from_row(action: Action) -> RecentAction:
    params = action.params or {}
    return RecentAction(
        action=action.type,  # type: ignore[arg-type]  # validated by the model
        at=action.created_at,
        target_revision=params.get("target_revision"),
        from_revision=params.get("from_revision"),
        outcome=action.status,
        manual=action.manual,
    )


def primary_alert(alerts: list[IncidentAlert]) -> IncidentAlert:
    """The alert to collect evidence for: firing before resolved, critical before others, oldest first."""

    def rank(alert: IncidentAlert) -> tuple[int, int, Any]:
        return (alert.status != "firing", alert.severity != "critical", alert.starts_at)

    return sorted(alerts, key=rank)[0]


def alert_info(alert: IncidentAlert) -> AlertInfo:
    return AlertInfo(
        name=alert.alertname,
        status="firing" if alert.status == "firing" else "resolved",
        severity=alert.severity,
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        fingerprint=alert.fingerprint,
        labels=alert.labels,
        annotations=alert.annotations,
        generator_url=alert.generator_url,
    )


class IncidentProcessor:
    def __init__(
        self,
        *,
        store: Store,
        context_source: ContextSource,
        engine: DecisionEngine,
        policy: PolicyGuard,
        metrics: AnalyzerMetrics,
        config: ProcessingConfig | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.context_source = context_source
        self.engine = engine
        self.policy = policy
        self.metrics = metrics
        self.config = config or ProcessingConfig()
        self.owner = owner or f"analyzer-{uuid.uuid4().hex[:8]}"
        self._queue: asyncio.Queue[int | None] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._pending: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0

    # lifecycle

    def notify(self, incident_ids: list[int]) -> None:
        """Queue incidents for analysis (called by the webhook after its transaction committed)."""
        if self._stopping.is_set():
            return  # the sweep of the next process picks these up
        for incident_id in incident_ids:
            if incident_id not in self._pending:
                self._pending.add(incident_id)
                self._idle.clear()
                self._queue.put_nowait(incident_id)

    async def start(self) -> None:
        self._stopping.clear()
        for number in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"analysis-worker-{number}"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="analysis-sweep"))

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Let in-flight analyses finish (cancelling one mid-transaction would waste it), then stop."""
        self._stopping.set()
        for _ in range(self.config.workers):
            self._queue.put_nowait(None)
        _, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def wait_idle(self) -> None:
        """Wait until every queued incident has been processed (tests, benchmarks)."""
        await self._idle.wait()

    async def _work(self) -> None:
        while True:
            incident_id = await self._queue.get()
            if incident_id is None:
                return
            self._in_flight += 1
            try:
                await self.process(incident_id)
            except Exception:  # process() records its own failures; this is the last resort
                log.exception("analysis crashed", extra={"incident_id": incident_id})
            finally:
                self._in_flight -= 1
                self._pending.discard(incident_id)
                if not self._pending and self._in_flight == 0:
                    self._idle.set()

    async def _sweep(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.store.session() as session:
                    waiting = await IncidentRepository(session).list_needing_analysis(now=utcnow())
                self.notify(list(waiting))
            except Exception:
                log.exception("analysis sweep failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.config.sweep_interval)

    # one incident

    async def process(self, incident_id: int) -> None:
        started = time.perf_counter()
        claimed = await self._claim(incident_id)
        if claimed is None:
            return
        alert, recent = claimed
        try:
            onset = await self.context_source.estimate_onset(alert)
            context = await self.context_source.build_context(alert, recent_actions=recent, now=utcnow())
            engine_started = time.perf_counter()
            result = await self.engine.decide(context)
            self.metrics.engine_duration.labels(self.engine.name).observe(
                time.perf_counter() - engine_started
            )
            outcome = await self._commit(incident_id, context, result, onset)
        except Exception as exc:
            self.metrics.analysis_errors.inc()
            log.exception("analysis failed", extra={"incident_id": incident_id})
            await self._record_failure(incident_id, exc)
            return
        if outcome is not None:
            self.metrics.decision_duration.labels(self.engine.name).observe(time.perf_counter() - started)

    async def _claim(self, incident_id: int) -> tuple[AlertInfo, list[RecentAction]] | None:
        now = utcnow()
        async with self.store.session() as session:
            incidents = IncidentRepository(session)
            incident = await incidents.take_analysis_lease(
                incident_id, owner=self.owner, now=now, lease=self.config.lease
            )
            if incident is None:
                return None
            retry = incident.status == IncidentStatus.ANALYZING
            await incidents.transition(
                incident,
                IncidentStatus.ANALYZING,
                actor="analyzer",
                message="analysis restarted after an interrupted attempt" if retry else "collecting evidence",
                now=now,
            )
            alerts = list(await incidents.list_alerts(incident_id))
            rows = await ActionRepository(session).list_recent_for_service(
                incident.service, since=now - self.config.history_window
            )
            return alert_info(primary_alert(alerts)), [recent_action_from_row(row) for row in rows]

    async def _commit(
        self,
        incident_id: int,
        context: IncidentContext,
        result: EngineResult,
        onset: tuple[datetime, str] | None,
    ) -> PolicyOutcome | None:
        now = utcnow()
        changes = result.decision.action in CHANGING_ACTIONS
        async with self.store.session() as session:
            if changes and session.get_bind().dialect.name == "postgresql":
                await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POLICY_LOCK_KEY})
            incidents = IncidentRepository(session)
            incident = await incidents.get(incident_id, for_update=True)
            if incident.status != IncidentStatus.ANALYZING or incident.lease_owner != self.owner:
                await incidents.events.add(
                    incident_id,
                    "analysis.discarded",
                    f"decision discarded: the incident became {incident.status} during analysis",
                    actor="analyzer",
                    data={"decision": result.decision.to_json_dict()},
                )
                return None
            # Only a change needs the history (cooldown, hourly cap, flapping); the rest passes.
            history = (
                await self._policy_history(session, incident.service, now=now) if changes else PolicyHistory()
            )
            outcome = self.policy.evaluate(
                result.decision, context, history, now=now, approval_reason=result.approval_reason
            )
            self._store_decision(incident, context, result, outcome, onset)
            await self._advance(session, incident, context, result, outcome, now=now)
        self._count(result, outcome)
        log.info(
            "incident decided",
            extra={
                "incident_id": incident_id,
                "service": context.service.name,
                "engine": result.decision.engine,
                "action": outcome.decision.action.value,
                "verdict": outcome.verdict.value,
                "confidence": outcome.decision.confidence,
            },
        )
        return outcome

    async def _policy_history(self, session: AsyncSession, service: str, *, now: datetime) -> PolicyHistory:
        actions = ActionRepository(session)
        since = now - max(self.policy.config.flap_window, self.policy.config.cooldown)
        rows = await actions.list_recent_for_service(service, since=since)
        executed = [row for row in rows if not row.manual and row.status != ActionStatus.CANCELLED.value]
        return PolicyHistory(
            recent_actions=[recent_action_from_row(row) for row in rows],
            last_automatic_action_at=max((row.created_at for row in executed), default=None),
            automatic_actions_last_hour=await actions.count_automatic_since(now - timedelta(hours=1)),
        )

    @staticmethod
    def _store_decision(
        incident: Incident,
        context: IncidentContext,
        result: EngineResult,
        outcome: PolicyOutcome,
        onset: tuple[datetime, str] | None,
    ) -> None:
        incident.context = context.to_json_dict()
        incident.proposed_decision = {**result.decision.to_json_dict(), "opinions": result.opinions or None}
        incident.decision = outcome.decision.to_json_dict()
        incident.engine = result.decision.engine
        incident.confidence = result.decision.confidence
        incident.policy_verdict = outcome.verdict.value
        incident.policy_reason = outcome.reason
        incident.engine_fallback_reason = result.fallback_reason
        incident.llm_usage = result.usage
        incident.error_rate = context.metrics.error_rate
        if onset is not None:
            incident.fault_started_at, incident.fault_started_source = onset
        elif incident.fault_started_at is None:
            incident.fault_started_at = incident.alert_fired_at
            incident.fault_started_source = "alert_starts_at"
        deployed = deploy_onset(context, result.decision, incident.fault_started_at)
        if deployed is not None:
            incident.fault_started_at, incident.fault_started_source = deployed

    async def _advance(
        self,
        session: AsyncSession,
        incident: Incident,
        context: IncidentContext,
        result: EngineResult,
        outcome: PolicyOutcome,
        *,
        now: datetime,
    ) -> None:
        incidents = IncidentRepository(session)
        proposed, final = result.decision, outcome.decision
        engine_actor = f"engine:{proposed.engine}"
        if result.fallback_reason:
            await incidents.events.add(
                incident.id,
                "engine.fallback",
                f"the rules engine decided: {result.fallback_reason}",
                actor=engine_actor,
                at=now,
            )
        await incidents.transition(
            incident,
            IncidentStatus.DECIDED,
            actor=engine_actor,
            message=f"{proposed.action.value} (confidence {proposed.confidence:.2f}): {proposed.explanation}",
            now=now,
            data={"decision": proposed.to_json_dict()},
        )
        verdict = outcome.verdict
        if verdict is not Verdict.PASS:
            await incidents.events.add(
                incident.id,
                f"policy.{verdict.value}",
                outcome.reason or f"policy allows: {describe(final)}",
                actor="policy",
                at=now,
            )
        if verdict is Verdict.EXECUTE:
            await self._queue_action(session, incident, context, final, now=now)
            await incidents.transition(
                incident, IncidentStatus.QUEUED, actor="policy", message=f"queued: {describe(final)}", now=now
            )
        elif verdict is Verdict.AWAIT_APPROVAL:
            await incidents.transition(
                incident,
                IncidentStatus.AWAITING_APPROVAL,
                actor="policy",
                message=f"waiting for approval to {describe(final)}: {outcome.reason}",
                now=now,
                reason=outcome.reason,
            )
        elif verdict is Verdict.SUPPRESS:
            await incidents.transition(
                incident,
                IncidentStatus.SUPPRESSED,
                actor="policy",
                message=outcome.reason or "",
                now=now,
                reason=outcome.reason,
            )
        elif final.action is ActionType.NONE:
            await incidents.transition(
                incident,
                IncidentStatus.CLOSED,
                actor=engine_actor,
                message=final.root_cause,
                now=now,
                reason=final.root_cause,
            )
        else:  # INVESTIGATE, proposed or imposed by an overrule
            await incidents.transition(
                incident,
                IncidentStatus.ESCALATED,
                actor="policy" if verdict is Verdict.OVERRULE else engine_actor,
                message=final.explanation,
                now=now,
                reason=final.root_cause if verdict is Verdict.PASS else outcome.reason,
            )

    @staticmethod
    async def _queue_action(
        session: AsyncSession,
        incident: Incident,
        context: IncidentContext,
        decision: Decision,
        *,
        now: datetime,
    ) -> None:
        await queue_action(session, incident, context, decision, requested_by="analyzer", now=now)

    def _count(self, result: EngineResult, outcome: PolicyOutcome) -> None:
        proposed = result.decision
        self.metrics.decisions.labels(proposed.engine, proposed.action.value, outcome.verdict.value).inc()
        if result.fallback_reason:
            self.metrics.engine_fallbacks.labels(result.fallback_reason.split(":", 1)[0]).inc()
        if outcome.verdict in (Verdict.OVERRULE, Verdict.SUPPRESS, Verdict.AWAIT_APPROVAL):
            self.metrics.policy_overrules.labels(outcome.verdict.value).inc()
        ended = {
            Verdict.SUPPRESS: "suppressed",
            Verdict.AWAIT_APPROVAL: "awaiting_approval",
            Verdict.OVERRULE: "escalated",
        }.get(outcome.verdict)
        if ended is None and outcome.verdict is Verdict.PASS:
            ended = "closed" if outcome.decision.action is ActionType.NONE else "escalated"
        if ended is not None:
            self.metrics.incidents_ended.labels(ended).inc()

    async def _record_failure(self, incident_id: int, error: Exception) -> None:
        now = utcnow()
        message = f"{type(error).__name__}: {error}"[:2000]
        try:
            async with self.store.session() as session:
                incidents = IncidentRepository(session)
                incident = await incidents.get(incident_id, for_update=True)
                if incident.status != IncidentStatus.ANALYZING or incident.lease_owner != self.owner:
                    return
                await incidents.events.add(
                    incident_id,
                    "analysis.error",
                    message,
                    actor="analyzer",
                    at=now,
                    data={"attempt": incident.analysis_attempts},
                )
                if incident.analysis_attempts >= self.config.max_attempts:
                    await incidents.transition(
                        incident,
                        IncidentStatus.FAILED,
                        actor="analyzer",
                        message=f"analysis failed {incident.analysis_attempts} times; a human must look",
                        now=now,
                        reason=f"analysis failed: {message}",
                    )
                    self.metrics.incidents_ended.labels("failed").inc()
                else:
                    # Let the sweep retry soon, with a growing pause.
                    incident.lease_owner = None
                    incident.lease_expires_at = now + timedelta(seconds=2**incident.analysis_attempts)
        except Exception:
            log.exception("could not record the analysis failure", extra={"incident_id": incident_id})


async def queue_action(
    session: AsyncSession,
    incident: Incident,
    context: IncidentContext | None,
    decision: Decision,
    *,
    requested_by: str,
    now: datetime,
    manual: bool = False,
) -> Action:
    """Queue the action a decision calls for, in the caller's transaction, and wake the actuator."""
    params: dict[str, Any] = {"decision_engine": decision.engine}
    if decision.action is ActionType.ROLLBACK:
        params["target_revision"] = decision.target_revision
        failing = _failing_revision(context) if context is not None else None
        if failing:
            params["from_revision"] = failing
    elif decision.action is ActionType.SCALE_UP and decision.scale is not None:
        params["min_instances"] = decision.scale.min_instances
        params["max_instances"] = decision.scale.max_instances
    action = await ActionRepository(session).enqueue(
        service=incident.service,
        type=decision.action.value,
        params=params,
        incident_id=incident.id,
        manual=manual,
        requested_by=requested_by,
        now=now,
    )
    await IncidentRepository(session).events.add(
        incident.id,
        "action.queued",
        f"action {action.id} queued: {describe(decision)}",
        actor=requested_by,
        data={"action_id": action.id, "type": action.type, "params": params},
        at=now,
    )
    await notify_actuator(session, action.id)
    return action


async def notify_actuator(session: AsyncSession, action_id: int) -> None:
    """On PostgreSQL, wake listening actuators when the transaction commits; SQLite workers poll."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": ACTIONS_CHANNEL, "payload": str(action_id)},
        )


# A deploy blamed for a fault more than this long before the metrics saw it is not its onset.
DEPLOY_ONSET_HORIZON = timedelta(minutes=15)


def deploy_onset(
    context: IncidentContext, decision: Decision, estimated: datetime | None
) -> tuple[datetime, str] | None:
    """For a regression rolled back, the fault began when the failing revision went out.

    The engine only blames a revision that did not serve healthily before the onset, so its errors
    began with its first requests: its creation is a closer onset than any metric window, which lags
    by service discovery, a scrape and the window itself.
    """
    if decision.action is not ActionType.ROLLBACK or estimated is None:
        return None
    failing = context.revision(_failing_revision(context))
    if failing is None or failing.created_at is None:
        return None
    if estimated - DEPLOY_ONSET_HORIZON <= failing.created_at <= estimated:
        return failing.created_at, "revision_created"
    return None


def _failing_revision(context: IncidentContext) -> str | None:
    """The newest serving revision: what a rollback moves traffic away from."""
    for revision in context.revisions:
        if revision.traffic_percent > 0:
            return revision.name
    return None
