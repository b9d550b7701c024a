"""Every setting Remediator reads from the environment, parsed once into frozen config objects.

A bad value raises `SettingsError` naming the variable and what it accepts; nothing starts with a
half-understood configuration. The README's settings table lists the same variables and defaults.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from actuator import ActuatorConfig, GrafanaConfig, RetryConfig, VerifyConfig
from actuator.notifications import (
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
from analyzer import (
    ENGINE_NAMES,
    AnalyzerConfig,
    ConfirmationConfig,
    GeminiConfig,
    PolicyConfig,
    PolicyMode,
    ProcessingConfig,
    TokenPrice,
)
from analyzer.admission import (
    ALERTNAME_MAX_CHARS,
    DEFAULT_MAX_ALERTS,
    DEFAULT_MAX_ANNOTATION_CHARS,
    DEFAULT_MAX_LABEL_CHARS,
    DEFAULT_MAX_LABELS,
    AlertLimits,
)
from analyzer.cloud_monitoring import BasicCredentials, CloudMonitoringConfig
from analyzer.config import DEFAULT_EXPLAIN_PER_MINUTE
from analyzer.pubsub import GOOGLE_OAUTH2_CERTS_URL, PushAuthConfig
from analyzer.slack import SlackInteractionsConfig
from collector import CollectorConfig, HealthThresholds
from collector.sources.queries import CLOUD_MONITORING_TIMING, SCRAPE_TIMING, MetricsProfile, MetricsTiming
from incidents import LifecycleConfig, RemediatorError, StoreConfig
from incidents.outbox import EVENT_TYPES
from incidents.runtime import Secret, read_secret

GEMINI_CREDENTIALS_HINT = (
    "set GOOGLE_API_KEY (or GEMINI_API_KEY), or GOOGLE_GENAI_USE_VERTEXAI=true with GOOGLE_CLOUD_PROJECT "
    "(and GOOGLE_CLOUD_LOCATION) for application default credentials"
)


class SettingsError(RemediatorError):
    pass


def require_gemini(config: GeminiConfig | None, *, asked_by: str) -> GeminiConfig:
    """`config`, or the error that says which credentials `asked_by` (a setting or a flag) needs."""
    if config is None:
        raise SettingsError(f"{asked_by} needs Gemini credentials: {GEMINI_CREDENTIALS_HINT}")
    return config


def port_number(raw: str, *, name: str) -> int:
    """A TCP port, 1-65535; `name` is what the error names (a variable or a flag)."""
    try:
        port = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name} must be between 1 and 65535, got {raw!r}")
    return port


# A DNS name (labels of letters, digits and hyphens) or an IPv4 address.
_HOST = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _is_ip_address(raw: str) -> bool:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        return False
    return True


# Cloud Monitoring's samples become readable minutes after the change they show: verification on
# Cloud Run's platform metrics needs longer than the 3 minutes that 5-second scrapes do.
CLOUD_RUN_VERIFY_TIMEOUT = timedelta(minutes=10)
# Cloud Run allows about 10 s from SIGTERM to SIGKILL, and the whole stop must fit in 8 s.
SHUTDOWN_GRACE_CEILING = 5.0


@dataclass(frozen=True, kw_only=True)
class ListenConfig:
    """Where the HTTP servers listen; the command line's --host and --port override these."""

    host: str = "127.0.0.1"
    port: int = 8080  # remediator serve
    actuator_port: int = 8081  # remediator actuator


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def integer(self, name: str, default: int, *, low: int = 0, high: int = 2**31) -> int:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, got {raw!r}")
        return value

    def number(self, name: str, default: float, *, low: float = 0.0, high: float = 1e9) -> float:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
        return value

    def seconds(self, name: str, default: timedelta, *, low: int = 0, high: int = 2**31) -> timedelta:
        """Whole seconds, as a timedelta."""
        return timedelta(seconds=self.integer(name, int(default.total_seconds()), low=low, high=high))

    def port(self, name: str, default: int) -> int:
        raw = self.raw(name)
        return default if raw is None else port_number(raw, name=name)

    def host(self, name: str, default: str) -> str:
        raw = self.raw(name)
        if raw is None:
            return default
        if not _HOST.fullmatch(raw) and not _is_ip_address(raw):
            raise SettingsError(f"{name} must be a host name or an IP address, got {raw!r}")
        return raw

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def names(self, name: str) -> frozenset[str] | None:
        raw = self.raw(name)
        if raw is None:
            return None
        values = frozenset(part.strip() for part in raw.split(",") if part.strip())
        if not values:
            raise SettingsError(f"{name} must list at least one service when set")
        return values


