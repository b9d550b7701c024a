"""Outgoing notifications from the event outbox: Slack, signed CloudEvents webhooks, PagerDuty."""

from actuator.notifications.app import NOTIFIER, build_sinks, notifier_context
from actuator.notifications.base import Delivered, Notification, Sink
from actuator.notifications.config import (
    PAGERDUTY_EVENTS_URL,
    SEVERITIES,
    SLACK_API_URL,
    DeliveryConfig,
    LinksConfig,
    NotificationConfig,
    PagerDutyConfig,
    SinkFilter,
    SlackConfig,
    WebhookConfig,
)
from actuator.notifications.exceptions import DeliveryFailed
from actuator.notifications.metrics import NotificationMetrics
from actuator.notifications.pagerduty import PagerDutySink
from actuator.notifications.slack import SlackSink, render_card
from actuator.notifications.webhooks import WebhookSink, cloudevent, signature_for, verify_signature
from actuator.notifications.worker import NotificationWorker

__all__ = [
    "NOTIFIER",
    "PAGERDUTY_EVENTS_URL",
    "SEVERITIES",
    "SLACK_API_URL",
    "Delivered",
    "DeliveryConfig",
    "DeliveryFailed",
    "LinksConfig",
    "Notification",
    "NotificationConfig",
    "NotificationMetrics",
    "NotificationWorker",
    "PagerDutyConfig",
    "PagerDutySink",
    "Sink",
    "SinkFilter",
    "SlackConfig",
    "SlackSink",
    "WebhookConfig",
    "WebhookSink",
    "build_sinks",
    "cloudevent",
    "notifier_context",
    "render_card",
    "signature_for",
    "verify_signature",
]
