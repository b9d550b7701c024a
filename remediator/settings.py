"""Every setting Remediator reads from the environment, parsed once into frozen config objects.

A bad value raises `SettingsError` naming the variable and what it accepts; nothing starts with a
half-understood configuration. The README's settings table lists the same variables and defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from actuator.config import ActuatorConfig, GrafanaConfig, RetryConfig, VerifyConfig
from analyzer.app import DEFAULT_MAX_BODY_BYTES, AnalyzerConfig
from analyzer.engines.gemini import DEFAULT_MODEL, DEFAULT_TIMEOUT_SECONDS, GeminiConfig, TokenPrice
from analyzer.policy import PolicyConfig, PolicyMode
from analyzer.processing import ProcessingConfig
from collector.config import CollectorConfig, HealthThresholds
from incidents import RemediatorError
from incidents.db import StoreConfig
from incidents.secrets import read_secret

ENGINES = ("rules", "gemini", "hybrid")
GEMINI_CREDENTIALS_HINT = (
    "set GOOGLE_API_KEY (or GEMINI_API_KEY), or GOOGLE_GENAI_USE_VERTEXAI=true with GOOGLE_CLOUD_PROJECT "
    "(and GOOGLE_CLOUD_LOCATION) for application default credentials"
)


class SettingsError(RemediatorError):
    pass


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
        model=env.text("GEMINI_MODEL", DEFAULT_MODEL),
        vertexai=vertexai,
        project=project,
        location=env.text("GOOGLE_CLOUD_LOCATION", "global") if vertexai else None,
        api_key=api_key,
        base_url=base_url,
        timeout=env.number("GEMINI_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS, low=0.5, high=300),
        thinking_budget=(
            env.integer("GEMINI_THINKING_BUDGET", 0, low=-1, high=32768) if thinking is not None else None
        ),
        price=price,
    )


@dataclass(frozen=True, kw_only=True)
class Settings:
    analyzer: AnalyzerConfig
    actuator: ActuatorConfig
    # rules, gemini or hybrid. Unset: hybrid when Gemini is configured, rules otherwise.
    engine: str
    log_level: str
    log_json: bool
    gemini: GeminiConfig | None = None

    @property
    def store(self) -> StoreConfig:
        return self.analyzer.store

    @property
    def collector(self) -> CollectorConfig:
        return self.analyzer.collector

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, migrate_on_start: bool = False) -> Settings:
        env = _Env(environ)
        try:
            webhook_token = read_secret(environ, "WEBHOOK_TOKEN")
            api_token = read_secret(environ, "REMEDIATOR_API_TOKEN")
            grafana_token = read_secret(environ, "GRAFANA_TOKEN")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

        cloud_run_endpoint = env.raw("CLOUD_RUN_ENDPOINT")
        thresholds = HealthThresholds(
            error_rate=env.number("ERROR_RATE_THRESHOLD", 0.02, low=0.0001, high=1),
            latency_p95_ms=env.number("LATENCY_P95_THRESHOLD_MS", 1000, low=1, high=600_000),
            min_request_rate=env.number("MIN_REQUEST_RATE", 1.0, low=0, high=1e6),
        )
        collector = CollectorConfig(
            prometheus_url=env.text("PROMETHEUS_URL", "http://127.0.0.1:9090"),
            cloud_run_endpoint=cloud_run_endpoint,
            # The emulator serves Cloud Logging's entries:list beside the Admin API.
            logging_endpoint=env.raw("CLOUD_LOGGING_ENDPOINT") or cloud_run_endpoint,
            project=env.raw("CLOUD_RUN_PROJECT") or env.text("GOOGLE_CLOUD_PROJECT", "local"),
            region=env.text("CLOUD_RUN_REGION", "local"),
            window_seconds=env.integer("COLLECTOR_WINDOW_SECONDS", 60, low=10, high=3600),
            baseline_seconds=env.integer("COLLECTOR_BASELINE_SECONDS", 300, low=30, high=86400),
            query_timeout=env.number("COLLECTOR_TIMEOUT_SECONDS", 3.0, low=0.1, high=60),
            thresholds=thresholds,
            instances_metric=env.text("COLLECTOR_INSTANCES_METRIC", "run_container_instances"),
            utilization_metric=env.text("COLLECTOR_UTILIZATION_METRIC", "run_container_utilization_ratio"),
        )
        policy = PolicyConfig(
            mode=PolicyMode(env.choice("REMEDIATOR_MODE", "auto", tuple(m.value for m in PolicyMode))),
            min_confidence=env.number("REMEDIATOR_MIN_CONFIDENCE", 0.8, low=0, high=1),
            cooldown=timedelta(seconds=env.integer("REMEDIATOR_COOLDOWN_SECONDS", 600, high=86400)),
            max_actions_per_hour=env.integer("REMEDIATOR_MAX_ACTIONS_PER_HOUR", 10, high=10_000),
            max_instances_ceiling=env.integer("REMEDIATOR_MAX_INSTANCES", 100, low=1, high=1000),
            allowed_services=env.names("REMEDIATOR_ALLOWED_SERVICES"),
        )
        analyzer = AnalyzerConfig(
            store=StoreConfig(url=env.raw("DATABASE_URL")),
            collector=collector,
            policy=policy,
            processing=ProcessingConfig(
                workers=env.integer("REMEDIATOR_ANALYSIS_WORKERS", 4, low=1, high=64)
            ),
            webhook_token=webhook_token,
            api_token=api_token,
            max_body_bytes=env.integer(
                "REMEDIATOR_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, low=1024, high=64 << 20
            ),
            migrate_on_start=migrate_on_start,
        )
        grafana_url = env.raw("GRAFANA_URL")
        actuator = ActuatorConfig(
            lease=timedelta(seconds=env.integer("ACTUATOR_LEASE_SECONDS", 30, low=3, high=3600)),
            poll_interval=env.number("ACTUATOR_POLL_SECONDS", 0.5, low=0.05, high=60),
            retry=RetryConfig(
                attempts=env.integer("CLOUD_RUN_RETRY_ATTEMPTS", 5, low=1, high=20),
                call_timeout=env.number("CLOUD_RUN_CALL_TIMEOUT_SECONDS", 10.0, low=0.1, high=600),
            ),
            verify=VerifyConfig(
                consecutive_checks=env.integer("VERIFY_CONSECUTIVE_CHECKS", 3, low=1, high=100),
                interval=env.number("VERIFY_INTERVAL_SECONDS", 5.0, low=0.1, high=600),
                window_seconds=env.integer("VERIFY_WINDOW_SECONDS", 20, low=5, high=3600),
                timeout=timedelta(seconds=env.integer("VERIFY_TIMEOUT_SECONDS", 180, low=5, high=86400)),
            ),
            grafana=GrafanaConfig(url=grafana_url, token=grafana_token) if grafana_url else None,
        )
        gemini = gemini_config_from_env(environ)
        engine = env.choice("REMEDIATOR_ENGINE", "hybrid" if gemini is not None else "rules", ENGINES)
        if engine != "rules" and gemini is None:
            raise SettingsError(
                f"REMEDIATOR_ENGINE={engine} needs Gemini credentials: {GEMINI_CREDENTIALS_HINT}"
            )
        return cls(
            analyzer=analyzer,
            actuator=actuator,
            engine=engine,
            gemini=gemini,
            log_level=env.choice("REMEDIATOR_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_json=env.choice("REMEDIATOR_LOG_FORMAT", "json", ("json", "text")) == "json",
        )
