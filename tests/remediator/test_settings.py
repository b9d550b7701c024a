"""Settings from the environment: defaults, parsing, and clear errors for bad values."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from analyzer.policy import PolicyMode
from remediator.settings import Settings, SettingsError


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
        }
    )
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
        (
            {"WEBHOOK_TOKEN_FILE": "/nonexistent/token"},
            "WEBHOOK_TOKEN_FILE=/nonexistent/token cannot be read",
        ),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(environ)
