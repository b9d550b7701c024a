"""What the tests know about grafana/: the dashboards, their queries, and the provisioned datasources."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DATASOURCES_DIR = GRAFANA_DIR / "provisioning" / "datasources"
DASHBOARD_PROVIDERS_DIR = GRAFANA_DIR / "provisioning" / "dashboards"

PROMETHEUS_TYPE = "prometheus"
POSTGRES_TYPE = "grafana-postgresql-datasource"
# Grafana's built-in datasource (dashboard annotations, annotations filtered by tag), spelled two ways.
BUILTIN_DATASOURCES = {("grafana", "-- Grafana --"), ("datasource", "grafana")}

# $name, ${name}, ${name:format}, [[name]], [[name:format]]
VARIABLE_REFERENCE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON, by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


@cache
def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every provisioned datasource."""
    found: dict[str, str] = {}
    for path in sorted(DATASOURCES_DIR.glob("*.yaml")):
        for datasource in load_yaml(path)["datasources"]:
            assert datasource["uid"] not in found, f"datasource uid {datasource['uid']} provisioned twice"
            found[datasource["uid"]] = datasource["type"]
    return found


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Top-level panels, rows, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_references(node: Any) -> Iterator[str]:
    """Names of the template variables any string in `node` refers to, Grafana's own (`__*`) left out."""
    if isinstance(node, str):
        for match in VARIABLE_REFERENCE.finditer(node):
            name = next(group for group in match.groups() if group)
            if not name.startswith("__"):
                yield name
    elif isinstance(node, dict):
        for value in node.values():
            yield from variable_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from variable_references(item)


def datasource_references(node: Any) -> Iterator[Any]:
    """The value of every `datasource` key in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from datasource_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_references(item)


@dataclass(frozen=True)
class Query:
    """One query a dashboard sends to a datasource, and what shows its result."""

    dashboard: str  # file name
    uid: str  # the dashboard's uid
    where: str  # "panel 3 Open incidents", "annotation Incident opened", "variable service"
    kind: str  # panel | annotation | variable
    language: str  # sql | promql | prometheus-variable
    text: str
    ref_id: str = ""
    panel_type: str | None = None
    format: str | None = None
    panel: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def title(self) -> str:
        """The panel's title, the annotation's or the variable's name."""
        return str(self.panel.get("title") or self.panel.get("name") or "")

    @property
    def test_id(self) -> str:
        suffix = f"-{self.ref_id}" if self.ref_id else ""
        return f"{self.uid}:{self.where}{suffix}"


def _language(datasource: Any) -> str:
    kind = provisioned_datasources().get(datasource["uid"]) if isinstance(datasource, dict) else None
    if kind == PROMETHEUS_TYPE:
        return "promql"
    if kind == POSTGRES_TYPE:
        return "sql"
    raise AssertionError(f"no provisioned datasource for {datasource!r}")


def _target_query(target: dict[str, Any], language: str) -> str:
    return str(target.get("rawSql" if language == "sql" else "expr", ""))


def queries() -> list[Query]:
    """Every SQL and PromQL query of every dashboard: panel targets, annotations, template variables."""
    found: list[Query] = []
    for name, dashboard in dashboards().items():
        uid = dashboard["uid"]
        for panel in all_panels(dashboard):
            if panel.get("type") == "row":
                continue
            for target in panel.get("targets", []):
                language = _language(target.get("datasource", panel.get("datasource")))
                found.append(
                    Query(
                        dashboard=name,
                        uid=uid,
                        where=f"panel {panel['id']} {panel.get('title', '')}",
                        kind="panel",
                        language=language,
                        text=_target_query(target, language),
                        ref_id=str(target.get("refId", "")),
                        panel_type=panel.get("type"),
                        format=target.get("format"),
                        panel=panel,
                    )
                )
        for annotation in dashboard.get("annotations", {}).get("list", []):
            datasource = annotation.get("datasource")
            if (datasource or {}).get("uid") not in provisioned_datasources():
                continue  # Grafana's own annotations: nothing to query
            language = _language(datasource)
            found.append(
                Query(
                    dashboard=name,
                    uid=uid,
                    where=f"annotation {annotation['name']}",
                    kind="annotation",
                    language=language,
                    text=_target_query(annotation.get("target", {}), language),
                    panel=annotation,
                )
            )
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            language = _language(variable.get("datasource"))
            query = variable.get("query")
            text = (
                query.get("rawSql" if language == "sql" else "query", "")
                if isinstance(query, dict)
                else query
            )
            found.append(
                Query(
                    dashboard=name,
                    uid=uid,
                    where=f"variable {variable['name']}",
                    kind="variable",
                    language="sql" if language == "sql" else "prometheus-variable",
                    text=str(text),
                    panel=variable,
                )
            )
    return found
