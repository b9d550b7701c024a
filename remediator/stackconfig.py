"""The repository's Prometheus and Alertmanager configs, rendered for the local stack's ports.

The checked-in files under `prometheus/` carry the default ports (emulator 8090, Remediator 8080,
Alertmanager 9093). The stack loads them, replaces only the addresses, and writes them into its state
directory next to a copy of the rules and the webhook token file, so every relative path in the
configs resolves as it does in the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO_ROOT / "prometheus"
GRAFANA_DIR = REPO_ROOT / "grafana"


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
) -> Path:
    """prometheus.yml (and rules/) for the given emulator SD URL, Remediator and Alertmanager targets."""
    config = _load(source / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["cloudrun-revisions"]["http_sd_configs"][0]["url"] = sd_url
    jobs["remediator"]["static_configs"][0]["targets"] = [remediator_target]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager_target]
    config_dir.mkdir(parents=True, exist_ok=True)
    rules = config_dir / "rules"
    if rules.exists():
        shutil.rmtree(rules)
    shutil.copytree(source / "rules", rules)
    path = config_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_alertmanager_config(
    config_dir: Path, *, webhook_url: str, token: str, source: Path = PROMETHEUS_DIR
) -> Path:
    """alertmanager.yml routing to `webhook_url`, with the bearer token in its `credentials_file`."""
    config = _load(source / "alertmanager.yml")
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    webhook = receivers["remediator"]["webhook_configs"][0]
    webhook["url"] = webhook_url
    config_dir.mkdir(parents=True, exist_ok=True)
    token_file = config_dir / webhook["http_config"]["authorization"]["credentials_file"]
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    path = config_dir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
