"""The fault onset of an incident, where the deploy of the failing revision tells it better than
the metrics do (the MTTR is measured from it)."""

from __future__ import annotations

from datetime import datetime, timedelta

from incidents import ActionType, Decision, IncidentContext

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
    failing = context.newest_serving_revision()
    if failing is None or failing.created_at is None:
        return None
    if estimated - DEPLOY_ONSET_HORIZON <= failing.created_at <= estimated:
        return failing.created_at, "revision_created"
    return None