def gemini_config_from_env(environ: Mapping[str, str]) -> GeminiConfig | None:
    """Gemini's settings, or None when no credentials are configured.

    The SDK's own variables decide the mode: GOOGLE_GENAI_USE_VERTEXAI=true selects Vertex AI (with
    GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION, default `global`, and application default
    credentials; or with an API key alone, Vertex AI express mode); otherwise GOOGLE_API_KEY (preferred)
    or GEMINI_API_KEY selects the Gemini API. GOOGLE_CLOUD_PROJECT alone does not: it also names the
    Cloud Run project.
    """
    env = _Env(environ)
    try:
        api_key = read_secret(environ, "GOOGLE_API_KEY") or read_secret(environ, "GEMINI_API_KEY")
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    # The SDK's rule: "true" or "1", any case.
    vertexai = (env.raw("GOOGLE_GENAI_USE_VERTEXAI") or "").lower() in ("true", "1")
    project = env.raw("GOOGLE_CLOUD_PROJECT") if vertexai else None
    if not (project or api_key):
        return None
    base_url = env.raw("GEMINI_BASE_URL")
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise SettingsError(f"GEMINI_BASE_URL must be an http:// or https:// URL, got {base_url!r}")
    input_price = env.raw("GEMINI_INPUT_USD_PER_MTOK")
    output_price = env.raw("GEMINI_OUTPUT_USD_PER_MTOK")
    if (input_price is None) != (output_price is None):
        raise SettingsError("set both GEMINI_INPUT_USD_PER_MTOK and GEMINI_OUTPUT_USD_PER_MTOK, or neither")
    price = None
    if input_price is not None:
        price = TokenPrice(
            input_usd_per_mtok=env.number("GEMINI_INPUT_USD_PER_MTOK", 0.0, high=1000),
            output_usd_per_mtok=env.number("GEMINI_OUTPUT_USD_PER_MTOK", 0.0, high=1000),
            as_of="configured",
        )
    thinking = env.raw("GEMINI_THINKING_BUDGET")
    return GeminiConfig(
        model=env.text("GEMINI_MODEL", GeminiConfig.model),
        vertexai=vertexai,
        project=project,
        location=env.text("GOOGLE_CLOUD_LOCATION", "global") if vertexai else None,
        api_key=api_key,
        base_url=base_url,
        timeout=env.number("GEMINI_TIMEOUT_SECONDS", GeminiConfig.timeout, low=0.5, high=300),
        thinking_budget=(
            env.integer("GEMINI_THINKING_BUDGET", 0, low=-1, high=32768) if thinking is not None else None
        ),
        price=price,
    )


def _lifecycle_from_env(env: _Env, *, cloud_run_metrics: bool) -> LifecycleConfig:
    """Recurrence, re-analysis and the end of escalations. With Cloud Monitoring's timing an alert
    keeps firing for minutes after a fix (5-minute windows, keep_firing_for 5m, points readable two
    minutes late) and a new revision has no figures for minutes: the defaults follow."""
    lc = LifecycleConfig()
    grace = timedelta(minutes=15) if cloud_run_metrics else lc.recurrence_grace
    settle = timedelta(minutes=3) if cloud_run_metrics else lc.change_settle
    return LifecycleConfig(
        recurrence_grace=env.seconds("REMEDIATOR_RECURRENCE_GRACE_SECONDS", grace, low=10, high=86400),
        escalated_close_grace=env.seconds(
            "REMEDIATOR_ESCALATED_CLOSE_SECONDS", lc.escalated_close_grace, high=86400
        ),
        escalated_hold_limit=env.seconds(
            "REMEDIATOR_ESCALATED_HOLD_SECONDS", lc.escalated_hold_limit, low=60, high=7 * 86400
        ),
        watch_interval=env.number("REMEDIATOR_WATCH_SECONDS", lc.watch_interval, low=0.1, high=600),
        change_settle=env.seconds("REMEDIATOR_CHANGE_SETTLE_SECONDS", settle, high=3600),
    )


