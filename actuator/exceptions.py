"""Errors of the actuator.

RemediatorError (incidents.exceptions)
└── ActuatorError
    ├── CloudRunCallFailed        a Cloud Run Admin API call failed
    │   ├── PermanentCloudRunError    400/403/404/409: retrying cannot help; the API's message kept
    │   │   └── ServiceChanged        an update carrying the etag it read was refused: the service
    │   │                             changed since (ABORTED, or FAILED_PRECONDITION)
    │   └── TransientCloudRunError    429/5xx/timeouts, after every retry was spent
    ├── ActionRefused             the action is no longer safe when it is about to run
    │                             (e.g. the rollback target is not ready any more)
    └── LeaseLost                 another worker took the action over; stop touching it
"""

from __future__ import annotations

from incidents import RemediatorError


class ActuatorError(RemediatorError):
    pass


class CloudRunCallFailed(ActuatorError):
    def __init__(self, message: str, *, code: int | None = None, service: str | None = None) -> None:
        super().__init__(message, service=service)
        self.code = code


class PermanentCloudRunError(CloudRunCallFailed):
    pass


class ServiceChanged(PermanentCloudRunError):
    pass


class TransientCloudRunError(CloudRunCallFailed):
    pass


class ActionRefused(ActuatorError):
    pass


class LeaseLost(ActuatorError):
    pass
