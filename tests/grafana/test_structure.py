"""grafana/ as files: provisioning that Grafana accepts, dashboards that hang together."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from incidents import FINAL_STATUSES
from tests.grafana.dashboards import (
    BUILTIN_DATASOURCES,
    DASHBOARD_PROVIDERS_DIR,
    DASHBOARDS_DIR,
    DATASOURCES_DIR,
    POSTGRES_TYPE,
    PROMETHEUS_TYPE,
    all_panels,
    dashboards,
    datasource_references,
    load_yaml,
    provisioned_datasources,
    queries,
    variable_references,
)

EXPECTED_DASHBOARDS = {
    "remediator-incidents": "Remediator / Incidents",
    "remediator-service-health": "Remediator / Service health",
    "remediator-control-plane": "Remediator / Control plane",
}
# The schema of the dashboards Grafana 12 saves.
SCHEMA_VERSION = 41
ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
DASHBOARD_NAMES = sorted(path.name for path in DASHBOARDS_DIR.glob("*.json"))


def env_references(node: Any) -> set[str]:
    if isinstance(node, str):
        return {a or b for a, b in ENV_REFERENCE.findall(node)}
    if isinstance(node, dict):
        return set().union(*(env_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(item) for item in node))
    return set()


def test_the_datasources_have_fixed_uids_and_read_their_settings_from_the_environment() -> None:
    assert provisioned_datasources() == {"prometheus": PROMETHEUS_TYPE, "remediator-postgres": POSTGRES_TYPE}
    by_uid = {
        source["uid"]: source
        for path in DATASOURCES_DIR.glob("*.yaml")
        for source in load_yaml(path)["datasources"]
    }
    prometheus, postgres = by_uid["prometheus"], by_uid["remediator-postgres"]
    assert prometheus["url"] == "${PROMETHEUS_URL}"
    assert prometheus["isDefault"] is True and prometheus["access"] == "proxy"
    assert postgres["url"] == "${REMEDIATOR_PG_HOST}:${REMEDIATOR_PG_PORT}"
    assert postgres["user"] == "${GRAFANA_DB_USER}"
    # Grafana 10+ reads the database from jsonData; the password only from secureJsonData.
    assert postgres["jsonData"]["database"] == "${REMEDIATOR_PG_DATABASE}"
    assert postgres["jsonData"]["sslmode"] == "${REMEDIATOR_PG_SSLMODE}"
    assert postgres["secureJsonData"] == {"password": "${GRAFANA_DB_PASSWORD}"}
    assert "password" not in postgres and "database" not in postgres
    for source in by_uid.values():
        assert source["editable"] is False


def test_every_provisioning_file_is_version_1_and_uses_only_known_variables() -> None:
    known = {
        "PROMETHEUS_URL",
        "REMEDIATOR_PG_HOST",
        "REMEDIATOR_PG_PORT",
        "REMEDIATOR_PG_DATABASE",
        "REMEDIATOR_PG_SSLMODE",
        "GRAFANA_DB_USER",
        "GRAFANA_DB_PASSWORD",
        "GRAFANA_DASHBOARDS_DIR",
    }
    files = [*DATASOURCES_DIR.glob("*.yaml"), *DASHBOARD_PROVIDERS_DIR.glob("*.yaml")]
    assert len(files) == 3
    used: set[str] = set()
    for path in files:
        document = load_yaml(path)
        assert document["apiVersion"] == 1, path
        used |= env_references(document)
    assert used == known


def test_the_dashboard_provider_loads_grafana_dashboards_as_code() -> None:
    (provider,) = load_yaml(DASHBOARD_PROVIDERS_DIR / "remediator.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "${GRAFANA_DASHBOARDS_DIR}"
    assert provider["allowUiUpdates"] is False and provider["disableDeletion"] is True


def test_the_three_dashboards_exist_with_fixed_unique_uids() -> None:
    found = {dashboard["uid"]: dashboard["title"] for dashboard in dashboards().values()}
    assert found == EXPECTED_DASHBOARDS
    assert len(found) == len(dashboards())


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_dashboard_is_current_utc_and_provisionable(name: str) -> None:
    dashboard = json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))
    assert name == f"{dashboard['uid']}.json"
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["timezone"] == "utc"
    # A provisioned dashboard must not carry a database id of some other Grafana.
    assert dashboard.get("id") is None
    assert "remediator" in dashboard["tags"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_panel_ids_are_unique_including_rows_and_their_panels(name: str) -> None:
    ids = Counter(panel["id"] for panel in all_panels(dashboards()[name]))
    assert ids and all(isinstance(panel_id, int) for panel_id in ids)
    assert [panel_id for panel_id, count in ids.items() if count > 1] == []


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_panels_fit_the_grid(name: str) -> None:
    for panel in all_panels(dashboards()[name]):
        grid = panel["gridPos"]
        assert grid["w"] >= 1 and grid["h"] >= 1, panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_every_panel_has_a_query_and_rows_have_none(name: str) -> None:
    dashboard = dashboards()[name]
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            assert "targets" not in panel, panel["title"]
            if not panel["collapsed"]:
                assert panel["panels"] == [], f"expanded row {panel['title']} must not hold panels"
            continue
        assert panel.get("targets"), f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            assert (target.get("expr") or target.get("rawSql") or "").strip(), panel["title"]
            assert target.get("refId"), panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
    for panel in dashboard["panels"]:  # nested panels only inside collapsed rows
        for nested in panel.get("panels", []):
            assert nested["type"] != "row"


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_every_datasource_reference_names_a_provisioned_datasource(name: str) -> None:
    provisioned = provisioned_datasources()
    for reference in datasource_references(dashboards()[name]):
        assert isinstance(reference, dict), f"datasource referenced by name: {reference!r}"
        pair = (reference.get("type"), reference.get("uid"))
        assert pair in BUILTIN_DATASOURCES or provisioned.get(str(pair[1])) == pair[0], reference


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_a_panel_queries_one_datasource(name: str) -> None:
    for panel in all_panels(dashboards()[name]):
        if panel["type"] == "row":
            continue
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_every_variable_used_is_defined(name: str) -> None:
    dashboard = dashboards()[name]
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    used = set(variable_references(dashboard))
    assert used <= defined, f"undefined: {sorted(used - defined)}"
    assert defined <= used, f"defined but unused: {sorted(defined - used)}"


def test_variable_references_are_found_in_every_spelling() -> None:
    node = {"a": ["$one and ${two}", {"b": "${three:sqlstring} [[four]] [[five:raw]]"}], "c": "$__interval"}
    assert sorted(variable_references(node)) == ["five", "four", "one", "three", "two"]


def test_queries_cover_panels_annotations_and_variables() -> None:
    found = queries()
    kinds = Counter((query.uid, query.kind, query.language) for query in found)
    assert kinds[("remediator-incidents", "panel", "sql")] >= 10
    assert kinds[("remediator-service-health", "annotation", "sql")] == 4
    assert kinds[("remediator-service-health", "variable", "prometheus-variable")] == 2
    assert kinds[("remediator-control-plane", "panel", "promql")] >= 20
    assert all(query.text.strip() for query in found)
    assert len({query.test_id for query in found}) == len(found)


def test_the_incident_links_open_the_api_detail() -> None:
    dashboard = dashboards()["remediator-incidents.json"]
    links = [
        link
        for panel in all_panels(dashboard)
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert len(links) >= 3
    for link in links:
        assert link["url"] == "${remediator_api:raw}/api/v1/incidents/${__value.raw}"


def test_open_incidents_means_not_in_a_final_status_of_the_state_machine() -> None:
    (query,) = [q for q in queries() if q.title == "Open incidents"]
    listed = re.search(r"status NOT IN \(([^)]*)\)", query.text)
    assert listed is not None, query.text
    assert set(re.findall(r"'(\w+)'", listed.group(1))) == {status.value for status in FINAL_STATUSES}
