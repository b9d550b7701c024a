"""The analyzer's settings: the store, the collector, the policy guard, background analysis, and HTTP.

Built once (remediator/settings.py, or a test) and passed to `create_app`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from analyzer.admission import AlertLimits
from analyzer.policy import PolicyConfig
from collector import CollectorConfig
from incidents import StoreConfig
from incidents.lifecycle import LifecycleConfig
from incidents.runtime import Secret

if TYPE_CHECKING:
    from analyzer.cloud_monitoring import CloudMonitoringConfig
    from analyzer.slack import SlackInteractionsConfig


@dataclass(frozen=True, kw_only=True)
class ConfirmationConfig:
    """The check that a fault still holds right before an automatic change (processing/confirmation.py)."""

    # The fresh window: three scrapes at the local stack's 5 s interval, so that one late scrape
    # still leaves the two points a rate needs (with two, it would turn a real fault into "unknown").
    # Zero turns the check off.
    confirm_window: timedelta = timedelta(seconds=15)
    # A failing revision younger than this is checked once it reaches this age, on the window that
    # ends then: a start-up blip that is over by `startup_grace - confirm_window` is not rolled back.
    startup_grace: timedelta = timedelta(seconds=35)


@dataclass(frozen=True, kw_only=True)
class ProcessingConfig:
    lease: timedelta = timedelta(seconds=60)
    max_attempts: int = 3
    workers: int = 4
    sweep_interval: float = 5.0
    # How far back the store's actions count as `recent_actions` in the context.
    history_window: timedelta = timedelta(hours=24)
    confirmation: ConfirmationConfig = field(default_factory=ConfirmationConfig)


DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_EXPLAIN_PER_MINUTE = 10
# An approval nobody gave within this expires (analyzer/approvals.py): the incident escalates.
DEFAULT_APPROVAL_TTL = timedelta(minutes=30)
# What REMEDIATOR_READ_TOKEN guards (reads only; approving and explaining need the API token).
READ_PROTECTED_PREFIXES = ("/api/v1/incidents", "/metrics")


@dataclass(frozen=True, kw_only=True)
class AnalyzerConfig:
    store: StoreConfig = field(default_factory=StoreConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    webhook_token: Secret | None = None
    api_token: Secret | None = None
    # Approve/Reject clicks on Slack cards (POST /api/v1/slack/interactions); None: disabled.
    slack: SlackInteractionsConfig | None = None
    # Cloud Monitoring notifications, by webhook and Pub/Sub push (POST /api/v1/cloud-monitoring[/pubsub]);
    # None: both refused.
    cloud_monitoring: CloudMonitoringConfig | None = None
    # A body over this is a 413 and Alertmanager drops the whole notification (it retries only 5xx),
    # so the limit is sized for what it sends, not for what is kept: a full payload of the default
    # REMEDIATOR_MAX_ALERTS_PER_PAYLOAD (500) alerts at 16 KiB each (labels, a long description, a
    # generator URL). Over-long annotations are cut alert by alert once read (`admission.clean_text`).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Reads of the incidents API and /metrics need this or the API token, when it is set.
    read_token: Secret | None = None
    alert_limits: AlertLimits = field(default_factory=AlertLimits)
    # Explanations may call a paid model: at most this many per minute per process.
    explain_per_minute: int = DEFAULT_EXPLAIN_PER_MINUTE
    # `serve --insecure-no-auth` on a non-loopback address: /readyz carries a warning.
    insecure_no_auth: bool = False
    # Bring the schema up to date at start-up (the local stack); production runs `remediator db upgrade`.
    migrate_on_start: bool = False
    # How long an incident may wait for approval (REMEDIATOR_APPROVAL_TTL_SECONDS); then it is analysed
    # again once, and escalated the next time (analyzer/approvals.py).
    approval_ttl: timedelta = DEFAULT_APPROVAL_TTL
    # Recurrence, re-analysis and the end of escalations (incidents/lifecycle.py).
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
