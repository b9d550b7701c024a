"""Manual commands: `remediator rollback | scale | release`.

A human's change goes through the same checks as Remediator's own (a rollback target must exist, be
ready, not be failing and not be a revision a recent rollback left; scaling stays under the ceiling;
the allow-list and dry-run mode hold) and through the same audit trail, marked manual. Cooldown, the
hourly cap and the confidence threshold do not apply: they restrain automation, not people.

The action is queued in the store like any other. By default the command then runs it in-process
(exactly as a worker would: lease, apply, verify) and prints the outcome; if a running actuator
claims it first, the command follows it to its end instead.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from actuator import open_action_worker
from analyzer import PolicyMode
from analyzer.policy import manual_rollback_problem
from collector import CloudRunClients, ContextBuilder
from incidents import (
    ActionKind,
    ActionRepository,
    ActionRequest,
    ActionStatus,
    ActionType,
    AlertInfo,
    Decision,
    IncidentContext,
    IncidentRepository,
    IncidentStatus,
    ReleaseAction,
    RemediatorError,
    RollbackAction,
    ScaleAction,
    ScaleChange,
    Store,
    enqueue_action,
    recent_action_from_row,
    utcnow,
)
from remediator.settings import Settings


class ManualActionRefused(RemediatorError):
    pass


def _manual_alert(service: str) -> AlertInfo:
    # The collector builds contexts for alerts; a manual change is described as one, so the same
    # evidence (revisions, readiness, health) backs the human's request.
    return AlertInfo(
        name="ManualChange",
        status="firing",
        starts_at=utcnow(),
        fingerprint=f"manual-{uuid.uuid4().hex[:12]}",
        labels={"alertname": "ManualChange", "service": service},
    )


def check_manual_request(
    kind: str, args: argparse.Namespace, context: IncidentContext, settings: Settings, history: list[Any]
) -> str | None:
    """Why the request is refused, or None."""
    policy = settings.analyzer.policy
    service = context.service.name
    if any(gap.startswith("cloud_run") for gap in context.gaps):
        return f"cannot read {service} from Cloud Run: {', '.join(context.gaps)}"
    if policy.allowed_services is not None and service not in policy.allowed_services:
        return f"{service} is not in REMEDIATOR_ALLOWED_SERVICES"
    if policy.mode is PolicyMode.DRY_RUN:
        return "REMEDIATOR_MODE=dry-run: no change is made, manual or not"
    if kind == "rollback":
        target = context.revision(args.revision)
        if target is not None and target.traffic_percent == 100:
            return None  # already in place: the worker records it without a change
        return manual_rollback_problem(args.revision, context, history, now=utcnow(), config=policy.evidence)
    if kind == "scale":
        if args.min_instances < 0 or args.max_instances < 1 or args.min_instances > args.max_instances:
            return f"need 0 <= min <= max and max >= 1, got min {args.min_instances} max {args.max_instances}"
        if args.max_instances > policy.max_instances_ceiling:
            return f"max {args.max_instances} exceeds REMEDIATOR_MAX_INSTANCES={policy.max_instances_ceiling}"
        return None
    latest = next((r for r in context.revisions if r.latest), None)
    if latest is None or not latest.ready:
        return f"{service} has no ready latest revision to release to"
    left = {a.from_revision for a in history if a.action == ActionType.ROLLBACK and a.from_revision}
    if latest.name in left and not args.force:
        return (
            f"the latest revision {latest.name} is the one a recent rollback moved traffic away from; "
            "deploy a fix first, or pass --force"
        )
    return None


def _decision(
    kind: str, args: argparse.Namespace, by: str, *, serving: str | None
) -> tuple[ActionRequest, Decision]:
    reason = args.reason or "manual command"
    if kind == "rollback":
        decision = Decision(
            action=ActionType.ROLLBACK,
            target_revision=args.revision,
            confidence=1.0,
            root_cause=reason,
            explanation=f"{by} asked to roll back to {args.revision}.",
            engine="manual",
        )
        moved_from = serving if serving and serving != args.revision else None
        return RollbackAction(target_revision=args.revision, from_revision=moved_from), decision
    if kind == "scale":
        scale = ScaleChange(min_instances=args.min_instances, max_instances=args.max_instances)
        decision = Decision(
            action=ActionType.SCALE_UP,
            scale=scale,
            confidence=1.0,
            root_cause=reason,
            explanation=f"{by} asked for min {scale.min_instances} / max {scale.max_instances} instances.",
            engine="manual",
        )
        request = ScaleAction(
            type=ActionKind.SCALE, min_instances=scale.min_instances, max_instances=scale.max_instances
        )
        return request, decision
    decision = Decision(
        action=ActionType.NONE,
        confidence=1.0,
        root_cause=reason,
        explanation=f"{by} asked to send traffic back to the latest ready revision.",
        engine="manual",
    )
    return ReleaseAction(), decision


async def queue_manual_action(
    store: Store, kind: str, args: argparse.Namespace, context: IncidentContext, *, by: str
) -> tuple[int, int]:
    """Record the request and queue the action; returns (incident id, action id)."""
    newest_serving = context.newest_serving_revision()
    serving = newest_serving.name if newest_serving is not None else None
    request, decision = _decision(kind, args, by, serving=serving)
    actor = f"user:{by}"
    now = utcnow()
    service = context.service.name
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get_active_by_service(service, for_update=True)
        if incident is None:
            incident, _ = await incidents.open(
                service,
                now=now,
                origin="manual",
                summary=f"manual {kind}",
                actor=actor,
                message=f"{by}: {kind}",
            )
            incident.context = context.to_json_dict()
            incident.decision = decision.to_json_dict()
            incident.engine = "manual"
            incident.confidence = 1.0
            await incidents.transition(
                incident,
                IncidentStatus.DECIDED,
                actor=actor,
                message=decision.explanation,
                now=now,
                by_human=True,
            )
        elif incident.status in (
            IncidentStatus.ESCALATED,
            IncidentStatus.SUPPRESSED,
            IncidentStatus.AWAITING_APPROVAL,
        ):
            await incidents.events.add(
                incident.id,
                "manual.requested",
                decision.explanation,
                actor=actor,
                at=now,
                data={"kind": kind},
            )
        else:
            raise ManualActionRefused(
                f"incident {incident.id} on {service} is {incident.status}: wait until it settles "
                "(or approve/reject it) before acting by hand",
                incident_id=incident.id,
            )
        action = await enqueue_action(
            store, session, incident, request, requested_by=actor, now=now, manual=True
        )
        await incidents.transition(
            incident, IncidentStatus.QUEUED, actor=actor, message=f"queued by {by}", now=now, by_human=True
        )
        return incident.id, action.id


async def run_manual_command(settings: Settings, args: argparse.Namespace) -> int:
    kind: str = args.manual
    collector = settings.collector
    store = Store.from_config(settings.store)
    clients = CloudRunClients.for_collector(collector)
    try:
        async with store.session() as session:
            rows = await ActionRepository(session).list_recent_for_service(
                args.service, since=utcnow() - settings.analyzer.policy.flap_window
            )
            history = [recent_action_from_row(row) for row in rows]
        async with ContextBuilder.open(collector, cloud_run_clients=clients) as builder:
            context = await builder.build_context(
                _manual_alert(args.service), recent_actions=history, now=utcnow()
            )
        problem = check_manual_request(kind, args, context, settings, history)
        if problem is not None:
            raise ManualActionRefused(f"refused, nothing changed: {problem}", service=args.service)
        incident_id, action_id = await queue_manual_action(store, kind, args, context, by=args.by)
        print(f"incident {incident_id}: action {action_id} queued ({_describe_request(kind, args, context)})")
        if args.no_wait:
            return 0
        return await _run_and_follow(settings, store, clients, action_id)
    finally:
        clients.close()
        await store.dispose()


def _describe_request(kind: str, args: argparse.Namespace, context: IncidentContext) -> str:
    if kind == "rollback":
        return f"rollback {args.service} to {args.revision}"
    if kind == "scale":
        return f"scale {args.service} to min {args.min_instances} / max {args.max_instances}"
    latest = next((r.name for r in context.revisions if r.latest), "its latest ready revision")
    return f"release {args.service} to {latest}, its latest ready revision"


async def _run_and_follow(settings: Settings, store: Store, clients: CloudRunClients, action_id: int) -> int:
    async with open_action_worker(
        settings.actuator,
        settings.collector,
        store=store,
        registry=CollectorRegistry(),
        clients=clients,
        owner=f"cli-{uuid.uuid4().hex[:8]}",
    ) as worker:
        if await worker.run_once(action_id) is None:
            print("a running actuator took the action; following it")
        deadline = utcnow() + settings.actuator.verify.timeout + timedelta(minutes=2)
        while utcnow() < deadline:
            async with store.session() as session:
                action = await ActionRepository(session).get(action_id)
                incident = (
                    await IncidentRepository(session).get(action.incident_id) if action.incident_id else None
                )
            if action.status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED):
                verified = (action.result or {}).get("verified")
                serving = ((action.result or {}).get("verification") or {}).get("revisions") or []
                print(
                    f"action {action_id} {action.status}"
                    + (f": {action.error}" if action.error else "")
                    + (
                        "; recovery verified"
                        if verified
                        else "; recovery not verified"
                        if verified is False
                        else ""
                    )
                    + (f"; traffic on {', '.join(serving)}" if serving else "")
                    + (f"; incident {incident.id} {incident.status}" if incident else "")
                )
                return 0 if action.status == ActionStatus.SUCCEEDED and verified else 1
            await asyncio.sleep(1)
        print(f"action {action_id} still running; see `GET /api/v1/incidents`")
        return 1
