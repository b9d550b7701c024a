"""The write side: executes queued actions on Cloud Run, verifies recovery, records the MTTR."""

from actuator.annotations import GrafanaAnnotations
from actuator.app import create_app, open_action_worker, worker_context
from actuator.cloudrun import OPERATION_POLLING, CloudRunChanger
from actuator.config import ActuatorConfig, GrafanaConfig, RetryConfig, VerifyConfig
from actuator.exceptions import (
    ActionRefused,
    ActuatorError,
    CloudRunCallFailed,
    LeaseLost,
    PermanentCloudRunError,
    TransientCloudRunError,
)
from actuator.metrics import ActuatorMetrics
from actuator.verification import Check, RecoveryVerifier, VerificationResult
from actuator.worker import ActionWorker

__all__ = [
    "OPERATION_POLLING",
    "ActionRefused",
    "ActionWorker",
    "ActuatorConfig",
    "ActuatorError",
    "ActuatorMetrics",
    "Check",
    "CloudRunCallFailed",
    "CloudRunChanger",
    "GrafanaAnnotations",
    "GrafanaConfig",
    "LeaseLost",
    "PermanentCloudRunError",
    "RecoveryVerifier",
    "RetryConfig",
    "TransientCloudRunError",
    "VerificationResult",
    "VerifyConfig",
    "create_app",
    "open_action_worker",
    "worker_context",
]
