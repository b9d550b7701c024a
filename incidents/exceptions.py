"""Exceptions of the incident domain, and the root of every Remediator error.

    RemediatorError                  every error Remediator raises on purpose
    ├── IncidentsError               this package
    │   ├── IllegalTransition        a state change the state machine does not allow
    │   │   └── HandoverRefused      a human's escalate or close of an incident that cannot take it
    │   ├── IncidentNotFound
    │   ├── ActionNotFound
    │   ├── InvalidAction            a stored action whose type or params do not validate
    │   └── StoreUnavailable         the database could not be reached or answered with an error
    ├── collector.CollectorError     (collector/exceptions.py)
    ├── analyzer.AnalyzerError       (analyzer/exceptions.py)
    └── actuator.ActuatorError       (actuator/exceptions.py)

Each error carries the context it happened in (service, revision, incident id) so a log line or an
HTTP error body can name it without parsing the message.
"""

from __future__ import annotations


class RemediatorError(Exception):
    """Root of every error Remediator raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        revision: str | None = None,
        incident_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.revision = revision
        self.incident_id = incident_id

    def context(self) -> dict[str, object]:
        """The identifiers this error carries, for structured logs and error bodies."""
        found = {"service": self.service, "revision": self.revision, "incident_id": self.incident_id}
        return {key: value for key, value in found.items() if value is not None}


class IncidentsError(RemediatorError):
    """An error of the incident store or domain."""


class IllegalTransition(IncidentsError):
    def __init__(self, source: str, target: str, *, incident_id: int | None = None) -> None:
        super().__init__(f"illegal incident transition {source} -> {target}", incident_id=incident_id)
        self.source = source
        self.target = target


class HandoverRefused(IllegalTransition):
    """A human's escalate or close refused: the incident ended already, or is escalated already."""

    def __init__(self, message: str, *, source: str, target: str, incident_id: int) -> None:
        super().__init__(source, target, incident_id=incident_id)
        self.message = message
        self.args = (message,)


class IncidentNotFound(IncidentsError):
    def __init__(self, incident_id: int) -> None:
        super().__init__(f"incident {incident_id} not found", incident_id=incident_id)


class ActionNotFound(IncidentsError):
    def __init__(self, action_id: int) -> None:
        super().__init__(f"action {action_id} not found")
        self.action_id = action_id


class InvalidAction(IncidentsError):
    """An action whose type or parameters are not one of the contract's (`incidents.contracts`)."""


class StoreUnavailable(IncidentsError):
    """The database could not be reached, or failed a statement for a reason that is not ours."""
