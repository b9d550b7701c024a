"""The write side: executes queued actions on Cloud Run, verifies recovery, records the MTTR."""

from actuator.app import create_app, worker_context
from actuator.cloudrun import CloudRunChanger
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
from actuator.verification import RecoveryVerifier
from actuator.worker import ActionWorker

__all__ = [
    "ActionRefused",
    "ActionWorker",
    "ActuatorConfig",
    "ActuatorError",
    "ActuatorMetrics",
    "CloudRunCallFailed",
    "CloudRunChanger",
    "GrafanaConfig",
    "LeaseLost",
    "PermanentCloudRunError",
    "RecoveryVerifier",
    "RetryConfig",
    "TransientCloudRunError",
    "VerifyConfig",
    "create_app",
    "worker_context",
]
