"""prometheus.yml, the rules and alertmanager.yml loaded by the real Prometheus and Alertmanager."""

from __future__ import annotations

import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.prometheus.background import ReceivedRequest, http_get, http_get_json, http_post_json, wait_for
from tests.prometheus.config_files import recording_rules
from tests.prometheus.local_stack import REVISION_LABELS, RunningAlertmanager, RunningPrometheus

pytestmark = pytest.mark.integration

# Scrapes and evaluations run every 5 s: a few rounds of each, with room for a slow machine.
SCRAPE_TIMEOUT_S = 40.0
# The 30 s window filled with scrapes, plus the same slack.
STEADY_RATE_TIMEOUT_S = 70.0
DELIVERY_TIMEOUT_S = 10.0
MAX_FIRST_DELIVERY_S = 5.0
# group_interval (10 s) plus the retry and dispatch slack.
RESOLVED_TIMEOUT_S = 30.0


def query(prometheus: RunningPrometheus, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    document = http_get_json(url)
    assert document["status"] == "success", document
    return list(document["data"]["result"])


def test_prometheus_is_ready(prometheus_server: RunningPrometheus) -> None:
    status, body = http_get(f"{prometheus_server.url}/-/ready")
    assert status == 200, body


def test_prometheus_loads_and_evaluates_every_rule(prometheus_server: RunningPrometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = http_get_json(f"{prometheus_server.url}/api/v1/rules")["data"]["groups"]
        rules = [rule | {"file": group["file"]} for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None

    rules = wait_for("every rule to be evaluated once", evaluated, timeout_s=SCRAPE_TIMEOUT_S)
    alerts = {rule["name"]: rule for rule in rules if rule["type"] == "alerting"}
    recorded = {rule["name"] for rule in rules if rule["type"] == "recording"}

    assert set(alerts) == {"HighErrorRate", "HighLatencyP95"}
    assert recorded == set(recording_rules())
    assert {
        "service:http_server_requests:rate1m",
        "service_revision:http_server_requests:rate1m",
        "service:http_server_errors:ratio_rate1m",
        "service_revision:http_server_errors:ratio_rate1m",
        "service:http_server_request_duration_seconds:p95_1m",
        "service:http_server_requests:rate30s",
        "service:http_server_errors:ratio_rate30s",
    } <= recorded
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert unhealthy == []
    assert alerts["HighErrorRate"]["duration"] == 5
    assert alerts["HighErrorRate"]["labels"] == {"severity": "critical"}
    assert alerts["HighLatencyP95"]["duration"] == 15
    assert alerts["HighLatencyP95"]["labels"] == {"severity": "warning"}
    # rule_files resolved next to the config, not in the working directory.
    rules_dir = str(prometheus_server.config_dir / "rules")
    assert {rule["file"] for rule in rules} == {f"{rules_dir}/alerts.yml", f"{rules_dir}/recording.yml"}


def test_prometheus_discovers_and_scrapes_the_revision(prometheus_server: RunningPrometheus) -> None:
    def scraped() -> dict[str, dict[str, Any]] | None:
        targets = http_get_json(f"{prometheus_server.url}/api/v1/targets")["data"]["activeTargets"]
        by_job = {target["labels"]["job"]: target for target in targets}
        healthy = set(by_job) == {"cloudrun-revisions", "remediator"} and all(
            target["health"] == "up" for target in targets
        )
        return by_job if healthy else None

    targets = wait_for("both jobs' targets to be up", scraped, timeout_s=SCRAPE_TIMEOUT_S)
    revision = targets["cloudrun-revisions"]
    assert revision["labels"].items() >= REVISION_LABELS.items()
    assert revision["scrapeUrl"].startswith("http://127.0.0.1:")
    assert revision["scrapeUrl"].endswith("/metrics")
    assert targets["remediator"]["scrapeUrl"].startswith("http://127.0.0.1:")


def test_scraped_series_carry_the_apps_own_service_and_revision(prometheus_server: RunningPrometheus) -> None:
    series = wait_for(
        "the revision's request counter",
        lambda: query(prometheus_server, "http_server_request_duration_seconds_count") or None,
        timeout_s=SCRAPE_TIMEOUT_S,
    )
    assert len(series) == 1
    labels = series[0]["metric"]
    # honor_labels: the app's own service/revision are kept as they are, never renamed to
    # exported_*, and the discovery labels the app does not set are added.
    assert [name for name in labels if name.startswith("exported_")] == []
    assert labels.items() >= REVISION_LABELS.items()
    assert labels["job"] == "cloudrun-revisions"


def test_recording_rules_run_on_scraped_traffic(prometheus_server: RunningPrometheus) -> None:
    # 100 requests per scrape, every 5 s: 20 req/s once the 30 s window is full of samples (with
    # only the first few, rate() extrapolates less and reads lower).
    def steady() -> list[dict[str, Any]] | None:
        result = query(prometheus_server, "service:http_server_requests:rate30s")
        return result if result and float(result[0]["value"][1]) >= 15 else None

    rates = wait_for("a steady request rate", steady, timeout_s=STEADY_RATE_TIMEOUT_S)
    assert [sample["metric"] for sample in rates] == [
        {"__name__": "service:http_server_requests:rate30s", "service": "demo-app-a"}
    ]
    assert float(rates[0]["value"][1]) <= 25
    # The app never answered a 5xx, so it has no 5xx series: the ratio is a measured 0.
    ratios = query(prometheus_server, 'service:http_server_errors:ratio_rate30s{service="demo-app-a"}')
    assert [float(sample["value"][1]) for sample in ratios] == [0.0]


def alert(alertname: str, *, service: str | None, severity: str, ends_in: timedelta) -> dict[str, Any]:
    now = datetime.now(UTC)
    labels = {"alertname": alertname, "severity": severity}
    if service is not None:
        labels["service"] = service
    return {
        "labels": labels,
        "annotations": {"summary": f"{alertname} from the test"},
        # As Prometheus sends it: starting when it fired. (Alertmanager flushes a new group at once,
        # skipping group_wait, for an alert that started more than group_wait ago.)
        "startsAt": now.isoformat(),
        "endsAt": (now + ends_in).isoformat(),
    }


def post_alerts(alertmanager: RunningAlertmanager, *alerts: dict[str, Any]) -> None:
    assert http_post_json(f"{alertmanager.url}/api/v2/alerts", list(alerts)) == 200


def delivered(
    alertmanager: RunningAlertmanager, *, alertname: str, service: str, status: str = "firing"
) -> list[ReceivedRequest]:
    return [
        post
        for post in alertmanager.webhook.posts()
        if any(
            sent["labels"].get("alertname") == alertname
            and sent["labels"].get("service") == service
            and sent["status"] == status
            for sent in post.json()["alerts"]
        )
    ]


def test_alertmanager_is_ready_with_the_config_loaded(alertmanager_server: RunningAlertmanager) -> None:
    status, body = http_get(f"{alertmanager_server.url}/-/ready")
    assert status == 200, body
    document = http_get_json(f"{alertmanager_server.url}/api/v2/status")
    loaded = yaml.safe_load(document["config"]["original"])
    assert {receiver["name"] for receiver in loaded["receivers"]} == {"null", "remediator"}
    assert loaded["route"]["receiver"] == "null"
    assert [route["receiver"] for route in loaded["route"]["routes"]] == ["remediator"]
    assert loaded["receivers"][1]["webhook_configs"][0]["url"] == alertmanager_server.webhook.url(
        "/api/v1/alerts"
    )
    # --cluster.listen-address= : no gossip port.
    assert document["cluster"]["status"] == "disabled"


def test_service_alert_reaches_remediator_with_the_bearer_token(
    alertmanager_server: RunningAlertmanager,
) -> None:
    sent = [
        alert("HighErrorRate", service="demo-app-a", severity="critical", ends_in=timedelta(minutes=5)),
        alert("AlertWithoutService", service=None, severity="critical", ends_in=timedelta(minutes=5)),
    ]
    posted_at = time.monotonic()
    post_alerts(alertmanager_server, *sent)

    posts = wait_for(
        "the webhook delivery",
        lambda: delivered(alertmanager_server, alertname="HighErrorRate", service="demo-app-a") or None,
        timeout_s=DELIVERY_TIMEOUT_S,
    )
    post = posts[0]
    # group_wait is 1 s; the rest is slack for a busy machine.
    assert post.received_at - posted_at < MAX_FIRST_DELIVERY_S
    assert post.path == "/api/v1/alerts"
    # credentials_file resolved next to alertmanager.yml (the process ran elsewhere).
    assert post.headers["authorization"] == f"Bearer {alertmanager_server.token}"
    payload = post.json()
    assert payload["version"] == "4"
    assert payload["receiver"] == "remediator"
    assert payload["status"] == "firing"
    assert payload["groupLabels"] == {"alertname": "HighErrorRate", "service": "demo-app-a"}
    assert [entry["labels"]["service"] for entry in payload["alerts"]] == ["demo-app-a"]

    # The alert without `service` lands in the null receiver and never reaches Remediator.
    groups = http_get_json(f"{alertmanager_server.url}/api/v2/alerts/groups")
    receivers = {
        group["receiver"]["name"]
        for group in groups
        if any(entry["labels"]["alertname"] == "AlertWithoutService" for entry in group["alerts"])
    }
    assert receivers == {"null"}
    assert all(
        entry["labels"]["alertname"] != "AlertWithoutService"
        for webhook_post in alertmanager_server.webhook.posts()
        for entry in webhook_post.json()["alerts"]
    )


def test_error_alert_inhibits_latency_alert_of_the_same_service(
    alertmanager_server: RunningAlertmanager,
) -> None:
    post_alerts(
        alertmanager_server,
        alert("HighErrorRate", service="demo-app-b", severity="critical", ends_in=timedelta(minutes=5)),
        alert("HighLatencyP95", service="demo-app-b", severity="warning", ends_in=timedelta(minutes=5)),
        alert("HighLatencyP95", service="demo-app-c", severity="warning", ends_in=timedelta(minutes=5)),
    )

    def states() -> dict[str, dict[str, Any]] | None:
        found = {
            entry["labels"]["service"]: entry["status"]
            for entry in http_get_json(f"{alertmanager_server.url}/api/v2/alerts")
            if entry["labels"]["alertname"] == "HighLatencyP95"
        }
        return found if found.keys() >= {"demo-app-b", "demo-app-c"} else None

    latency = wait_for("both latency alerts", states, timeout_s=DELIVERY_TIMEOUT_S)
    assert latency["demo-app-b"]["state"] == "suppressed"
    assert latency["demo-app-b"]["inhibitedBy"] != []
    assert latency["demo-app-c"]["state"] == "active"

    # The uninhibited one is delivered; by then the inhibited one would have been too.
    wait_for(
        "demo-app-c's latency alert at the webhook",
        lambda: delivered(alertmanager_server, alertname="HighLatencyP95", service="demo-app-c") or None,
        timeout_s=DELIVERY_TIMEOUT_S,
    )
    wait_for(
        "demo-app-b's error alert at the webhook",
        lambda: delivered(alertmanager_server, alertname="HighErrorRate", service="demo-app-b") or None,
        timeout_s=DELIVERY_TIMEOUT_S,
    )
    leaked = delivered(alertmanager_server, alertname="HighLatencyP95", service="demo-app-b")
    assert leaked == [], [post.json() for post in leaked]


def test_resolved_alert_is_sent_to_remediator(alertmanager_server: RunningAlertmanager) -> None:
    firing = alert("HighErrorRate", service="demo-app-d", severity="critical", ends_in=timedelta(minutes=5))
    post_alerts(alertmanager_server, firing)
    wait_for(
        "the firing delivery",
        lambda: delivered(alertmanager_server, alertname="HighErrorRate", service="demo-app-d") or None,
        timeout_s=DELIVERY_TIMEOUT_S,
    )

    resolved = firing | {"endsAt": datetime.now(UTC).isoformat()}
    post_alerts(alertmanager_server, resolved)
    posts = wait_for(
        "the resolved delivery",
        lambda: (
            delivered(alertmanager_server, alertname="HighErrorRate", service="demo-app-d", status="resolved")
            or None
        ),
        timeout_s=RESOLVED_TIMEOUT_S,
    )
    assert posts[0].json()["status"] == "resolved"
    assert posts[0].headers["authorization"] == f"Bearer {alertmanager_server.token}"
