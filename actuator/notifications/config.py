"""Notification settings: the sinks (Slack, signed event webhooks, PagerDuty), their filters, links
back to Remediator and Grafana, and how hard the outbox worker tries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from incidents.outbox import EVENT_TYPES
from incidents.runtime import Secret

SLACK_API_URL: Final = "https://slack.com/api/"
PAGERDUTY_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
# Lowest first. An incident whose severity is none of these (or unknown) passes every threshold:
# an unknown severity is not a low one.
SEVERITIES: Final = ("info", "warning", "error", "critical")


@dataclass(frozen=True, kw_only=True)
class SinkFilter:
    """Which events a sink hears about: a set of event types (None: all) and a minimum severity."""

    events: frozenset[str] | None = None
    min_severity: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted((self.events or frozenset()) - EVENT_TYPES)
        if unknown:
            raise ValueError(
                f"unknown event types {', '.join(unknown)}; known: {', '.join(sorted(EVENT_TYPES))}"
            )
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.min_severity!r}; one of {', '.join(SEVERITIES)}")

    def refuses(self, event_type: str, severity: str | None) -> str | None:
        """Why this filter drops the event, or None when it passes."""
        if self.events is not None and event_type not in self.events:
            return f"{event_type} is not in this sink's events"
        if (
            self.min_severity is not None
            and severity in SEVERITIES
            and SEVERITIES.index(severity) < SEVERITIES.index(self.min_severity)
        ):
            return f"severity {severity} is below {self.min_severity}"
        return None


@dataclass(frozen=True, kw_only=True)
class SlackConfig:
    token: Secret
    channel: str
    # service -> channel, for services whose owners watch their own channel.
    channels_by_service: dict[str, str] = field(default_factory=dict)
    api_url: str = SLACK_API_URL
    filter: SinkFilter = field(default_factory=SinkFilter)
    # Approve/Reject buttons on cards awaiting approval: only when the analyzer can verify the
    # clicks (SLACK_SIGNING_SECRET is set).
    buttons: bool = True

    def channel_for(self, service: str) -> str:
        return self.channels_by_service.get(service, self.channel)


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    name: str
    url: str
    secret: Secret
    filter: SinkFilter = field(default_factory=SinkFilter)


@dataclass(frozen=True, kw_only=True)
class PagerDutyConfig:
    routing_key: Secret
    url: str = PAGERDUTY_EVENTS_URL


@dataclass(frozen=True, kw_only=True)
class LinksConfig:
    """Public addresses for links in messages; a link is left out when its base is unknown."""

    remediator_url: str | None = None
    grafana_url: str | None = None

    def incident(self, incident_id: int) -> str | None:
        if self.remediator_url is None:
            return None
        return f"{self.remediator_url.rstrip('/')}/api/v1/incidents/{incident_id}"

    def dashboard(self, service: str) -> str | None:
        if self.grafana_url is None:
            return None
        return f"{self.grafana_url.rstrip('/')}/d/remediator-service-health?var-service={service}"


@dataclass(frozen=True, kw_only=True)
class DeliveryConfig:
    """Retries with exponential backoff, then give up: the failure is then on the incident."""

    max_attempts: int = 10
    initial_delay: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=5)
    multiplier: float = 2.0
    timeout: float = 10.0  # one call to a sink
    lease: timedelta = timedelta(seconds=30)
    poll_interval: float = 1.0
    concurrency: int = 4

    def backoff(self, attempts: int) -> timedelta:
        """The pause after the `attempts`-th failed try."""
        seconds = self.initial_delay.total_seconds() * self.multiplier ** max(0, attempts - 1)
        return timedelta(seconds=min(seconds, self.max_delay.total_seconds()))


@dataclass(frozen=True, kw_only=True)
class NotificationConfig:
    slack: SlackConfig | None = None
    webhooks: tuple[WebhookConfig, ...] = ()
    pagerduty: PagerDutyConfig | None = None
    links: LinksConfig = field(default_factory=LinksConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    # Page (PagerDuty) when an approval has waited this long; None: never.
    approval_page_after: timedelta | None = timedelta(minutes=5)
    approval_check_interval: float = 10.0
    # Announce "recovered on its own" closes like any other event (by default they are quiet).
    announce_quiet_closes: bool = False
    # CloudEvents `source`.
    event_source: str = "/remediator"

    @property
    def enabled(self) -> bool:
        return self.slack is not None or bool(self.webhooks) or self.pagerduty is not None
