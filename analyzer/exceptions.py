"""Errors of the analyzer.

RemediatorError (incidents.exceptions)
└── AnalyzerError
    ├── PayloadInvalid        400: malformed JSON, not an Alertmanager v4 payload, bad query
    │   └── AlertsRejected    400: no alert of a webhook payload can be recorded (each one's reason)
    ├── Unauthorized          401: missing or wrong credentials; `challenge` is the WWW-Authenticate
    ├── PayloadTooLarge       413: body over the size limit
    ├── UnsupportedMediaType  415: a body that is not declared as JSON
    ├── RateLimited           429: too many requests of a costly kind; `retry_after` seconds
    ├── ResourceNotFound      404
    ├── Conflict              409: e.g. approving an incident that is not awaiting approval
    │   └── ApprovalRefused   409: the approval expired, or Cloud Run changed since the decision
    ├── FeatureDisabled       403: e.g. approvals with no API token configured
    ├── Forbidden             403: e.g. a Slack user who is not on the approvers' list
    ├── DependencyUnavailable 503: something a request needs did not answer (e.g. Google's token keys)
    │   └── CloudRunUnavailable 503: Cloud Run could not be read to check an approval (nothing changed)
    └── EngineError           a decision engine failed (the rules engine then decides)
"""

from __future__ import annotations

from typing import Any

from incidents import RemediatorError


class AnalyzerError(RemediatorError):
    status = 500


class PayloadInvalid(AnalyzerError):
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AlertsRejected(PayloadInvalid):
    """Every alert of a webhook payload was rejected; `rejected` says why, alert by alert."""

    def __init__(self, message: str, *, field: str, rejected: list[dict[str, Any]]) -> None:
        super().__init__(message, field=field)
        self.rejected = rejected


class Unauthorized(AnalyzerError):
    status = 401

    def __init__(self, message: str, *, challenge: str = "Bearer") -> None:
        super().__init__(message)
        self.challenge = challenge


class FeatureDisabled(AnalyzerError):
    status = 403


class Forbidden(AnalyzerError):
    status = 403


class ResourceNotFound(AnalyzerError):
    status = 404


class Conflict(AnalyzerError):
    status = 409


class DependencyUnavailable(AnalyzerError):
    """A service the request depends on did not answer; the sender should retry later."""


class ApprovalRefused(Conflict):
    """An approval that no longer holds; `outcome` says why: `expired` (nobody approved within the
    approval's time to live) or `stale` (Cloud Run changed since the decision)."""

    def __init__(self, message: str, *, outcome: str, incident_id: int) -> None:
        super().__init__(message, incident_id=incident_id)
        self.outcome = outcome


class CloudRunUnavailable(DependencyUnavailable):
    """Cloud Run could not be read; what needed it was not done. Retrying later may succeed."""

    status = 503


class PayloadTooLarge(AnalyzerError):
    status = 413


class UnsupportedMediaType(AnalyzerError):
    status = 415


class RateLimited(AnalyzerError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineError(AnalyzerError):
    """A decision engine could not answer; `reason` is a short machine-friendly cause."""

    def __init__(self, message: str, *, reason: str, incident_id: int | None = None) -> None:
        super().__init__(message, incident_id=incident_id)
        self.reason = reason
