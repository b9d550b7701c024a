"""What a later analysis round reads: the fault it was started for, not the alert's first one."""

from __future__ import annotations

from incidents import AlertInfo, Incident


def round_alert(incident: Incident, alert: AlertInfo) -> AlertInfo:
    """The alert as the current round judges it.

    The first round of an incident its alert opened reads the alert as it is. A later round, or an
    incident opened as a recurrence, was started by something seen after the alert began (a new
    revision taking traffic, an alert still firing after a verified recovery): the deploy blame and
    the baseline (analyzer/evidence.py, collector/context.py) are read relative to the alert's
    `starts_at`, so for that round it is when the round began. Otherwise the baseline would hold the
    first fault, and a revision deployed after the alert fired could never be blamed for anything.
    """
    started = incident.round_started_at
    if started is None or started <= alert.starts_at:
        return alert
    return alert.model_copy(update={"starts_at": started})
