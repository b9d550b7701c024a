"""The custom role in deploy/cloud-run/remediator-role.yaml grants exactly what Remediator's code
calls: every Google API call found in the product's source is mapped to its IAM permission, and the
role must hold those and nothing more.

Permission names: https://cloud.google.com/run/docs/reference/iam/permissions (Cloud Run),
https://cloud.google.com/iam/docs/roles-permissions/logging (Cloud Logging entries.list), and
https://cloud.google.com/stackdriver/docs/managed-prometheus/query-api-ui (Managed Prometheus'
PromQL API reads through the Cloud Monitoring API: monitoring.timeSeries.list, as roles/monitoring.viewer).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "cloud-run"
# The code that runs in production. The local stack (remediator/stack.py, demo.py, localauth.py)
# only ever talks to the emulator, and demo_apps/ is not deployed.
PRODUCT = ["collector", "actuator", "analyzer", "incidents", "remediator"]
LOCAL_ONLY = {"remediator/stack.py", "remediator/demo.py", "remediator/localauth.py"}

# Each call the code can make -> (IAM permission, where it is granted).
#   project: in the custom role;  runtime-account: on each managed service's service account.
PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    "ServicesClient.get_service": [("run.services.get", "project")],
    "ServicesClient.list_services": [("run.services.list", "project")],
    "ServicesClient.create_service": [
        ("run.services.create", "project"),
        ("iam.serviceAccounts.actAs", "runtime-account"),
    ],
    # Cloud Run checks actAs on the service's identity on every update, a traffic change included.
    "ServicesClient.update_service": [
        ("run.services.update", "project"),
        ("iam.serviceAccounts.actAs", "runtime-account"),
    ],
    "ServicesClient.delete_service": [("run.services.delete", "project")],
    "RevisionsClient.get_revision": [("run.revisions.get", "project")],
    "RevisionsClient.list_revisions": [("run.revisions.list", "project")],
    "RevisionsClient.delete_revision": [("run.revisions.delete", "project")],
    # Waiting on a long-running operation polls GetOperation.
    "Operation.result": [("run.operations.get", "project")],
    "POST logging.googleapis.com/v2/entries:list": [("logging.logEntries.list", "project")],
    "Managed Prometheus /api/v1/query": [("monitoring.timeSeries.list", "project")],
    "Managed Prometheus /api/v1/query_range": [("monitoring.timeSeries.list", "project")],
}

_CLIENT_CALL = re.compile(r"\.(services|revisions)\.(\w+)\b")
_RESULT_CALL = re.compile(r"\boperation\.result\(")
_SDK_METHODS = {
    "services": {"get_service", "list_services", "create_service", "update_service", "delete_service"},
    "revisions": {"get_revision", "list_revisions", "delete_revision"},
}


def product_sources() -> dict[str, str]:
    sources = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            if relative not in LOCAL_ONLY and "/migrations/" not in relative:
                sources[relative] = path.read_text(encoding="utf-8")
    return sources


def calls_in(text: str) -> set[str]:
    calls = set()
    for attribute, method in _CLIENT_CALL.findall(text):
        if method in _SDK_METHODS[attribute]:
            calls.add(f"{'ServicesClient' if attribute == 'services' else 'RevisionsClient'}.{method}")
    if _RESULT_CALL.search(text):
        calls.add("Operation.result")
    if "/v2/entries:list" in text:
        calls.add("POST logging.googleapis.com/v2/entries:list")
    if "custom_query(" in text:
        calls.add("Managed Prometheus /api/v1/query")
    if "custom_query_range(" in text:
        calls.add("Managed Prometheus /api/v1/query_range")
    return calls


def calls_made() -> dict[str, set[str]]:
    return {path: found for path, text in product_sources().items() if (found := calls_in(text))}


def test_the_scan_finds_every_kind_of_call_the_code_makes() -> None:
    found = set().union(*calls_made().values())
    # If one of these disappears, the scan (or the code) changed: look before trusting the role test.
    assert found == {
        "ServicesClient.get_service",
        "ServicesClient.update_service",
        "RevisionsClient.get_revision",
        "RevisionsClient.list_revisions",
        "Operation.result",
        "POST logging.googleapis.com/v2/entries:list",
        "Managed Prometheus /api/v1/query",
        "Managed Prometheus /api/v1/query_range",
    }, calls_made()


def test_every_call_has_a_known_permission() -> None:
    unknown = {call for calls in calls_made().values() for call in calls if call not in PERMISSIONS}
    assert unknown == set()


def test_the_role_grants_exactly_the_permissions_the_code_needs() -> None:
    role = yaml.safe_load((DEPLOY / "remediator-role.yaml").read_text(encoding="utf-8"))
    needed = {
        permission
        for calls in calls_made().values()
        for call in calls
        for permission, where in PERMISSIONS[call]
        if where == "project"
    }
    granted = set(role["includedPermissions"])
    assert needed - granted == set(), "the role misses permissions the code needs"
    assert granted - needed == set(), "the role grants more than the code needs"
    assert role["stage"] == "GA" and role["title"]


def test_resource_level_grants_are_in_the_setup_script() -> None:
    needed = {
        permission
        for calls in calls_made().values()
        for call in calls
        for permission, where in PERMISSIONS[call]
        if where == "runtime-account"
    }
    assert needed == {"iam.serviceAccounts.actAs"}
    script = (DEPLOY / "setup.sh").read_text(encoding="utf-8")
    # roles/iam.serviceAccountUser holds iam.serviceAccounts.actAs; granted on each runtime account.
    assert re.search(
        r"service-accounts add-iam-policy-binding \"\$runtime\".*\n.*roles/iam\.serviceAccountUser", script
    )


def test_the_scan_sees_a_new_call() -> None:
    # A call the role does not cover would be found and fail the role test.
    assert calls_in("self.clients.services.delete_service(name=x)") == {"ServicesClient.delete_service"}
    assert calls_in("clients.revisions.list_revisions(parent=p)") == {"RevisionsClient.list_revisions"}
    assert calls_in("self.services.transport.close()") == set()
