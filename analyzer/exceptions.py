"""Errors of the analyzer.

RemediatorError (incidents.exceptions)
└── AnalyzerError
    ├── PayloadInvalid        400: malformed JSON, not an Alertmanager v4 payload, bad query
    ├── Unauthorized          401: missing or wrong bearer token
    ├── PayloadTooLarge       413
    ├── ResourceNotFound      404
    ├── Conflict              409: e.g. approving an incident that is not awaiting approval
    ├── FeatureDisabled       403: e.g. approvals with no API token configured
    └── EngineError           a decision engine failed (the rules engine then decides)
"""

from __future__ import annotations

from incidents import RemediatorError


class AnalyzerError(RemediatorError):
    status = 500


class PayloadInvalid(AnalyzerError):
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(AnalyzerError):
    status = 401


class FeatureDisabled(AnalyzerError):
    status = 403


class ResourceNotFound(AnalyzerError):
    status = 404


class Conflict(AnalyzerError):
    status = 409


class PayloadTooLarge(AnalyzerError):
    status = 413


class EngineError(AnalyzerError):
    """A decision engine could not answer; `reason` is a short machine-friendly cause."""

    def __init__(self, message: str, *, reason: str, incident_id: int | None = None) -> None:
        super().__init__(message, incident_id=incident_id)
        self.reason = reason
