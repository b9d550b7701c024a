"""The repository's Prometheus and Alertmanager configs, rendered for the local stack's ports.

The checked-in files under `prometheus/` carry the default ports (emulator 8090, Remediator 8080,
Alertmanager 9093). The stack loads them, replaces only the addresses, and writes them into its state
directory next to a copy of the rules and the webhook token file, so every relative path in the
configs resolves as it does in the repository.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO_ROOT / "prometheus"
GRAFANA_DIR = REPO_ROOT / "grafana"
# Rules over Cloud Run's platform metrics, sized for Cloud Monitoring's 60 s samples.
CLOUD_RUN_RULES_DIR = PROMETHEUS_DIR / "cloud-run" / "rules"
CLOUD_RUN_SAMPLE_PERIOD_S = 60.0
PLATFORM_JOB = "cloudrun-platform"
_DURATION = re.compile(r"(?P<number>\d+)(?P<unit>[smh])\b")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True, kw_only=True)
class PlatformScrape:
    """Scrape Cloud Run's platform metrics from the emulator and alert on them instead of the apps'.

    `sample_period_s` is the emulator's sampling period: the rules' windows and `for:` durations,
    written for Cloud Monitoring's 60 s, are scaled to it, and the job scrapes five times a period so
    that every point (each readable for a whole period) is seen.
    """

    target: str
    sample_period_s: float = CLOUD_RUN_SAMPLE_PERIOD_S

    @property
    def scale(self) -> float:
        return self.sample_period_s / CLOUD_RUN_SAMPLE_PERIOD_S

    @property
    def scrape_interval(self) -> str:
        return _seconds(max(1.0, self.sample_period_s / 5))


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


def scale_durations(text: str, factor: float) -> str:
    """Every PromQL range (`[5m]`) and rule duration (`for: 5m`, `keep_firing_for: 5m`) times
    `factor`, in whole seconds; `0s` stays 0s."""
    if factor == 1.0:
        return text

    def scaled(match: re.Match[str]) -> str:
        seconds = int(match["number"]) * _UNIT_SECONDS[match["unit"]]
        return "0s" if seconds == 0 else _seconds(seconds * factor)

    text = re.sub(r"\[(\d+[smh])\]", lambda m: "[" + _DURATION.sub(scaled, m[1]) + "]", text)
    return re.sub(
        r"^([ \t]*(?:for|keep_firing_for):[ \t]*)(\d+[smh])[ \t]*$",
        lambda m: m[1] + _DURATION.sub(scaled, m[2]),
        text,
        flags=re.MULTILINE,
    )


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def write_prometheus_config(
    config_dir: Path,
    *,
    sd_url: str,
    remediator_target: str,
    alertmanager_target: str,
    source: Path = PROMETHEUS_DIR,
    platform: PlatformScrape | None = None,
    extra_alertmanager_targets: Sequence[str] = (),
) -> Path:
    """prometheus.yml (and rules/) for the given emulator SD URL, Remediator and Alertmanager targets.

    With `platform`, the demo apps are not scraped at all (nothing is instrumented): the emulator's
    platform metrics are, and rules/ holds the Cloud Run rules scaled to its sampling period.
    `extra_alertmanager_targets`: the other members of an Alertmanager HA pair; Prometheus sends every
    alert to each member, as it must for a cluster (the members deduplicate notifications).
    """
    config = _load(source / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["cloudrun-revisions"]["http_sd_configs"][0]["url"] = sd_url
    jobs["remediator"]["static_configs"][0]["targets"] = [remediator_target]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        alertmanager_target,
        *extra_alertmanager_targets,
    ]
    config_dir.mkdir(parents=True, exist_ok=True)
    rules = config_dir / "rules"
    if rules.exists():
        shutil.rmtree(rules)
    if platform is None:
        shutil.copytree(source / "rules", rules)
    else:
        config["scrape_configs"] = [
            job for job in config["scrape_configs"] if job["job_name"] != "cloudrun-revisions"
        ] + [
            {
                "job_name": PLATFORM_JOB,
                "scrape_interval": platform.scrape_interval,
                "scrape_timeout": platform.scrape_interval,
                "metrics_path": "/metrics",
                # Each point carries the time it describes, not the time it was scraped.
                "honor_timestamps": True,
                "honor_labels": True,
                "static_configs": [{"targets": [platform.target]}],
            }
        ]
        rules.mkdir()
        for path in sorted((source / "cloud-run" / "rules").glob("*.yml")):
            text = scale_durations(path.read_text(encoding="utf-8"), platform.scale)
            (rules / path.name).write_text(text, encoding="utf-8")
    path = config_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_alertmanager_config(
    config_dir: Path,
    *,
    webhook_url: str,
    token: str,
    source: Path = PROMETHEUS_DIR,
    extra_webhook_urls: Sequence[str] = (),
) -> Path:
    """alertmanager.yml routing to `webhook_url`, with the bearer token in its `credentials_file`.

    `extra_webhook_urls`: more Remediator replicas; each gets every notification through its own
    copy of the webhook config (Alertmanager retries each one on its own)."""
    config = _load(source / "alertmanager.yml")
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    webhook = receivers["remediator"]["webhook_configs"][0]
    webhook["url"] = webhook_url
    for url in extra_webhook_urls:
        receivers["remediator"]["webhook_configs"].append({**copy.deepcopy(webhook), "url": url})
    config_dir.mkdir(parents=True, exist_ok=True)
    token_file = config_dir / webhook["http_config"]["authorization"]["credentials_file"]
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    path = config_dir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
