"""The Cloud Run alerts in their deployable forms: the GlobalRules resource holds the same rules as the
plain rule file, every Cloud Monitoring alerting policy parses as google-cloud-monitoring's
AlertPolicy and carries the same PromQL, and that PromQL runs on a real Prometheus over
platform-shaped series and fires with the `service` label Remediator needs.

AlertPolicy JSON and PrometheusQueryLanguageCondition fields (query, duration, evaluationInterval,
labels, ruleGroup, alertRule):
https://cloud.google.com/python/docs/reference/monitoring/latest/google.cloud.monitoring_v3.types.AlertPolicy.Condition.PrometheusQueryLanguageCondition
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.cloud.monitoring_v3 import AlertPolicy

from tests.prometheus.background import BackgroundProcess, LocalHTTPServer, http_get_json, wait_for
from tests.prometheus.local_stack import EXPOSITION_CONTENT_TYPE
from tests.support.real_parts import binary_or_missing, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "prometheus" / "cloud-run" / "rules" / "alerts.yml"
MONITORING = ROOT / "deploy" / "cloud-run" / "monitoring"
POLICIES = sorted((MONITORING / "policies").glob("*.json"))


def plain_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_global_rules_hold_the_same_rules_as_the_plain_file() -> None:
    document = yaml.safe_load((MONITORING / "global-rules.yaml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == "monitoring.googleapis.com/v1"
    assert document["kind"] == "GlobalRules"
    plain_groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    groups = document["spec"]["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in plain_groups]
    for group, plain in zip(groups, plain_groups, strict=True):
        assert group["rules"] == plain["rules"]
        assert group["interval"] == "60s"  # one evaluation per Cloud Monitoring sample


def test_every_rule_has_a_policy_that_parses_with_the_same_promql() -> None:
    rules = plain_rules()
    seen = set()
    for path in POLICIES:
        policy = AlertPolicy.from_json(path.read_text(encoding="utf-8"))
        assert policy.display_name.startswith("Remediator: ")
        assert policy.combiner == AlertPolicy.ConditionCombinerType.OR
        [condition] = policy.conditions
        promql = condition.condition_prometheus_query_language
        rule = rules[promql.alert_rule]
        seen.add(promql.alert_rule)
        assert promql.query == rule["expr"].strip()
        assert promql.duration.total_seconds() == 0  # as the rule's `for: 0s`
        assert promql.evaluation_interval.total_seconds() == 60
        assert dict(promql.labels) == {"severity": rule["labels"]["severity"]}
        assert promql.rule_group == "remediator-cloud-run-alerts"
        expected = (
            AlertPolicy.Severity.CRITICAL
            if rule["labels"]["severity"] == "critical"
            else AlertPolicy.Severity.WARNING
        )
        assert policy.severity == expected
        # Closed incidents are notified too, so Remediator's incident closes when the service recovers.
        prompts = set(policy.alert_strategy.notification_prompts)
        assert prompts == {
            AlertPolicy.AlertStrategy.NotificationPrompt.OPENED,
            AlertPolicy.AlertStrategy.NotificationPrompt.CLOSED,
        }
    assert seen == set(rules)


def test_a_policy_file_that_is_not_an_alert_policy_fails_to_parse(tmp_path: Path) -> None:
    document = json.loads(POLICIES[0].read_text(encoding="utf-8"))
    document["conditions"][0]["conditionPrometheusQueryLanguage"]["durationn"] = "0s"
    with pytest.raises(Exception, match="durationn"):
        AlertPolicy.from_json(json.dumps(document))


class PlatformSeries:
    """Platform-shaped counters that grow on every scrape: a bad revision (10% 5xx, every request
    between 1 and 2 s) of service `shop`, and a healthy service `cart`."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.lock = threading.Lock()

    def exposition(self) -> tuple[str, bytes]:
        with self.lock:
            self.scrapes += 1
            n = self.scrapes
        lines = []
        for service, errors, slow in (("shop", 10, True), ("cart", 0, False)):
            resource = (
                f'monitored_resource="cloud_run_revision",project_id="p",location="europe-west1",'
                f'service_name="{service}",revision_name="{service}-00002-abc",configuration_name="{service}"'
            )
            for code, klass, per in (("200", "2xx", 90), ("500", "5xx", errors)):
                count = per * n
                labels = f'{resource},response_code="{code}",response_code_class="{klass}"'
                lines.append(f"run_googleapis_com:request_count{{{labels}}} {count}")
                for le in ("50", "1000", "2000", "+Inf"):
                    inside = count if (le in ("2000", "+Inf") or not slow) else 0
                    lines.append(
                        f'run_googleapis_com:request_latencies_bucket{{{labels},le="{le}"}} {inside}'
                    )
        return EXPOSITION_CONTENT_TYPE, ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = binary_or_missing("prometheus")
    with ExitStack() as running:
        series = PlatformSeries()
        target = LocalHTTPServer({"/metrics": series.exposition})
        running.callback(target.close)
        directory = tmp_path_factory.mktemp("policies")
        config = directory / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "platform",
                            "static_configs": [{"targets": [f"127.0.0.1:{target.port}"]}],
                        }
                    ],
                }
            )
        )
        port = free_port()
        process = BackgroundProcess(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            log_path=directory / "prometheus.log",
            cwd=directory,
        )
        running.callback(process.stop)
        url = f"http://127.0.0.1:{port}"
        if not process.wait_until_ready(f"{url}/-/ready", timeout_s=30):
            pytest.fail(f"prometheus exited with {process.exit_code}:\n{process.log()}")
        yield url


def query(url: str, promql: str) -> list[dict[str, Any]]:
    document = http_get_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert document["status"] == "success", document
    return list(document["data"]["result"])


@pytest.mark.integration
@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_the_policy_promql_runs_and_fires_per_service_with_the_service_label(
    prometheus_url: str, path: Path
) -> None:
    policy = AlertPolicy.from_json(path.read_text(encoding="utf-8"))
    promql = policy.conditions[0].condition_prometheus_query_language.query
    result = wait_for(f"{path.name} to hold", lambda: query(prometheus_url, promql) or None, timeout_s=40)
    # Only the failing service, and with the label Alertmanager routes on.
    assert [(sample["metric"]["service"], sample["metric"]["service_name"]) for sample in result] == [
        ("shop", "shop")
    ]
