"""Settings from the environment: defaults, parsing, and clear errors for bad values."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from actuator import ActuatorConfig
from analyzer import AnalyzerConfig, PolicyMode
from analyzer.admission import AlertLimits
from remediator.settings import ListenConfig, Settings, SettingsError


def test_defaults_are_safe_and_local() -> None:
    settings = Settings.from_env({})
    assert settings.engine == "rules"
    assert settings.analyzer.policy.mode is PolicyMode.AUTO
    assert settings.analyzer.policy.min_confidence == 0.8
    assert settings.analyzer.policy.cooldown == timedelta(minutes=10)
    assert settings.analyzer.policy.allowed_services is None
    assert settings.analyzer.webhook_token is None
    assert settings.collector.prometheus_url == "http://127.0.0.1:9090"
    assert settings.collector.cloud_run_endpoint is None
    assert settings.collector.thresholds.error_rate == 0.02
    assert settings.actuator.verify.timeout == timedelta(minutes=3)
    assert settings.actuator.grafana is None
    assert settings.store.url is None
    assert settings.analyzer.read_token is None
    assert settings.analyzer.alert_limits == AlertLimits(
        max_alerts=500, max_labels=64, max_label_chars=1024, max_annotation_chars=4096
    )
    assert settings.analyzer.explain_per_minute == 10
    assert settings.analyzer.insecure_no_auth is False


def test_every_default_is_the_config_classes_own() -> None:
    settings = Settings.from_env({})
    assert settings.analyzer == AnalyzerConfig()
    assert settings.actuator == ActuatorConfig()
    assert settings.listen == ListenConfig()
    assert (settings.listen.host, settings.listen.port, settings.listen.actuator_port) == (
        "127.0.0.1",
        8080,
        8081,
    )


def test_listen_address_from_the_environment() -> None:
    listen = Settings.from_env(
        {"REMEDIATOR_HOST": "::1", "REMEDIATOR_PORT": "9000", "ACTUATOR_PORT": "9001"}
    ).listen
    assert (listen.host, listen.port, listen.actuator_port) == ("::1", 9000, 9001)
    assert Settings.from_env({"REMEDIATOR_HOST": "remediator.internal"}).listen.host == "remediator.internal"


def test_every_setting_is_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@db/remediator",
            "WEBHOOK_TOKEN_FILE": str(token_file),
            "REMEDIATOR_API_TOKEN": "api",
            "REMEDIATOR_MODE": "dry-run",
            "REMEDIATOR_MIN_CONFIDENCE": "0.9",
            "REMEDIATOR_COOLDOWN_SECONDS": "60",
            "REMEDIATOR_MAX_ACTIONS_PER_HOUR": "3",
            "REMEDIATOR_MAX_INSTANCES": "20",
            "REMEDIATOR_ALLOWED_SERVICES": "checkout, payments",
            "PROMETHEUS_URL": "http://prom:9090",
            "CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8090",
            "CLOUD_RUN_PROJECT": "acme",
            "CLOUD_RUN_REGION": "europe-west1",
            "ERROR_RATE_THRESHOLD": "0.05",
            "VERIFY_TIMEOUT_SECONDS": "60",
            "GRAFANA_URL": "http://127.0.0.1:3000",
            "GRAFANA_TOKEN": "glsa",
            "REMEDIATOR_LOG_FORMAT": "text",
            "REMEDIATOR_READ_TOKEN": "reader",
            "REMEDIATOR_MAX_ALERTS_PER_PAYLOAD": "50",
            "REMEDIATOR_MAX_LABELS_PER_ALERT": "20",
            "REMEDIATOR_MAX_LABEL_CHARS": "512",
            "REMEDIATOR_MAX_ANNOTATION_CHARS": "2000",
            "REMEDIATOR_EXPLAIN_PER_MINUTE": "3",
            "REMEDIATOR_APPROVAL_TTL_SECONDS": "900",
        }
    )
    assert settings.analyzer.approval_ttl == timedelta(minutes=15)
    assert settings.analyzer.read_token is not None and settings.analyzer.read_token.reveal() == "reader"
    assert settings.analyzer.alert_limits == AlertLimits(
        max_alerts=50, max_labels=20, max_label_chars=512, max_annotation_chars=2000
    )
    assert settings.analyzer.explain_per_minute == 3
    assert "reader" not in repr(settings)
    policy = settings.analyzer.policy
    assert settings.analyzer.webhook_token is not None
    assert settings.analyzer.webhook_token.reveal() == "from-a-file"
    assert (policy.mode, policy.min_confidence, policy.max_actions_per_hour) == (PolicyMode.DRY_RUN, 0.9, 3)
    assert policy.allowed_services == frozenset({"checkout", "payments"})
    assert settings.collector.logging_endpoint == "http://127.0.0.1:8090"  # the emulator serves both
    assert (settings.collector.project, settings.collector.region) == ("acme", "europe-west1")
    assert settings.collector.thresholds.error_rate == 0.05
    assert settings.actuator.grafana is not None
    assert settings.actuator.grafana.url == "http://127.0.0.1:3000"
    assert settings.log_json is False
    assert "glsa" not in repr(settings)
    assert "from-a-file" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REMEDIATOR_MODE": "yolo"}, "REMEDIATOR_MODE must be one of auto, approve, dry-run"),
        ({"REMEDIATOR_MIN_CONFIDENCE": "high"}, "REMEDIATOR_MIN_CONFIDENCE must be a number"),
        ({"REMEDIATOR_MIN_CONFIDENCE": "1.5"}, "REMEDIATOR_MIN_CONFIDENCE must be between 0 and 1"),
        ({"REMEDIATOR_COOLDOWN_SECONDS": "-1"}, "REMEDIATOR_COOLDOWN_SECONDS must be between"),
        ({"ERROR_RATE_THRESHOLD": "nan"}, "ERROR_RATE_THRESHOLD must be between"),
        ({"REMEDIATOR_ENGINE": "magic"}, "REMEDIATOR_ENGINE must be one of rules, gemini, hybrid"),
        ({"REMEDIATOR_ALLOWED_SERVICES": " , "}, "REMEDIATOR_ALLOWED_SERVICES must list at least one"),
        ({"WEBHOOK_TOKEN": "a", "WEBHOOK_TOKEN_FILE": "/x"}, "set WEBHOOK_TOKEN or WEBHOOK_TOKEN_FILE"),
        ({"REMEDIATOR_MAX_ALERTS_PER_PAYLOAD": "0"}, "REMEDIATOR_MAX_ALERTS_PER_PAYLOAD must be between 1"),
        # alertname's column holds 255 characters: a smaller label cap would hide that rule.
        ({"REMEDIATOR_MAX_LABEL_CHARS": "100"}, "REMEDIATOR_MAX_LABEL_CHARS must be between 255"),
        ({"REMEDIATOR_EXPLAIN_PER_MINUTE": "0"}, "REMEDIATOR_EXPLAIN_PER_MINUTE must be between 1"),
        ({"REMEDIATOR_APPROVAL_TTL_SECONDS": "5"}, "REMEDIATOR_APPROVAL_TTL_SECONDS must be between 60"),
        (
            {"REMEDIATOR_READ_TOKEN_FILE": "/nonexistent/r"},
            "REMEDIATOR_READ_TOKEN_FILE=/nonexistent/r cannot",
        ),
        (
            {"WEBHOOK_TOKEN_FILE": "/nonexistent/token"},
            "WEBHOOK_TOKEN_FILE=/nonexistent/token cannot be read",
        ),
        ({"REMEDIATOR_PORT": "http"}, "REMEDIATOR_PORT must be a port number, got 'http'"),
        ({"REMEDIATOR_PORT": "70000"}, "REMEDIATOR_PORT must be between 1 and 65535"),
        ({"ACTUATOR_PORT": "0"}, "ACTUATOR_PORT must be between 1 and 65535"),
        ({"REMEDIATOR_HOST": "0.0.0.0:8080"}, "REMEDIATOR_HOST must be a host name or an IP address"),
        (
            {"REMEDIATOR_ENGINE": "gemini"},
            "REMEDIATOR_ENGINE=gemini needs Gemini credentials: set GOOGLE_API_KEY",
        ),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(environ)


def test_metrics_profile_defaults_to_the_apps_own_metrics() -> None:
    settings = Settings.from_env({})
    queries = settings.collector.queries()
    assert queries.profile.value == "app"
    assert queries.timing.visibility_delay_seconds == 0
    assert settings.collector.prometheus_auth is None
    assert settings.actuator.verify.fresh_data_only is False


def test_cloud_run_metrics_profile_with_cloud_monitoring_timing() -> None:
    gmp = "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus"
    settings = Settings.from_env({"REMEDIATOR_METRICS": "cloud-run", "PROMETHEUS_URL": gmp})
    queries = settings.collector.queries()
    assert queries.profile.value == "cloud-run"
    assert (queries.timing.sample_period_seconds, queries.timing.visibility_delay_seconds) == (60, 120)
    # Samples are readable minutes late: verification waits for data from after the change.
    assert settings.actuator.verify.fresh_data_only is True
    assert settings.actuator.verify.timeout == timedelta(minutes=10)
    from collector import PrometheusSource

    source = PrometheusSource.for_collector(settings.collector)
    try:
        assert source.auth is not None  # google by default for Managed Prometheus' host
    finally:
        source.close()


def test_metrics_timing_and_prometheus_auth_are_settings() -> None:
    settings = Settings.from_env(
        {
            "REMEDIATOR_METRICS": "cloud-run",
            "METRICS_SAMPLE_PERIOD_SECONDS": "5",
            "METRICS_VISIBILITY_DELAY_SECONDS": "10",
            "PROMETHEUS_AUTH": "google",
            "VERIFY_TIMEOUT_SECONDS": "90",
        }
    )
    timing = settings.collector.queries().timing
    assert (timing.sample_period_seconds, timing.visibility_delay_seconds) == (5, 10)
    assert settings.collector.prometheus_auth == "google"
    assert settings.actuator.verify.timeout == timedelta(seconds=90)
    assert Settings.from_env({"PROMETHEUS_AUTH": "none"}).collector.prometheus_auth == "none"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REMEDIATOR_METRICS": "otel"}, "REMEDIATOR_METRICS must be one of app, cloud-run"),
        ({"PROMETHEUS_AUTH": "basic"}, "PROMETHEUS_AUTH must be one of google, none"),
        ({"METRICS_SAMPLE_PERIOD_SECONDS": "0"}, "METRICS_SAMPLE_PERIOD_SECONDS must be between 1"),
        ({"METRICS_VISIBILITY_DELAY_SECONDS": "-5"}, "METRICS_VISIBILITY_DELAY_SECONDS must be between 0"),
    ],
)
def test_bad_metrics_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_notifications_are_off_until_configured() -> None:
    settings = Settings.from_env({})
    notifications = settings.notifications
    assert (notifications.slack, notifications.webhooks, notifications.pagerduty) == (None, (), None)
    assert not notifications.enabled
    assert notifications.approval_page_after == timedelta(minutes=5)
    assert notifications.announce_quiet_closes is False
    assert notifications.links.remediator_url is None
    assert notifications.delivery.max_attempts == 10
    assert settings.analyzer.slack is None


def test_every_notification_setting_is_read(tmp_path: Path) -> None:
    secret_file = tmp_path / "signing"
    secret_file.write_text("signing-from-a-file\n")
    settings = Settings.from_env(
        {
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_SIGNING_SECRET_FILE": str(secret_file),
            "SLACK_CHANNEL": "#incidents",
            "SLACK_CHANNELS_BY_SERVICE": "payments=C0PAY, checkout = #checkout-oncall",
            "SLACK_APPROVERS": "U0ALICE,W0BOB,S0ONCALL",
            "SLACK_API_URL": "http://127.0.0.1:9999/api/",
            "SLACK_EVENTS": "opened,awaiting_approval,resolved",
            "SLACK_MIN_SEVERITY": "Warning",
            "EVENT_WEBHOOKS": "ops, audit-log",
            "EVENT_WEBHOOK_OPS_URL": "https://ops.example/hooks/remediator",
            "EVENT_WEBHOOK_OPS_SECRET": "ops-secret",
            "EVENT_WEBHOOK_OPS_EVENTS": "escalated,resolved",
            "EVENT_WEBHOOK_AUDIT_LOG_URL": "https://audit.example/in",
            "EVENT_WEBHOOK_AUDIT_LOG_SECRET": "audit-secret",
            "EVENT_WEBHOOK_AUDIT_LOG_MIN_SEVERITY": "critical",
            "PAGERDUTY_ROUTING_KEY": "R0KEY",
            "PAGERDUTY_EVENTS_URL": "http://127.0.0.1:9998/v2/enqueue",
            "APPROVAL_PAGE_AFTER_SECONDS": "0",
            "REMEDIATOR_PUBLIC_URL": "https://remediator.example",
            "GRAFANA_URL": "http://grafana.internal:3000",
            "GRAFANA_PUBLIC_URL": "https://grafana.example",
            "NOTIFY_QUIET_CLOSES": "true",
            "NOTIFY_MAX_ATTEMPTS": "4",
            "NOTIFY_RETRY_INITIAL_SECONDS": "0.5",
            "NOTIFY_RETRY_MAX_SECONDS": "60",
            "NOTIFY_TIMEOUT_SECONDS": "3",
            "NOTIFY_POLL_SECONDS": "0.2",
        }
    )
    notifications = settings.notifications
    slack = notifications.slack
    assert slack is not None
    assert (slack.channel, slack.api_url, slack.buttons) == ("#incidents", "http://127.0.0.1:9999/api/", True)
    assert slack.channel_for("payments") == "C0PAY"
    assert slack.channel_for("checkout") == "#checkout-oncall"
    assert slack.channel_for("search") == "#incidents"
    assert slack.filter.events == frozenset({"opened", "awaiting_approval", "resolved"})
    assert slack.filter.min_severity == "warning"
    ops, audit = sorted(notifications.webhooks, key=lambda webhook: webhook.name, reverse=True)
    assert (ops.name, ops.url, ops.secret.reveal()) == (
        "ops",
        "https://ops.example/hooks/remediator",
        "ops-secret",
    )
    assert ops.filter.events == frozenset({"escalated", "resolved"})
    assert (audit.name, audit.filter.min_severity, audit.filter.events) == ("audit-log", "critical", None)
    assert notifications.pagerduty is not None
    assert notifications.pagerduty.url == "http://127.0.0.1:9998/v2/enqueue"
    assert notifications.approval_page_after is None
    assert notifications.links.incident(7) == "https://remediator.example/api/v1/incidents/7"
    assert notifications.links.grafana_url == "https://grafana.example"
    assert notifications.event_source == "https://remediator.example"
    assert notifications.announce_quiet_closes is True
    delivery = notifications.delivery
    assert (delivery.max_attempts, delivery.timeout, delivery.poll_interval) == (4, 3.0, 0.2)
    assert (delivery.initial_delay, delivery.max_delay) == (timedelta(seconds=0.5), timedelta(minutes=1))
    interactions = settings.analyzer.slack
    assert interactions is not None
    assert interactions.signing_secret.reveal() == "signing-from-a-file"
    assert interactions.approvers == frozenset({"U0ALICE", "W0BOB"})
    assert interactions.approver_groups == frozenset({"S0ONCALL"})
    assert interactions.bot_token is not None and interactions.api_url == "http://127.0.0.1:9999/api/"
    for secret in ("xoxb-1", "signing-from-a-file", "ops-secret", "audit-secret", "R0KEY"):
        assert secret not in repr(settings)


def test_links_fall_back_to_grafana_url_and_buttons_need_the_signing_secret() -> None:
    settings = Settings.from_env(
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_CHANNEL": "C0INC", "GRAFANA_URL": "http://127.0.0.1:3000"}
    )
    assert settings.notifications.slack is not None
    assert settings.notifications.slack.buttons is False
    assert settings.analyzer.slack is None
    assert settings.notifications.links.dashboard("checkout") == (
        "http://127.0.0.1:3000/d/remediator-service-health?var-service=checkout"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SLACK_BOT_TOKEN": "x"}, "SLACK_BOT_TOKEN needs SLACK_CHANNEL"),
        ({"SLACK_CHANNEL": "#x"}, "SLACK_CHANNEL needs SLACK_BOT_TOKEN"),
        (
            {"SLACK_SIGNING_SECRET": "s", "SLACK_APPROVERS": "alice"},
            "SLACK_APPROVERS must list Slack user ids",
        ),
        ({"SLACK_APPROVERS": "U0ALICE"}, "SLACK_APPROVERS needs SLACK_SIGNING_SECRET"),
        ({"SLACK_SIGNING_SECRET": "s", "SLACK_APPROVERS": "S0TEAM"}, "user groups in SLACK_APPROVERS need"),
        ({"SLACK_SIGNING_SECRET": "s", "SLACK_APPROVERS": " , "}, "SLACK_APPROVERS must list at least one"),
        ({"SLACK_API_URL": "slack.com"}, "SLACK_API_URL must be an http:// or https:// URL"),
        (
            {"SLACK_BOT_TOKEN": "x", "SLACK_CHANNEL": "#x", "SLACK_EVENTS": "opened,exploded"},
            "SLACK_EVENTS lists unknown event types exploded",
        ),
        (
            {"SLACK_BOT_TOKEN": "x", "SLACK_CHANNEL": "#x", "SLACK_MIN_SEVERITY": "urgent"},
            "SLACK_MIN_SEVERITY must be one of info, warning, error, critical",
        ),
        (
            {"SLACK_BOT_TOKEN": "x", "SLACK_CHANNEL": "#x", "SLACK_CHANNELS_BY_SERVICE": "payments"},
            "SLACK_CHANNELS_BY_SERVICE must be service=channel pairs",
        ),
        ({"EVENT_WEBHOOKS": "Ops!"}, "EVENT_WEBHOOKS names must be lowercase"),
        ({"EVENT_WEBHOOKS": "ops"}, "event webhook 'ops' needs EVENT_WEBHOOK_OPS_URL"),
        (
            {"EVENT_WEBHOOKS": "ops", "EVENT_WEBHOOK_OPS_URL": "https://x"},
            "event webhook 'ops' needs EVENT_WEBHOOK_OPS_SECRET",
        ),
        ({"PAGERDUTY_ROUTING_KEY": "r", "PAGERDUTY_EVENTS_URL": "ftp://x"}, "PAGERDUTY_EVENTS_URL must be"),
        ({"REMEDIATOR_PUBLIC_URL": "remediator"}, "REMEDIATOR_PUBLIC_URL must be an http"),
        ({"APPROVAL_PAGE_AFTER_SECONDS": "-5"}, "APPROVAL_PAGE_AFTER_SECONDS must be between"),
        ({"NOTIFY_MAX_ATTEMPTS": "0"}, "NOTIFY_MAX_ATTEMPTS must be between 1"),
        ({"NOTIFY_QUIET_CLOSES": "maybe"}, "NOTIFY_QUIET_CLOSES must be one of true, false"),
        (
            {"SLACK_SIGNING_SECRET_FILE": "/nonexistent"},
            "SLACK_SIGNING_SECRET_FILE=/nonexistent cannot be read",
        ),
    ],
)
def test_bad_notification_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(environ)


def test_the_fault_confirmation_is_a_setting() -> None:
    settings = Settings.from_env(
        {"REMEDIATOR_CONFIRM_WINDOW_SECONDS": "20", "REMEDIATOR_STARTUP_GRACE_SECONDS": "45"}
    )
    confirmation = settings.analyzer.processing.confirmation
    assert confirmation.confirm_window == timedelta(seconds=20)
    assert confirmation.startup_grace == timedelta(seconds=45)
    off = Settings.from_env({"REMEDIATOR_CONFIRM_WINDOW_SECONDS": "0"}).analyzer.processing.confirmation
    assert off.confirm_window == timedelta(0)
    with pytest.raises(SettingsError, match="REMEDIATOR_STARTUP_GRACE_SECONDS must be between"):
        Settings.from_env({"REMEDIATOR_STARTUP_GRACE_SECONDS": "-5"})


def test_cloud_monitoring_is_off_until_configured_and_reads_every_setting(tmp_path: Path) -> None:
    assert Settings.from_env({}).analyzer.cloud_monitoring is None
    password = tmp_path / "password"
    password.write_text("basic-secret\n")
    settings = Settings.from_env(
        {
            "CLOUD_MONITORING_TOKEN": "query-token",
            "CLOUD_MONITORING_USERNAME": "monitoring",
            "CLOUD_MONITORING_PASSWORD_FILE": str(password),
            "CLOUD_MONITORING_PUBSUB_AUDIENCE": "https://remediator.example/api/v1/cloud-monitoring/pubsub",
            "CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT": "push@my-project.iam.gserviceaccount.com",
            "CLOUD_MONITORING_PUBSUB_CERTS_URL": "http://127.0.0.1:9999/certs",
        }
    )
    config = settings.analyzer.cloud_monitoring
    assert config is not None and config.token is not None and config.basic is not None
    assert config.token.reveal() == "query-token"
    assert (config.basic.username, config.basic.password.reveal()) == ("monitoring", "basic-secret")
    assert config.pubsub is not None
    assert config.pubsub.audience == "https://remediator.example/api/v1/cloud-monitoring/pubsub"
    assert config.pubsub.service_account == "push@my-project.iam.gserviceaccount.com"
    assert config.pubsub.certs_url == "http://127.0.0.1:9999/certs"
    assert "query-token" not in repr(settings) and "basic-secret" not in repr(settings)
    pubsub_only = Settings.from_env(
        {
            "CLOUD_MONITORING_PUBSUB_AUDIENCE": "https://r.example/push",
            "CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT": "push@p.iam.gserviceaccount.com",
        }
    ).analyzer.cloud_monitoring
    assert pubsub_only is not None and pubsub_only.pubsub is not None
    assert (pubsub_only.token, pubsub_only.basic) == (None, None)
    assert pubsub_only.pubsub.certs_url == "https://www.googleapis.com/oauth2/v1/certs"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CLOUD_MONITORING_USERNAME": "u"},
            "set both CLOUD_MONITORING_USERNAME and CLOUD_MONITORING_PASSWORD",
        ),
        (
            {"CLOUD_MONITORING_PASSWORD": "p"},
            "set both CLOUD_MONITORING_USERNAME and CLOUD_MONITORING_PASSWORD",
        ),
        (
            {"CLOUD_MONITORING_USERNAME": "a:b", "CLOUD_MONITORING_PASSWORD": "p"},
            "CLOUD_MONITORING_USERNAME cannot contain ':'",
        ),
        (
            {"CLOUD_MONITORING_TOKEN": "a", "CLOUD_MONITORING_TOKEN_FILE": "/x"},
            "set CLOUD_MONITORING_TOKEN or",
        ),
        (
            {"CLOUD_MONITORING_PUBSUB_AUDIENCE": "https://r.example"},
            "set both CLOUD_MONITORING_PUBSUB_AUDIENCE",
        ),
        (
            {
                "CLOUD_MONITORING_PUBSUB_AUDIENCE": "https://r",
                "CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT": "push",
            },
            "CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT must be a service account's email",
        ),
        (
            {"CLOUD_MONITORING_PUBSUB_CERTS_URL": "ftp://keys"},
            "CLOUD_MONITORING_PUBSUB_CERTS_URL must be an http:// or https:// URL",
        ),
    ],
)
def test_bad_cloud_monitoring_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_database_time_bounds_are_settings() -> None:
    store = Settings.from_env({}).store
    assert (store.connect_timeout, store.pool_timeout, store.statement_timeout, store.lock_timeout) == (
        5.0,
        5.0,
        5.0,
        3.0,
    )
    store = Settings.from_env(
        {
            "REMEDIATOR_DB_CONNECT_TIMEOUT_SECONDS": "2",
            "REMEDIATOR_DB_POOL_TIMEOUT_SECONDS": "1.5",
            "REMEDIATOR_DB_STATEMENT_TIMEOUT_SECONDS": "20",
            "REMEDIATOR_DB_LOCK_TIMEOUT_SECONDS": "0.5",
        }
    ).store
    assert (store.connect_timeout, store.pool_timeout, store.statement_timeout, store.lock_timeout) == (
        2.0,
        1.5,
        20.0,
        0.5,
    )
    with pytest.raises(SettingsError, match="REMEDIATOR_DB_STATEMENT_TIMEOUT_SECONDS must be between"):
        Settings.from_env({"REMEDIATOR_DB_STATEMENT_TIMEOUT_SECONDS": "0"})


def test_actuator_lease_heartbeat_and_shutdown_grace_are_settings() -> None:
    actuator = Settings.from_env({}).actuator
    assert (actuator.lease, actuator.heartbeat, actuator.shutdown_grace) == (timedelta(seconds=8), 2.0, 3.0)
    actuator = Settings.from_env(
        {
            "ACTUATOR_LEASE_SECONDS": "6",
            "ACTUATOR_HEARTBEAT_SECONDS": "0.5",
            "ACTUATOR_SHUTDOWN_GRACE_SECONDS": "1.5",
        }
    ).actuator
    assert (actuator.lease, actuator.heartbeat, actuator.shutdown_grace) == (timedelta(seconds=6), 0.5, 1.5)
    assert Settings.from_env({"ACTUATOR_LEASE_SECONDS": "6"}).actuator.heartbeat == 1.5
    with pytest.raises(SettingsError, match=r"ACTUATOR_HEARTBEAT_SECONDS must be between 0\.05 and 2"):
        Settings.from_env({"ACTUATOR_LEASE_SECONDS": "6", "ACTUATOR_HEARTBEAT_SECONDS": "3"})
    with pytest.raises(SettingsError, match="ACTUATOR_SHUTDOWN_GRACE_SECONDS must be between 0 and 5"):
        Settings.from_env({"ACTUATOR_SHUTDOWN_GRACE_SECONDS": "9"})


def test_the_actuator_checks_the_policys_bounds_again_at_execution() -> None:
    actuator = Settings.from_env(
        {"REMEDIATOR_ALLOWED_SERVICES": "checkout,payments", "REMEDIATOR_MAX_INSTANCES": "20"}
    ).actuator
    assert actuator.allowed_services == frozenset({"checkout", "payments"})
    assert actuator.max_instances_ceiling == 20
