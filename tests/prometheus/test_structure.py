"""The shape of prometheus/'s configs and rules, read as YAML (no binaries needed)."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from tests.prometheus.config_files import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    alerting_rules,
    by_clauses,
    load_yaml,
    on_clauses,
    recording_rules,
    rule_files,
    walk,
)

LEVEL_LABELS = {"service": {"service"}, "service_revision": {"service", "revision"}}
WINDOWS = ("30s", "1m")
REQUIRED_RECORDINGS = {
    "service:http_server_requests:rate1m",
    "service_revision:http_server_requests:rate1m",
    "service:http_server_errors:ratio_rate1m",
    "service_revision:http_server_errors:ratio_rate1m",
    "service:http_server_request_duration_seconds:p95_1m",
    "service_revision:http_server_request_duration_seconds:p95_1m",
    "service:http_server_requests:rate30s",
    "service:http_server_errors:ratio_rate30s",
    "service:http_server_request_duration_seconds:p95_30s",
}
# contracts/incident-context.md: thresholds.error_rate (a fraction), thresholds.latency_p95_ms.
ALERTS = {
    "HighErrorRate": {"severity": "critical", "threshold": "0.02"},
    "HighLatencyP95": {"severity": "warning", "threshold": "1000"},
}
DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
DURATION_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def seconds(duration: str) -> float:
    match = DURATION.match(duration)
    assert match, f"not a simple duration: {duration!r}"
    return int(match.group(1)) * DURATION_UNITS_S[match.group(2)]


def test_required_recording_rules_exist() -> None:
    assert set(recording_rules()) >= REQUIRED_RECORDINGS


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for name, rule in recording_rules().items():
        level, metric, operations = name.split(":")
        assert level in LEVEL_LABELS, name
        assert metric.startswith("http_server_"), name
        assert re.fullmatch(r"(rate|ratio_rate|p95_)(30s|1m)", operations), name
        # Aggregations keep exactly the level's labels (plus `le` where a quantile needs buckets).
        for kept in by_clauses(rule["expr"]):
            assert kept - {"le"} == LEVEL_LABELS[level], (name, kept)


def test_every_recording_exists_for_both_windows() -> None:
    names = set(recording_rules())
    for window in WINDOWS:
        other = WINDOWS[1 - WINDOWS.index(window)]
        for name in names:
            if name.endswith(window):
                assert name.removesuffix(window) + other in names, name


@pytest.mark.parametrize("level", sorted(LEVEL_LABELS))
@pytest.mark.parametrize("window", WINDOWS)
def test_ratios_divide_errors_by_requests_of_the_same_level_and_window(level: str, window: str) -> None:
    rules = recording_rules()
    ratio = rules[f"{level}:http_server_errors:ratio_rate{window}"]
    assert ratio["expr"].split() == [
        f"{level}:http_server_errors:rate{window}",
        "/",
        f"{level}:http_server_requests:rate{window}",
    ]


@pytest.mark.parametrize("window", WINDOWS)
def test_error_rate_is_zero_only_where_requests_were_counted(window: str) -> None:
    errors = recording_rules()[f"service_revision:http_server_errors:rate{window}"]["expr"]
    assert f'http_response_status_code=~"5.."}}[{window}]' in errors
    # The fallback is 0 x the same revision's measured request rate: no requests series, no 0.
    assert errors.rstrip().endswith(f"or\n0 * service_revision:http_server_requests:rate{window}")


def test_no_rule_makes_up_a_value() -> None:
    for path in rule_files():
        assert "vector(" not in path.read_text(encoding="utf-8"), path


def test_alerts_are_per_service_with_for_severity_and_annotations() -> None:
    rules = alerting_rules()
    assert set(rules) == set(ALERTS)
    for name, rule in rules.items():
        expr = rule["expr"]
        assert seconds(rule["for"]) > 0, name
        assert seconds(rule["keep_firing_for"]) > 0, name
        assert rule["labels"] == {"severity": ALERTS[name]["severity"]}, name
        # Every aggregation keeps `service`, and every join is on it: the alert carries `service`.
        assert by_clauses(expr), name
        assert all("service" in kept for kept in by_clauses(expr)), name
        assert on_clauses(expr) and all(joined == {"service"} for joined in on_clauses(expr)), name
        # A traffic gate over the alert's window.
        assert "sum by (service) (rate(http_server_request_duration_seconds_count[30s])) >= 1" in expr, name
        assert set(re.findall(r"\[(\w+)\]", expr)) == {"30s"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "threshold", "runbook_url"}, name
        assert "{{ $value" in annotations["summary"], name
        assert "{{ $value" in annotations["description"], name
        assert "{{ $labels.service }}" in annotations["description"], name
        assert annotations["threshold"] == ALERTS[name]["threshold"], name
        assert annotations["runbook_url"] == "README.md#alerts", name


def test_error_alert_thresholds() -> None:
    expr = alerting_rules()["HighErrorRate"]["expr"]
    assert "> 0.02\n" in expr
    # At least 5 errors in the window: one failed request on a quiet service never pages.
    assert re.search(
        r"increase\(http_server_request_duration_seconds_count\{[^}]*5\.\.[^}]*\}\[30s\]\)\) >= 5", expr
    )


def test_latency_alert_thresholds() -> None:
    expr = alerting_rules()["HighLatencyP95"]["expr"]
    assert "histogram_quantile(0.95," in expr
    assert ") > 1\n" in expr


def test_prometheus_config_short_interval_profile() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "5s"
    assert config["global"]["evaluation_interval"] == "5s"
    assert seconds(config["global"]["scrape_timeout"]) <= seconds(config["global"]["scrape_interval"])
    assert config["rule_files"] == ["rules/*.yml"]
    assert sorted(PROMETHEUS_DIR.glob(config["rule_files"][0])) == rule_files()


def test_prometheus_config_jobs_have_one_plain_target_each() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"cloudrun-revisions", "remediator"}

    revisions = jobs["cloudrun-revisions"]
    assert revisions["honor_labels"] is True
    assert "static_configs" not in revisions
    assert [sd["url"] for sd in revisions["http_sd_configs"]] == ["http://127.0.0.1:8090/sd/targets"]
    assert seconds(revisions["http_sd_configs"][0]["refresh_interval"]) <= 5

    remediator = jobs["remediator"]
    assert [static["targets"] for static in remediator["static_configs"]] == [["127.0.0.1:8080"]]
    assert remediator.get("metrics_path", "/metrics") == "/metrics"

    alertmanagers = config["alerting"]["alertmanagers"]
    assert [static["targets"] for am in alertmanagers for static in am["static_configs"]] == [
        ["127.0.0.1:9093"]
    ]


def test_alertmanager_routes_alerts_with_a_service_to_remediator() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    root = config["route"]
    assert root["receiver"] == "null"
    assert root["group_by"] == ["alertname", "service"]
    [route] = root["routes"]
    assert route["matchers"] == ['service=~".+"']
    assert route["receiver"] == "remediator"
    assert route["group_by"] == ["alertname", "service"]
    assert seconds(route["group_wait"]) <= 2
    assert 10 <= seconds(route["group_interval"]) <= 30
    # Short enough that a still-firing alert after a verified recovery is heard again within a
    # minute (a recurrence), long enough to stay above the webhook's 20 s memory of repeats.
    assert 20 < seconds(route["repeat_interval"]) <= 45
    assert route.get("continue", False) is False


def test_alertmanager_receivers() -> None:
    receivers = {receiver["name"]: receiver for receiver in load_yaml(ALERTMANAGER_CONFIG)["receivers"]}
    assert set(receivers) == {"null", "remediator"}
    # The null receiver has no integrations at all.
    assert receivers["null"] == {"name": "null"}
    remediator = receivers["remediator"]
    assert set(remediator) == {"name", "webhook_configs"}
    [webhook] = remediator["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:8080/api/v1/alerts"
    assert webhook["send_resolved"] is True
    assert webhook["max_alerts"] == 0
    # The token comes from a file next to the config, never from the config itself.
    assert webhook["http_config"] == {
        "authorization": {"type": "Bearer", "credentials_file": "webhook-token"}
    }


def test_alertmanager_inhibits_latency_while_errors_page() -> None:
    assert load_yaml(ALERTMANAGER_CONFIG)["inhibit_rules"] == [
        {
            "source_matchers": ['alertname="HighErrorRate"'],
            "target_matchers": ['alertname="HighLatencyP95"'],
            "equal": ["service"],
        }
    ]


def test_configs_point_only_at_loopback() -> None:
    addresses: list[tuple[str, str]] = []
    for path in (PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG):
        text = path.read_text(encoding="utf-8")
        assert "0.0.0.0" not in text, path
        assert "localhost" not in text, path
        for where, value in walk(load_yaml(path)):
            if not isinstance(value, str):
                continue
            if "://" in value:
                addresses.append((f"{path.name}:{where}", urllib.parse.urlsplit(value).hostname or ""))
            elif re.search(r"\.targets\[\d+\]$", where):
                addresses.append((f"{path.name}:{where}", value.rsplit(":", 1)[0]))
    # The SD url, two static targets, the webhook url.
    assert len(addresses) == 4, addresses
    assert [where for where, host in addresses if host != "127.0.0.1"] == []


def test_rules_link_nowhere_outside_the_repository() -> None:
    for path in rule_files():
        for where, value in walk(load_yaml(path)):
            assert not (isinstance(value, str) and "://" in value), (path.name, where)
