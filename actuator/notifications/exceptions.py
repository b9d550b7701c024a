"""Errors of the notification sinks.

RemediatorError (incidents.exceptions)
└── ActuatorError (actuator.exceptions)
    └── DeliveryFailed        a sink did not take an event: `retryable` says whether trying again
                              later can help (timeouts, 429, 5xx) or not (refused: bad token, 4xx)
"""

from __future__ import annotations

from actuator.exceptions import ActuatorError


class DeliveryFailed(ActuatorError):
    def __init__(self, message: str, *, sink: str, retryable: bool, incident_id: int | None = None) -> None:
        super().__init__(message, incident_id=incident_id)
        self.sink = sink
        self.retryable = retryable