@dataclass(frozen=True, kw_only=True)
class Settings:
    analyzer: AnalyzerConfig
    actuator: ActuatorConfig
    listen: ListenConfig
    # rules, gemini or hybrid. Unset: hybrid when Gemini is configured, rules otherwise.
    engine: str
    log_level: str
    log_json: bool
    gemini: GeminiConfig | None = None
    notifications: NotificationConfig = field(default_factory=NotificationConfig)

    @property
    def store(self) -> StoreConfig:
        return self.analyzer.store

    @property
    def collector(self) -> CollectorConfig:
        return self.analyzer.collector

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, migrate_on_start: bool = False, insecure_no_auth: bool = False
    ) -> Settings:
        env = _Env(environ)
        notifications, slack_interactions = notifications_from_env(environ)
        try:
            webhook_token = read_secret(environ, "WEBHOOK_TOKEN")
            api_token = read_secret(environ, "REMEDIATOR_API_TOKEN")
            read_token = read_secret(environ, "REMEDIATOR_READ_TOKEN")
            grafana_token = read_secret(environ, "GRAFANA_TOKEN")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

        cloud_run_endpoint = env.raw("CLOUD_RUN_ENDPOINT")
        # Every default is the config class's own: this only reads what the environment overrides.
        c, t, p = CollectorConfig(), HealthThresholds(), PolicyConfig()
        metrics_profile = MetricsProfile(
            env.choice("REMEDIATOR_METRICS", "app", tuple(p.value for p in MetricsProfile))
        )
        cloud_run_metrics = metrics_profile is MetricsProfile.CLOUD_RUN
        profile_timing = CLOUD_MONITORING_TIMING if cloud_run_metrics else SCRAPE_TIMING
        # Unset: the profile's own timing (collector/sources/queries.py), as CollectorConfig has it.
        metrics_timing = None
        if env.raw("METRICS_SAMPLE_PERIOD_SECONDS") or env.raw("METRICS_VISIBILITY_DELAY_SECONDS"):
            metrics_timing = MetricsTiming(
                sample_period_seconds=env.integer(
                    "METRICS_SAMPLE_PERIOD_SECONDS", profile_timing.sample_period_seconds, low=1, high=3600
                ),
                visibility_delay_seconds=env.integer(
                    "METRICS_VISIBILITY_DELAY_SECONDS", profile_timing.visibility_delay_seconds, high=3600
                ),
            )
        prometheus_auth = env.raw("PROMETHEUS_AUTH")
        thresholds = HealthThresholds(
            error_rate=env.number("ERROR_RATE_THRESHOLD", t.error_rate, low=0.0001, high=1),
            latency_p95_ms=env.number("LATENCY_P95_THRESHOLD_MS", t.latency_p95_ms, low=1, high=600_000),
            min_request_rate=env.number("MIN_REQUEST_RATE", t.min_request_rate, low=0, high=1e6),
        )
        collector = CollectorConfig(
            prometheus_url=env.text("PROMETHEUS_URL", c.prometheus_url),
            cloud_run_endpoint=cloud_run_endpoint,
            # The emulator serves Cloud Logging's entries:list beside the Admin API.
            logging_endpoint=env.raw("CLOUD_LOGGING_ENDPOINT") or cloud_run_endpoint,
            project=env.raw("CLOUD_RUN_PROJECT") or env.text("GOOGLE_CLOUD_PROJECT", c.project),
            region=env.text("CLOUD_RUN_REGION", c.region),
            window_seconds=env.integer("COLLECTOR_WINDOW_SECONDS", c.window_seconds, low=10, high=3600),
            baseline_seconds=env.integer(
                "COLLECTOR_BASELINE_SECONDS", c.baseline_seconds, low=30, high=86400
            ),
            query_timeout=env.number("COLLECTOR_TIMEOUT_SECONDS", c.query_timeout, low=0.1, high=60),
            thresholds=thresholds,
            instances_metric=env.text("COLLECTOR_INSTANCES_METRIC", c.instances_metric),
            utilization_metric=env.text("COLLECTOR_UTILIZATION_METRIC", c.utilization_metric),
            metrics_profile=metrics_profile,
            metrics_timing=metrics_timing,
            prometheus_auth=(
                env.choice("PROMETHEUS_AUTH", "none", ("google", "none")) if prometheus_auth else None
            ),
        )
        policy = PolicyConfig(
            mode=PolicyMode(env.choice("REMEDIATOR_MODE", p.mode.value, tuple(m.value for m in PolicyMode))),
            min_confidence=env.number("REMEDIATOR_MIN_CONFIDENCE", p.min_confidence, low=0, high=1),
            cooldown=env.seconds("REMEDIATOR_COOLDOWN_SECONDS", p.cooldown, high=86400),
            max_actions_per_hour=env.integer(
                "REMEDIATOR_MAX_ACTIONS_PER_HOUR", p.max_actions_per_hour, high=10_000
            ),
            max_instances_ceiling=env.integer(
                "REMEDIATOR_MAX_INSTANCES", p.max_instances_ceiling, low=1, high=1000
            ),
            allowed_services=env.names("REMEDIATOR_ALLOWED_SERVICES"),
        )
        a, pr, sc = AnalyzerConfig(), ProcessingConfig(), StoreConfig()
        analyzer = AnalyzerConfig(
            store=StoreConfig(
                url=env.raw("DATABASE_URL"),
                connect_timeout=env.number(
                    "REMEDIATOR_DB_CONNECT_TIMEOUT_SECONDS", sc.connect_timeout, low=0.1, high=300
                ),
                pool_timeout=env.number(
                    "REMEDIATOR_DB_POOL_TIMEOUT_SECONDS", sc.pool_timeout, low=0.1, high=300
                ),
                statement_timeout=env.number(
                    "REMEDIATOR_DB_STATEMENT_TIMEOUT_SECONDS", sc.statement_timeout, low=0.1, high=3600
                ),
                lock_timeout=env.number(
                    "REMEDIATOR_DB_LOCK_TIMEOUT_SECONDS", sc.lock_timeout, low=0.1, high=3600
                ),
            ),
            collector=collector,
            policy=policy,
            processing=ProcessingConfig(
                workers=env.integer("REMEDIATOR_ANALYSIS_WORKERS", pr.workers, low=1, high=64),
                confirmation=ConfirmationConfig(
                    confirm_window=env.seconds(
                        "REMEDIATOR_CONFIRM_WINDOW_SECONDS", pr.confirmation.confirm_window, high=600
                    ),
                    startup_grace=env.seconds(
                        "REMEDIATOR_STARTUP_GRACE_SECONDS", pr.confirmation.startup_grace, high=600
                    ),
                ),
            ),
            webhook_token=webhook_token,
            api_token=api_token,
            slack=slack_interactions,
            cloud_monitoring=cloud_monitoring_from_env(environ),
            max_body_bytes=env.integer(
                "REMEDIATOR_MAX_BODY_BYTES", a.max_body_bytes, low=1024, high=64 << 20
            ),
            migrate_on_start=migrate_on_start,
            read_token=read_token,
            alert_limits=AlertLimits(
                max_alerts=env.integer(
                    "REMEDIATOR_MAX_ALERTS_PER_PAYLOAD", DEFAULT_MAX_ALERTS, low=1, high=100_000
                ),
                max_labels=env.integer(
                    "REMEDIATOR_MAX_LABELS_PER_ALERT", DEFAULT_MAX_LABELS, low=4, high=10_000
                ),
                # alertname's column is the narrowest a label fills; a smaller cap would hide that rule.
                max_label_chars=env.integer(
                    "REMEDIATOR_MAX_LABEL_CHARS",
                    DEFAULT_MAX_LABEL_CHARS,
                    low=ALERTNAME_MAX_CHARS,
                    high=1 << 20,
                ),
                max_annotation_chars=env.integer(
                    "REMEDIATOR_MAX_ANNOTATION_CHARS", DEFAULT_MAX_ANNOTATION_CHARS, low=64, high=1 << 20
                ),
            ),
            explain_per_minute=env.integer(
                "REMEDIATOR_EXPLAIN_PER_MINUTE", DEFAULT_EXPLAIN_PER_MINUTE, low=1, high=100_000
            ),
            insecure_no_auth=insecure_no_auth,
            # At least a minute: a human needs that long to read the card and click.
            approval_ttl=env.seconds(
                "REMEDIATOR_APPROVAL_TTL_SECONDS", a.approval_ttl, low=60, high=7 * 86400
            ),
            lifecycle=_lifecycle_from_env(env, cloud_run_metrics=cloud_run_metrics),
        )
        grafana_url = env.raw("GRAFANA_URL")
        ac, r, v = ActuatorConfig(), RetryConfig(), VerifyConfig()
        lease = env.seconds("ACTUATOR_LEASE_SECONDS", ac.lease, low=3, high=3600)
        heartbeat = None
        if env.raw("ACTUATOR_HEARTBEAT_SECONDS") is not None:
            # Several renewals per lease, so that a failed one can be retried before it ends.
            heartbeat = env.number(
                "ACTUATOR_HEARTBEAT_SECONDS", 0.0, low=0.05, high=lease.total_seconds() / 3
            )
        actuator = ActuatorConfig(
            lease=lease,
            heartbeat_interval=heartbeat,
            poll_interval=env.number("ACTUATOR_POLL_SECONDS", ac.poll_interval, low=0.05, high=60),
            shutdown_grace=env.number(
                "ACTUATOR_SHUTDOWN_GRACE_SECONDS", ac.shutdown_grace, low=0, high=SHUTDOWN_GRACE_CEILING
            ),
            allowed_services=policy.allowed_services,
            max_instances_ceiling=policy.max_instances_ceiling,
            retry=RetryConfig(
                attempts=env.integer("CLOUD_RUN_RETRY_ATTEMPTS", r.attempts, low=1, high=20),
                call_timeout=env.number("CLOUD_RUN_CALL_TIMEOUT_SECONDS", r.call_timeout, low=0.1, high=600),
            ),
            verify=VerifyConfig(
                consecutive_checks=env.integer(
                    "VERIFY_CONSECUTIVE_CHECKS", v.consecutive_checks, low=1, high=100
                ),
                interval=env.number("VERIFY_INTERVAL_SECONDS", v.interval, low=0.1, high=600),
                window_seconds=env.integer("VERIFY_WINDOW_SECONDS", v.window_seconds, low=5, high=3600),
                # Cloud Monitoring's samples are readable minutes after the change: more time to verify.
                timeout=env.seconds(
                    "VERIFY_TIMEOUT_SECONDS",
                    CLOUD_RUN_VERIFY_TIMEOUT if cloud_run_metrics else v.timeout,
                    low=5,
                    high=86400,
                ),
                fresh_data_only=cloud_run_metrics,
            ),
            grafana=GrafanaConfig(url=grafana_url, token=grafana_token) if grafana_url else None,
        )
        listen = ListenConfig(
            host=env.host("REMEDIATOR_HOST", ListenConfig.host),
            # Cloud Run tells a container where to listen in PORT; REMEDIATOR_PORT wins when both are set.
            port=env.port("REMEDIATOR_PORT", env.port("PORT", ListenConfig.port)),
            actuator_port=env.port("ACTUATOR_PORT", ListenConfig.actuator_port),
        )
        gemini = gemini_config_from_env(environ)
        engine = env.choice("REMEDIATOR_ENGINE", "hybrid" if gemini is not None else "rules", ENGINE_NAMES)
        if engine != "rules":
            require_gemini(gemini, asked_by=f"REMEDIATOR_ENGINE={engine}")
        return cls(
            analyzer=analyzer,
            actuator=actuator,
            listen=listen,
            engine=engine,
            gemini=gemini,
            notifications=notifications,
            log_level=env.choice("REMEDIATOR_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_json=env.choice("REMEDIATOR_LOG_FORMAT", "json", ("json", "text")) == "json",
        )


# A service account's email: NAME@PROJECT.iam.gserviceaccount.com, or a Google-managed one.
_SERVICE_ACCOUNT = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def cloud_monitoring_from_env(environ: Mapping[str, str]) -> CloudMonitoringConfig | None:
    """Cloud Monitoring's webhook credentials and the Pub/Sub push's expected token; None when unset."""
    env = _Env(environ)
    token = _secret(environ, "CLOUD_MONITORING_TOKEN")
    username = env.raw("CLOUD_MONITORING_USERNAME")
    password = _secret(environ, "CLOUD_MONITORING_PASSWORD")
    if (username is None) != (password is None):
        raise SettingsError(
            "set both CLOUD_MONITORING_USERNAME and CLOUD_MONITORING_PASSWORD (or _FILE), or neither"
        )
    if username is not None and ":" in username:
        # RFC 7617: the user-id of Basic credentials cannot contain a colon.
        raise SettingsError("CLOUD_MONITORING_USERNAME cannot contain ':'")
    basic = (
        BasicCredentials(username=username, password=password)
        if username is not None and password is not None
        else None
    )
    audience = env.raw("CLOUD_MONITORING_PUBSUB_AUDIENCE")
    service_account = env.raw("CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT")
    if (audience is None) != (service_account is None):
        raise SettingsError(
            "set both CLOUD_MONITORING_PUBSUB_AUDIENCE and CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT, "
            "or neither"
        )
    if service_account is not None and _SERVICE_ACCOUNT.fullmatch(service_account) is None:
        raise SettingsError(
            "CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT must be a service account's email, "
            f"got {service_account!r}"
        )
    certs_url = _url(env, "CLOUD_MONITORING_PUBSUB_CERTS_URL", GOOGLE_OAUTH2_CERTS_URL)
    assert certs_url is not None
    pubsub = (
        PushAuthConfig(audience=audience, service_account=service_account, certs_url=certs_url)
        if audience is not None and service_account is not None
        else None
    )
    if token is None and basic is None and pubsub is None:
        return None
    return CloudMonitoringConfig(token=token, basic=basic, pubsub=pubsub)


_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_SINK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _secret(environ: Mapping[str, str], name: str) -> Secret | None:
    try:
        return read_secret(environ, name)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _url(env: _Env, name: str, default: str | None = None) -> str | None:
    value = env.raw(name) or default
    if value is not None and not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


def _sink_filter(env: _Env, prefix: str) -> SinkFilter:
    events = None
    raw = env.raw(f"{prefix}_EVENTS")
    if raw is not None:
        events = frozenset(part.strip() for part in raw.split(",") if part.strip())
        unknown = sorted(events - EVENT_TYPES)
        if unknown or not events:
            raise SettingsError(
                f"{prefix}_EVENTS lists unknown event types {', '.join(unknown) or '(none)'}; "
                f"known: {', '.join(sorted(EVENT_TYPES))}"
            )
    severity = env.raw(f"{prefix}_MIN_SEVERITY")
    if severity is not None and severity.lower() not in SEVERITIES:
        raise SettingsError(f"{prefix}_MIN_SEVERITY must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    return SinkFilter(events=events, min_severity=severity.lower() if severity else None)


def _list(env: _Env, name: str) -> frozenset[str] | None:
    raw = env.raw(name)
    if raw is None:
        return None
    values = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not values:
        raise SettingsError(f"{name} must list at least one name when set")
    return values


def _pairs(env: _Env, name: str) -> dict[str, str]:
    raw = env.raw(name)
    if raw is None:
        return {}
    pairs = {}
    for part in (piece.strip() for piece in raw.split(",") if piece.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SettingsError(f"{name} must be service=channel pairs separated by commas, got {part!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def notifications_from_env(
    environ: Mapping[str, str],
) -> tuple[NotificationConfig, SlackInteractionsConfig | None]:
    """The notification sinks (actuator side) and the Slack interactions endpoint (analyzer side)."""
    env = _Env(environ)
    bot_token = _secret(environ, "SLACK_BOT_TOKEN")
    signing_secret = _secret(environ, "SLACK_SIGNING_SECRET")
    slack_api_url = _url(env, "SLACK_API_URL", SLACK_API_URL)
    assert slack_api_url is not None
    channel = env.raw("SLACK_CHANNEL")
    if bot_token is not None and channel is None:
        raise SettingsError("SLACK_BOT_TOKEN needs SLACK_CHANNEL: the channel incident cards go to")
    if channel is not None and bot_token is None:
        raise SettingsError("SLACK_CHANNEL needs SLACK_BOT_TOKEN (or SLACK_BOT_TOKEN_FILE)")
    slack = None
    if bot_token is not None and channel is not None:
        slack = SlackConfig(
            token=bot_token,
            channel=channel,
            channels_by_service=_pairs(env, "SLACK_CHANNELS_BY_SERVICE"),
            api_url=slack_api_url,
            filter=_sink_filter(env, "SLACK"),
            buttons=signing_secret is not None,
        )

    approvers = _list(env, "SLACK_APPROVERS")
    if approvers is not None:
        malformed = sorted(a for a in approvers if not _SLACK_ID.match(a))
        if malformed:
            raise SettingsError(
                f"SLACK_APPROVERS must list Slack user ids (U..., W...) and user-group ids (S...), "
                f"got {', '.join(malformed)}"
            )
        if signing_secret is None:
            raise SettingsError("SLACK_APPROVERS needs SLACK_SIGNING_SECRET: clicks are only taken signed")
    users = frozenset(a for a in approvers or () if not a.startswith("S")) if approvers else None
    groups = frozenset(a for a in approvers or () if a.startswith("S")) if approvers else None
    if groups and bot_token is None:
        raise SettingsError("user groups in SLACK_APPROVERS need SLACK_BOT_TOKEN to look their members up")
    interactions = (
        SlackInteractionsConfig(
            signing_secret=signing_secret,
            approvers=users if approvers else None,
            approver_groups=groups if approvers else None,
            bot_token=bot_token,
            api_url=slack_api_url,
        )
        if signing_secret is not None
        else None
    )

    webhooks = []
    for name in sorted(_list(env, "EVENT_WEBHOOKS") or ()):
        if not _SINK_NAME.match(name):
            raise SettingsError(
                f"EVENT_WEBHOOKS names must be lowercase letters, digits, - and _ (at most 40), got {name!r}"
            )
        prefix = f"EVENT_WEBHOOK_{name.upper().replace('-', '_')}"
        url = _url(env, f"{prefix}_URL")
        if url is None:
            raise SettingsError(f"event webhook {name!r} needs {prefix}_URL")
        secret = _secret(environ, f"{prefix}_SECRET")
        if secret is None:
            raise SettingsError(f"event webhook {name!r} needs {prefix}_SECRET (or {prefix}_SECRET_FILE)")
        webhooks.append(WebhookConfig(name=name, url=url, secret=secret, filter=_sink_filter(env, prefix)))

    routing_key = _secret(environ, "PAGERDUTY_ROUTING_KEY")
    pagerduty_url = _url(env, "PAGERDUTY_EVENTS_URL", PAGERDUTY_EVENTS_URL)
    assert pagerduty_url is not None
    pagerduty = (
        PagerDutyConfig(routing_key=routing_key, url=pagerduty_url) if routing_key is not None else None
    )

    remediator_url = _url(env, "REMEDIATOR_PUBLIC_URL")
    grafana_url = _url(env, "GRAFANA_PUBLIC_URL") or _url(env, "GRAFANA_URL")
    page_after = env.integer("APPROVAL_PAGE_AFTER_SECONDS", 300, high=7 * 86400)
    delivery = DeliveryConfig(
        max_attempts=env.integer("NOTIFY_MAX_ATTEMPTS", 10, low=1, high=100),
        initial_delay=timedelta(seconds=env.number("NOTIFY_RETRY_INITIAL_SECONDS", 2.0, low=0.01, high=3600)),
        max_delay=timedelta(seconds=env.number("NOTIFY_RETRY_MAX_SECONDS", 300.0, low=0.01, high=86400)),
        timeout=env.number("NOTIFY_TIMEOUT_SECONDS", 10.0, low=0.1, high=120),
        poll_interval=env.number("NOTIFY_POLL_SECONDS", 1.0, low=0.05, high=60),
    )
    notifications = NotificationConfig(
        slack=slack,
        webhooks=tuple(webhooks),
        pagerduty=pagerduty,
        links=LinksConfig(remediator_url=remediator_url, grafana_url=grafana_url),
        delivery=delivery,
        approval_page_after=timedelta(seconds=page_after) if page_after > 0 else None,
        announce_quiet_closes=env.choice("NOTIFY_QUIET_CLOSES", "false", ("true", "false")) == "true",
        event_source=remediator_url or "/remediator",
    )
    return notifications, interactions
