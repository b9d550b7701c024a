"""One incident, from the analysis lease to the committed decision:

    take the analysis lease (open -> analyzing)
    -> collect the IncidentContext while estimating the fault onset (network; no transaction open)
    -> run the engine
    -> for a ROLLBACK or SCALE_UP, check on a fresh short window that the fault still holds
       (confirmation.py; a start-up blip that has stopped is not acted on)
    -> in ONE transaction: re-check the lease, run the policy on fresh history, store the decision,
       queue the action (the work queue wakes the actuator when it commits), move the incident on.

A failure is recorded on the incident; after `max_attempts` the incident fails with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from analyzer.config import ProcessingConfig
from analyzer.engines.base import DecisionEngine, EngineResult
from analyzer.metrics import AnalyzerMetrics
from analyzer.policy import PolicyGuard, PolicyHistory, PolicyOutcome, Verdict
from analyzer.processing.confirmation import FaultConfirmation, FaultState, confirm_fault
from analyzer.processing.onset import deploy_onset
from analyzer.processing.queueing import queue_action
from analyzer.processing.rounds import round_alert
from collector import SourceResult
from incidents import (
    CHANGING_ACTIONS,
    ActionRepository,
    ActionStatus,
    ActionType,
    AlertInfo,
    Decision,
    Figures,
    Incident,
    IncidentContext,
    IncidentRepository,
    IncidentStatus,
    RecentAction,
    Store,
    alert_info,
    database_now,
    describe_decision,
    primary_alert,
    recent_action_from_row,
    utcnow,
)
from incidents.lifecycle import record_round

log = logging.getLogger("analyzer.processing")

# Serializes the global-cap check across analyzers on PostgreSQL (pg_advisory_xact_lock key).
POLICY_LOCK_KEY = 0x52454D45  # "REME"
# A process clock this far off the database's is logged when a decision reads the history.
CLOCK_DRIFT_WARNING_SECONDS = 5.0


class ContextSource(Protocol):
    """The collector, as the analyzer sees it."""

    async def build_context(
        self, alert: AlertInfo, *, recent_actions: list[RecentAction], now: datetime
    ) -> IncidentContext: ...

    async def estimate_onset(self, alert: AlertInfo) -> tuple[datetime, str] | None: ...

    async def fresh_figures(
        self, service: str, revisions: list[str], *, window_seconds: int, now: datetime
    ) -> SourceResult[Figures]: ...


class IncidentPipeline:
    def __init__(
        self,
        *,
        store: Store,
        context_source: ContextSource,
        engine: DecisionEngine,
        policy: PolicyGuard,
        metrics: AnalyzerMetrics,
        config: ProcessingConfig,
        owner: str,
    ) -> None:
        self.store = store
        self.context_source = context_source
        self.engine = engine
        self.policy = policy
        self.metrics = metrics
        self.config = config
        self.owner = owner

    async def process(self, incident_id: int) -> None:
        """Take one incident from `open` (or an expired `analyzing`) to its decision; a failure is
        recorded on it, and retried by the sweep until `max_attempts`."""
        started = time.perf_counter()
        claimed = await self._claim(incident_id)
        if claimed is None:
            return
        alert, recent = claimed
        try:
            # The onset and the context are independent reads: one wait for both, not two in a row.
            onset_read = asyncio.create_task(self.context_source.estimate_onset(alert))
            try:
                context = await self.context_source.build_context(alert, recent_actions=recent, now=utcnow())
                onset = await onset_read
            finally:
                onset_read.cancel()  # a failed context read leaves nothing running behind it
            engine_started = time.perf_counter()
            result = await self.engine.decide(context)
            self.metrics.engine_duration.labels(self.engine.name).observe(
                time.perf_counter() - engine_started
            )
            confirmation = await self._confirm(context, result.decision, onset)
            outcome = await self._commit(incident_id, context, result, onset, confirmation)
        except Exception as exc:
            self.metrics.analysis_errors.inc()
            log.exception("analysis failed", extra={"incident_id": incident_id})
            await self._record_failure(incident_id, exc)
            return
        if outcome is not None:
            self.metrics.decision_duration.labels(self.engine.name).observe(time.perf_counter() - started)

    async def _confirm(
        self, context: IncidentContext, decision: Decision, onset: tuple[datetime, str] | None
    ) -> FaultConfirmation | None:
        """For a change, whether the fault still holds on a fresh window; None when not checked."""
        settings = self.config.confirmation
        if decision.action not in CHANGING_ACTIONS or settings.confirm_window.total_seconds() <= 0:
            return None
        confirmation = await confirm_fault(
            context,
            decision,
            self.context_source,
            config=settings,
            evidence=self.policy.config.evidence,
            onset=onset[0] if onset is not None else None,
        )
        self.metrics.fault_confirmations.labels(confirmation.state.value).inc()
        return confirmation

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
            return round_alert(incident, alert_info(primary_alert(alerts))), [
                recent_action_from_row(row) for row in rows
            ]

    async def _commit(
        self,
        incident_id: int,
        context: IncidentContext,
        result: EngineResult,
        onset: tuple[datetime, str] | None,
        confirmation: FaultConfirmation | None = None,
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
            checked: tuple[str, FaultConfirmation] | None = None
            if confirmation is not None:
                outcome, kind = self._apply_confirmation(outcome, confirmation)
                checked = (kind, confirmation) if kind is not None else None
            self._store_decision(incident, context, result, outcome, onset)
            await self._advance(session, incident, context, result, outcome, now=now, checked=checked)
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

    @staticmethod
    def _apply_confirmation(
        outcome: PolicyOutcome, confirmation: FaultConfirmation
    ) -> tuple[PolicyOutcome, str | None]:
        """A change goes ahead only on a fault that still holds: one that stopped is not acted on
        (nor put to a human), one that cannot be confirmed waits for a human. Returns the outcome and
        the timeline event kind that records the check (None when it did not matter)."""
        if outcome.verdict not in (Verdict.EXECUTE, Verdict.AWAIT_APPROVAL):
            return outcome, None
        if confirmation.state is FaultState.HOLDS:
            return outcome, "fault.confirmed"
        if confirmation.state is FaultState.STOPPED:
            proposed = outcome.decision
            stopped = proposed.model_copy(
                update={
                    "action": ActionType.NONE,
                    "target_revision": None,
                    "scale": None,
                    "root_cause": f"Recovered before any action: {confirmation.reason}.",
                    "explanation": (
                        f"No action: the engine proposed to {describe_decision(proposed)}, but the fault "
                        "had stopped by the time it decided (a start-up blip, or a fault that cleared)."
                    ),
                    "evidence": [*proposed.evidence, f"fresh check: {confirmation.reason}"],
                }
            )
            recovered = PolicyOutcome(verdict=Verdict.PASS, decision=stopped, reason=confirmation.reason)
            return recovered, "fault.stopped"
        if outcome.verdict is Verdict.AWAIT_APPROVAL:
            return outcome, "fault.unconfirmed"
        reason = f"could not confirm that the fault still holds: {confirmation.reason}"
        held = PolicyOutcome(verdict=Verdict.AWAIT_APPROVAL, decision=outcome.decision, reason=reason)
        return held, "fault.unconfirmed"

    async def _policy_history(self, session: AsyncSession, service: str, *, now: datetime) -> PolicyHistory:
        """The store's history, measured on the database's clock (`as_of`): actions are stamped with
        it (`_queue_action`), so the cooldown and the hourly cap hold across replicas whose clocks
        differ. `now` is this process's clock, read only to report a drift."""
        as_of = await database_now(session)
        drift = (now - as_of).total_seconds()
        if abs(drift) > CLOCK_DRIFT_WARNING_SECONDS:
            log.warning(
                "this process's clock is %.1fs off the database's; cooldowns use the database's",
                drift,
                extra={"drift_seconds": round(drift, 3), "service": service},
            )
        actions = ActionRepository(session)
        since = as_of - max(self.policy.config.flap_window, self.policy.config.cooldown)
        rows = await actions.list_recent_for_service(service, since=since)
        executed = [row for row in rows if not row.manual and row.status != ActionStatus.CANCELLED.value]
        return PolicyHistory(
            recent_actions=[recent_action_from_row(row) for row in rows],
            last_automatic_action_at=max((row.created_at for row in executed), default=None),
            automatic_actions_last_hour=await actions.count_automatic_since(as_of - timedelta(hours=1)),
            as_of=as_of,
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
        floor = incident.fault_not_before
        if onset is not None and floor is not None and onset[0] < floor:
            onset = (floor, "fault_not_before")  # the condition has held since another fault's onset
        if onset is not None:
            incident.fault_started_at, incident.fault_started_source = onset
        elif incident.fault_started_at is None or (floor is not None and incident.fault_started_at < floor):
            incident.fault_started_at = floor or incident.alert_fired_at
            incident.fault_started_source = "fault_not_before" if floor else "alert_starts_at"
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
        checked: tuple[str, FaultConfirmation] | None = None,
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
        if checked is not None:
            kind, confirmation = checked
            await incidents.events.add(
                incident.id,
                kind,
                confirmation.reason,
                actor="analyzer",
                at=now,
                data={"confirmation": confirmation.as_data()},
            )
        verdict = outcome.verdict
        if verdict is not Verdict.PASS:
            await incidents.events.add(
                incident.id,
                f"policy.{verdict.value}",
                outcome.reason or f"policy allows: {describe_decision(final)}",
                actor="policy",
                at=now,
            )
        if verdict is Verdict.EXECUTE:
            await self._queue_action(session, incident, context, final, now=now)
            await incidents.transition(
                incident,
                IncidentStatus.QUEUED,
                actor="policy",
                message=f"queued: {describe_decision(final)}",
                now=now,
            )
        elif verdict is Verdict.AWAIT_APPROVAL:
            await incidents.transition(
                incident,
                IncidentStatus.AWAITING_APPROVAL,
                actor="policy",
                message=f"waiting for approval to {describe_decision(final)}: {outcome.reason}",
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
        if incident.analysis_round > 1:  # a re-analysis: the round, its evidence and its outcome
            await record_round(incidents, incident, now=now)

    async def _queue_action(
        self,
        session: AsyncSession,
        incident: Incident,
        context: IncidentContext,
        decision: Decision,
        *,
        now: datetime,
    ) -> None:
        # Stamped with the database's clock, which the next decision's cooldown reads it against.
        queued_at = await database_now(session)
        await queue_action(
            self.store, session, incident, context, decision, requested_by="analyzer", now=queued_at
        )

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
