"""What happens after the webhook answered: the worker pool, the per-incident pipeline (evidence,
decision, policy, the queued action), and the fault onset."""

from analyzer.processing.onset import DEPLOY_ONSET_HORIZON, deploy_onset
from analyzer.processing.pipeline import ContextSource, IncidentPipeline
from analyzer.processing.pool import IncidentProcessor
from analyzer.processing.queueing import queue_action

__all__ = [
    "DEPLOY_ONSET_HORIZON",
    "ContextSource",
    "IncidentPipeline",
    "IncidentProcessor",
    "deploy_onset",
    "queue_action",
]
