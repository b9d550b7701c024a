"""The files under prometheus/, loaded as data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = PROMETHEUS_DIR / "alertmanager.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"

# `by (a, b)` and `on (a)` clauses in PromQL, with the label list captured.
_BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)")
_ON_CLAUSE = re.compile(r"\bon\s*\(([^)]*)\)")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


def _rules(path: Path) -> Iterator[dict[str, Any]]:
    for group in load_yaml(path)["groups"]:
        yield from group["rules"]


def alerting_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for path in rule_files() for rule in _rules(path) if "alert" in rule}


def recording_rules() -> dict[str, dict[str, Any]]:
    return {rule["record"]: rule for path in rule_files() for rule in _rules(path) if "record" in rule}


def label_lists(clause: re.Pattern[str], expr: str) -> list[set[str]]:
    return [{label.strip() for label in match.split(",") if label.strip()} for match in clause.findall(expr)]


def by_clauses(expr: str) -> list[set[str]]:
    return label_lists(_BY_CLAUSE, expr)


def on_clauses(expr: str) -> list[set[str]]:
    return label_lists(_ON_CLAUSE, expr)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar in a loaded YAML document, with a dotted path to it."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    else:
        yield path, node
