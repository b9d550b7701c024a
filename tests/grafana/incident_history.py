"""A few hours of incident history in the store, written the way Remediator writes it.

Eight incidents over five services, through the repositories and the state machine (so every
`status.*` event, stamp and action row is what the product writes), with the decision fields and
MTTR the analyzer and actuator set:

    #1 demo-app-a  ROLLBACK to demo-app-a-00001, verified        -> resolved
    #2 demo-app-a  SCALE_UP, recovery not verified              -> escalated (still active)
    #3 demo-app-b  Gemini timed out, the rules engine proposed a
                   rollback to a revision that does not exist:
                   overruled, escalated, alerts resolved         -> closed
    #4 demo-app-c  confidence below the policy's minimum         -> awaiting_approval (active)
    #5 demo-app-d  being analyzed                                -> analyzing (active)
    #6 demo-app-b  ROLLBACK failed (Cloud Run kept answering 503) -> failed
    #7 demo-app-b  ROLLBACK, traffic already there, verified     -> resolved
    #8 demo-app-e  cool-down: suppressed, alerts resolved        -> closed
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from actuator.mttr import apply_recovery_times, recovery_times
from incidents import (
    Action,
    ActionPhase,
    ActionRepository,
    ActionStatus,
    ActionType,
    Decision,
    Incident,
    IncidentRepository,
    IncidentStatus,
    ScaleChange,
    Store,
    StoreConfig,
    read_action,
)
from tests.support.databases import truncate_postgres

S = IncidentStatus


@dataclass(frozen=True)
class History:
    start: datetime  # the first incident's detection
    end: datetime  # the last thing that happened
    incident_ids: tuple[int, ...]
    active: int
    awaiting_approval: int
    escalated: int
    fallbacks: int
    held_or_overruled: int
    verified_mttr: tuple[float, ...]


class _Writer:
    def __init__(self, incidents: IncidentRepository, actions: ActionRepository) -> None:
        self.incidents = incidents
        self.actions = actions

    async def open(self, service: str, at: datetime, summary: str, *, fault_lead: timedelta) -> Incident:
        incident, opened = await self.incidents.open(
            service,
            now=at,
            severity="critical",
            summary=summary,
            alert_fired_at=at - timedelta(seconds=2),
            actor="alertmanager",
            message=f"HighErrorRate firing for {service}",
        )
        assert opened
        incident.fault_started_at, incident.fault_started_source = at - fault_lead, "metrics"
        return incident

    async def move(
        self, incident: Incident, status: IncidentStatus, at: datetime, actor: str = "remediator", **data: Any
    ) -> None:
        await self.incidents.transition(
            incident, status, actor=actor, message=f"{status.value} (seeded)", now=at, data=data or None
        )

    async def decide(
        self,
        incident: Incident,
        at: datetime,
        proposed: Decision,
        *,
        verdict: str,
        final: Decision | None = None,
        reason: str | None = None,
        fallback: str | None = None,
    ) -> None:
        await self.move(incident, S.ANALYZING, at - timedelta(seconds=1), actor="analyzer")
        incident.context = {"service": {"name": incident.service}}
        incident.proposed_decision = proposed.to_json_dict()
        incident.decision = (final or proposed).to_json_dict()
        incident.engine = proposed.engine
        incident.confidence = proposed.confidence
        incident.policy_verdict = verdict
        incident.policy_reason = reason
        incident.engine_fallback_reason = fallback
        incident.error_rate = 0.061
        if fallback is not None:
            await self.incidents.events.add(
                incident.id,
                "engine.fallback",
                f"the rules engine decided: {fallback}",
                actor="engine:rules",
                at=at,
            )
        await self.move(
            incident, S.DECIDED, at, actor=f"engine:{proposed.engine}", decision=proposed.to_json_dict()
        )
        if verdict not in ("execute", "pass"):
            await self.incidents.events.add(
                incident.id, f"policy.{verdict}", reason or verdict, actor="policy", at=at
            )

    async def act(self, incident: Incident, at: datetime, type_: str, params: dict[str, Any]) -> Action:
        action = await self.actions.enqueue(
            service=incident.service,
            request=read_action(type_, params),
            incident_id=incident.id,
            manual=False,
            requested_by="analyzer",
            now=at,
        )
        await self.incidents.events.add(
            incident.id,
            "action.queued",
            f"{type_} queued",
            actor="analyzer",
            at=at,
            data={"action_id": action.id, "type": type_, "params": params},
        )
        await self.move(incident, S.QUEUED, at)
        await self.move(incident, S.ACTING, at + timedelta(seconds=1), actor="actuator")
        action.status, action.started_at = ActionStatus.RUNNING.value, at + timedelta(seconds=1)
        return action

    async def applied(self, incident: Incident, action: Action, at: datetime, *, changed: bool) -> None:
        outcome: dict[str, Any] = {"changed": changed}
        if not changed:
            outcome["note"] = "traffic already 100% on the target"
        action.result, action.phase, action.applied_at = outcome, ActionPhase.APPLIED.value, at
        target = action.params.get("target_revision") or "the new scaling"
        await self.incidents.events.add(
            incident.id,
            "action.applied",
            f"{action.type.lower()} {incident.service} to {target}: applied",
            actor="actuator",
            at=at,
            data={"action_id": action.id, **outcome},
        )
        await self.move(incident, S.VERIFYING, at, actor="actuator")

    async def finish(
        self, action: Action, at: datetime, status: ActionStatus, error: str | None = None
    ) -> None:
        action.status, action.phase, action.finished_at, action.error = (
            status.value,
            ActionPhase.DONE.value,
            at,
            error,
        )

    async def verified(self, incident: Incident, action: Action, at: datetime) -> float:
        await self.move(incident, S.RESOLVED, at, actor="actuator")
        apply_recovery_times(incident, recovery_times(incident, verified_at=at))
        await self.finish(action, at, ActionStatus.SUCCEEDED)
        assert incident.mttr_seconds is not None
        return incident.mttr_seconds


def rollback(target: str, confidence: float, engine: str = "rules") -> Decision:
    return Decision(
        action=ActionType.ROLLBACK,
        target_revision=target,
        confidence=confidence,
        root_cause="bad deploy",
        explanation="the newest revision fails, the previous one was healthy",
        engine=engine,
    )


async def write_history(url: str, *, start: datetime) -> History:
    """Replace the store's contents with the history above, starting at `start`."""
    store = Store.from_config(StoreConfig(url=url, pool_size=2))
    await truncate_postgres(store)
    minute = timedelta(minutes=1)
    mttrs = []
    try:
        async with store.session() as session:
            write = _Writer(IncidentRepository(session), ActionRepository(session))
            ids = []

            t = start  # 1
            one = await write.open("demo-app-a", t, "error rate 6.1% > 2%", fault_lead=timedelta(seconds=35))
            await write.decide(
                one, t + timedelta(seconds=2), rollback("demo-app-a-00001", 0.92), verdict="execute"
            )
            action = await write.act(
                one, t + timedelta(seconds=2), "ROLLBACK", {"target_revision": "demo-app-a-00001"}
            )
            await write.applied(one, action, t + timedelta(seconds=5), changed=True)
            mttrs.append(await write.verified(one, action, t + timedelta(seconds=40)))
            ids.append(one.id)

            t = start + 10 * minute  # 3
            three = await write.open("demo-app-b", t, "error rate 9% > 2%", fault_lead=timedelta(seconds=30))
            await write.decide(
                three,
                t + timedelta(seconds=12),
                rollback("demo-app-b-00009", 0.9),
                verdict="overrule",
                final=Decision(action=ActionType.INVESTIGATE, confidence=0.9, engine="rules"),
                reason="rollback target demo-app-b-00009 does not exist",
                fallback="gemini timed out after 10.0 s",
            )
            await write.move(three, S.ESCALATED, t + timedelta(seconds=12))
            await write.move(three, S.CLOSED, t + 6 * minute)
            ids.append(three.id)

            t = start + 20 * minute  # 8
            eight = await write.open("demo-app-e", t, "error rate 3% > 2%", fault_lead=timedelta(seconds=30))
            await write.decide(
                eight,
                t + timedelta(seconds=2),
                rollback("demo-app-e-00001", 0.95),
                verdict="suppress",
                reason="cool-down: demo-app-e was rolled back 4 minutes ago",
            )
            await write.move(eight, S.SUPPRESSED, t + timedelta(seconds=2))
            await write.move(eight, S.CLOSED, t + 3 * minute)
            ids.append(eight.id)

            t = start + 30 * minute  # 2
            two = await write.open("demo-app-a", t, "p95 latency 2.4s > 1s", fault_lead=timedelta(seconds=25))
            scale = Decision(
                action=ActionType.SCALE_UP,
                scale=ScaleChange(min_instances=2, max_instances=8),
                confidence=0.81,
                engine="gemini",
            )
            await write.decide(two, t + timedelta(seconds=4), scale, verdict="execute")
            action = await write.act(
                two, t + timedelta(seconds=4), "SCALE_UP", {"min_instances": 2, "max_instances": 8}
            )
            await write.applied(two, action, t + timedelta(seconds=8), changed=True)
            await write.finish(action, t + 3 * minute, ActionStatus.SUCCEEDED)
            await write.incidents.events.add(
                two.id, "verification.failed", "p95 still above 1 s", actor="actuator", at=t + 3 * minute
            )
            await write.move(two, S.ESCALATED, t + 3 * minute, actor="actuator")
            ids.append(two.id)

            t = start + 40 * minute  # 4
            four = await write.open("demo-app-c", t, "error rate 4% > 2%", fault_lead=timedelta(seconds=30))
            await write.decide(
                four,
                t + timedelta(seconds=3),
                rollback("demo-app-c-00002", 0.62, engine="gemini"),
                verdict="await_approval",
                reason="confidence 0.62 below 0.80",
            )
            await write.move(four, S.AWAITING_APPROVAL, t + timedelta(seconds=3))
            ids.append(four.id)

            t = start + 50 * minute  # 5
            five = await write.open("demo-app-d", t, "error rate 2.5% > 2%", fault_lead=timedelta(seconds=20))
            await write.move(five, S.ANALYZING, t + timedelta(seconds=1), actor="analyzer")
            ids.append(five.id)

            t = start + 60 * minute  # 6
            six = await write.open("demo-app-b", t, "error rate 12% > 2%", fault_lead=timedelta(seconds=30))
            await write.decide(
                six, t + timedelta(seconds=2), rollback("demo-app-b-00004", 0.93), verdict="execute"
            )
            action = await write.act(
                six, t + timedelta(seconds=2), "ROLLBACK", {"target_revision": "demo-app-b-00004"}
            )
            await write.finish(
                action, t + timedelta(seconds=70), ActionStatus.FAILED, "Cloud Run answered 503 five times"
            )
            await write.incidents.events.add(
                six.id,
                "action.failed",
                "Cloud Run answered 503 five times",
                actor="actuator",
                at=t + timedelta(seconds=70),
            )
            await write.move(six, S.FAILED, t + timedelta(seconds=70), actor="actuator")
            ids.append(six.id)

            t = start + 90 * minute  # 7
            seven = await write.open("demo-app-b", t, "error rate 5% > 2%", fault_lead=timedelta(seconds=40))
            await write.decide(
                seven, t + timedelta(seconds=3), rollback("demo-app-b-00004", 0.88), verdict="execute"
            )
            action = await write.act(
                seven, t + timedelta(seconds=3), "ROLLBACK", {"target_revision": "demo-app-b-00004"}
            )
            await write.applied(seven, action, t + timedelta(seconds=6), changed=False)
            mttrs.append(await write.verified(seven, action, t + timedelta(seconds=50)))
            ids.append(seven.id)
    finally:
        await store.dispose()
    return History(
        start=start,
        end=start + 90 * minute + timedelta(seconds=50),
        incident_ids=tuple(sorted(ids)),
        active=3,
        awaiting_approval=1,
        escalated=1,
        fallbacks=1,
        held_or_overruled=3,
        verified_mttr=tuple(mttrs),
    )
