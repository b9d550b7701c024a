"""`POST /api/v1/incidents/{id}/explain`: a short summary a human can read in ten seconds.

The rules explainer composes it from what is on the incident (decision, evidence, outcome); the
Gemini engine supplies a model-written one when configured, falling back to this on any failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class Explanation:
    summary: str
    source: str
    fallback_reason: str | None = None


class Explainer(Protocol):
    async def explain(self, incident: dict[str, Any]) -> Explanation: ...


class EvidenceExplainer:
    """Composes the summary from the incident's own record; never fails, never calls out."""

    async def explain(self, incident: dict[str, Any]) -> Explanation:
        return Explanation(summary=compose_summary(incident), source="rules")


def compose_summary(incident: dict[str, Any]) -> str:
    """`incident` is the API's detail document (analyzer.views.incident_detail)."""
    decision = incident.get("decision") or {}
    proposed = incident.get("proposed_decision") or {}
    alerts = ", ".join(incident.get("alert_names") or []) or "alert"
    lines = [f"Incident {incident['id']} on {incident['service']}: {alerts} (status {incident['status']})."]
    if proposed.get("root_cause"):
        lines.append(f"Cause: {proposed['root_cause']}")
    if decision:
        action = decision.get("action")
        target = f" to {decision['target_revision']}" if decision.get("target_revision") else ""
        lines.append(
            f"Decision: {action}{target} by the {proposed.get('engine', 'rules')} engine "
            f"(confidence {decision.get('confidence', 0):.2f}). {decision.get('explanation', '')}".rstrip()
        )
    policy = incident.get("policy") or {}
    if policy.get("reason"):
        lines.append(f"Policy: {policy['verdict']}: {policy['reason']}.")
    evidence = (proposed.get("evidence") or [])[:4]
    if evidence:
        lines.append("Evidence: " + "; ".join(evidence) + ".")
    mttr = (incident.get("mttr") or {}).get("seconds")
    if mttr is not None:
        lines.append(f"Recovered and verified; MTTR {mttr:.0f} s.")
    elif incident.get("status_reason"):
        lines.append(f"Outcome so far: {incident['status_reason']}.")
    return "\n".join(lines)
