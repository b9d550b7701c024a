"""Typed application keys: the analyzer's shared state, never module globals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from incidents import Store

if TYPE_CHECKING:
    from analyzer.approvals import ApprovalRules
    from analyzer.config import AnalyzerConfig
    from analyzer.explain import Explainer
    from analyzer.metrics import AnalyzerMetrics
    from analyzer.processing import IncidentProcessor
    from analyzer.pubsub import PushTokenVerifier
    from analyzer.ratelimit import SlidingWindowLimit
    from analyzer.slack import SlackInteractions
    from analyzer.webhook import RecentNotifications

CONFIG: web.AppKey[AnalyzerConfig] = web.AppKey("config")
STORE: web.AppKey[Store] = web.AppKey("store", Store)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
METRICS: web.AppKey[AnalyzerMetrics] = web.AppKey("metrics")
PROCESSOR: web.AppKey[IncidentProcessor] = web.AppKey("processor")
EXPLAINER: web.AppKey[Explainer] = web.AppKey("explainer")
RECENT_NOTIFICATIONS: web.AppKey[RecentNotifications] = web.AppKey("recent_notifications")
EXPLAIN_LIMIT: web.AppKey[SlidingWindowLimit] = web.AppKey("explain_limit")
SLACK: web.AppKey[SlackInteractions] = web.AppKey("slack")
PUSH_VERIFIER: web.AppKey[PushTokenVerifier] = web.AppKey("push_verifier")
APPROVALS: web.AppKey[ApprovalRules] = web.AppKey("approvals")
