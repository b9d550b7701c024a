"""The emulator's pure parts: scaling rule, traffic rules, update masks, images, log parsing, filters."""

from __future__ import annotations

import pytest

from demo_apps.cloudrun.codec import parse_service, render_service
from demo_apps.cloudrun.exceptions import InvalidArgument
from demo_apps.cloudrun.images import DEFAULT_IMAGES, command_for_image, image_key
from demo_apps.cloudrun.logging_api import parse_filter
from demo_apps.cloudrun.logstore import STDERR, STDOUT, LogOrigin, LogStore, parse_timestamp, severity_number
from demo_apps.cloudrun.model import (
    Capacity,
    TrafficStatus,
    TrafficTarget,
    TrafficType,
    apply_update_mask,
    effective_capacity,
    parse_traffic,
    resolve_traffic,
)
from demo_apps.cloudrun.state import Registry

ORIGIN = LogOrigin(project="local", location="local", service="shop", revision="shop-00001-abc")


@pytest.mark.parametrize(
    ("service", "template", "expected"),
    [
        ({}, {}, Capacity(0, 100, 80)),
        (
            {},
            {"maxInstanceRequestConcurrency": 10, "scaling": {"minInstanceCount": 1, "maxInstanceCount": 5}},
            Capacity(1, 5, 10),
        ),
        ({"minInstanceCount": 3}, {"scaling": {"minInstanceCount": 1}}, Capacity(3, 100, 80)),
        ({"minInstanceCount": 1}, {"scaling": {"minInstanceCount": 4}}, Capacity(4, 100, 80)),
        ({"maxInstanceCount": 7}, {"scaling": {"maxInstanceCount": 5}}, Capacity(0, 7, 80)),
        ({"maxInstanceCount": 2}, {"scaling": {"minInstanceCount": 4}}, Capacity(2, 2, 80)),
        (
            {"scalingMode": 2, "manualInstanceCount": 3},
            {"scaling": {"maxInstanceCount": 9}},
            Capacity(3, 3, 80),
        ),
        ({"scalingMode": 2}, {}, Capacity(0, 1, 80)),
    ],
)
def test_effective_capacity_combines_service_and_revision_scaling(
    service: dict, template: dict, expected: Capacity
) -> None:
    assert effective_capacity(service, template) == expected


def test_capacity_is_pushed_in_the_demo_apps_shape() -> None:
    capacity = Capacity(min_instances=1, max_instances=4, concurrency=20)
    assert capacity.as_json() == {"min_instances": 1, "max_instances": 4, "concurrency": 20}
    assert capacity.as_env() == {
        "DEMO_CONCURRENCY": "20",
        "DEMO_MIN_INSTANCES": "1",
        "DEMO_MAX_INSTANCES": "4",
    }


def test_traffic_rules() -> None:
    assert parse_traffic([]) == (TrafficTarget(TrafficType.LATEST, percent=100),)
    assert parse_traffic([{"revision": "a", "percent": 100}]) == (
        TrafficTarget(TrafficType.REVISION, "a", 100),
    )
    for bad in (
        [{"type": 1, "percent": 90}],
        [{"type": 2, "percent": 100}],
        [{"type": 1, "revision": "a", "percent": 100}],
        [{"type": 2, "revision": "a", "percent": 101}, {"type": 1, "percent": -1}],
        [{"type": 1, "percent": 50}, {"type": 1, "percent": 50}],
        [{"type": 3, "percent": 100}],
        [{"type": 2, "revision": "a", "percent": 50, "tag": "t"}, {"type": 1, "percent": 50, "tag": "t"}],
    ):
        with pytest.raises(InvalidArgument):
            parse_traffic(bad)

    targets = parse_traffic([{"type": 1, "percent": 30}, {"type": 2, "revision": "old", "percent": 70}])
    assert resolve_traffic(targets, latest_ready="new", ready=["new", "old"]) == (
        TrafficStatus(TrafficType.LATEST, "new", 30),
        TrafficStatus(TrafficType.REVISION, "old", 70),
    )
    assert resolve_traffic(targets, latest_ready="", ready=["old"]) is None
    assert resolve_traffic(targets, latest_ready="new", ready=["new"]) is None


def test_update_mask_copies_only_masked_paths() -> None:
    current = {
        "labels": {"a": "1"},
        "scaling": {"minInstanceCount": 1, "maxInstanceCount": 5},
        "template": {"x": 1},
    }
    patch = {"scaling": {"minInstanceCount": 2}, "template": {"x": 2}, "labels": {}}
    merged = apply_update_mask(current, patch, ["scaling.min_instance_count"])
    assert merged == {
        "labels": {"a": "1"},
        "scaling": {"minInstanceCount": 2, "maxInstanceCount": 5},
        "template": {"x": 1},
    }
    assert apply_update_mask(current, patch, ["scaling"])["scaling"] == {"minInstanceCount": 2}
    assert "labels" not in apply_update_mask(current, {}, ["labels"])
    assert current["scaling"] == {"minInstanceCount": 1, "maxInstanceCount": 5}


def test_registry_rejects_without_changing_anything() -> None:
    registry = Registry(project="local", location="local")
    body = parse_service({"template": {"containers": [{"image": "demo-app-a"}]}})
    change = registry.create("shop", body, uri="http://127.0.0.1:1", validate_only=False)
    assert change.new_revision is not None
    registry.mark_ready("shop", change.new_revision.name)
    service = registry.get("shop")
    generation, etag, routing = service.generation, service.etag, service.routing

    bad = parse_service(
        {
            "template": {"containers": [{"image": "demo-app-b"}]},
            "traffic": [{"type": 2, "revision": "nope", "percent": 100}],
        }
    )
    with pytest.raises(InvalidArgument):
        registry.update("shop", bad, mask=None, validate_only=False)
    assert (service.generation, service.etag, service.routing) == (generation, etag, routing)
    assert list(service.revisions) == [change.new_revision.name]

    # Enum names are accepted as well as numbers, and answers carry numbers.
    by_name = parse_service({"traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]})
    assert by_name["traffic"] == [{"type": 1, "percent": 100}]
    with pytest.raises(InvalidArgument, match="noSuchField"):
        parse_service({"noSuchField": 1})
    assert render_service({"name": "x", "ingress": 1})["ingress"] == 1


@pytest.mark.parametrize(
    ("image", "key"),
    [
        ("demo-app-a", "demo-app-a"),
        ("local/demo-app-a:latest", "demo-app-a"),
        ("us-docker.pkg.dev/p/r/demo-app-a@sha256:abc", "demo-app-a"),
        ("localhost:5000/demo-app-a:v2", "demo-app-a"),
        ("demo-app-b", "demo-app-b"),
    ],
)
def test_image_key(image: str, key: str) -> None:
    assert image_key(image) == key
    assert (command_for_image(image, DEFAULT_IMAGES) is not None) == (key == "demo-app-a")


def test_json_lines_become_structured_entries() -> None:
    store = LogStore(per_revision=3)
    record = store.append_line(
        ORIGIN,
        STDOUT,
        '{"severity":"warn","message":"slow","time":"2024-05-01T10:00:00.123456789Z",'
        '"httpRequest":{"status":503},"logging.googleapis.com/trace":"projects/p/traces/t","k":1}',
    )
    entry = record.as_entry()
    assert entry["severity"] == "WARNING"
    assert entry["timestamp"] == "2024-05-01T10:00:00.123456Z"
    assert entry["httpRequest"] == {"status": 503}
    assert entry["trace"] == "projects/p/traces/t"
    assert entry["jsonPayload"] == {"message": "slow", "k": 1}
    assert entry["logName"] == "projects/local/logs/run.googleapis.com%2Fstdout"

    text = store.append_line(ORIGIN, STDERR, "Traceback (most recent call last):").as_entry()
    assert text["textPayload"] == "Traceback (most recent call last):"
    assert text["severity"] == "ERROR"
    assert store.append_line(ORIGIN, STDOUT, "[1, 2]").as_entry()["severity"] == "DEFAULT"

    store.append_line(ORIGIN, STDOUT, "four")
    assert [record.text for record in store.records()] == [
        "Traceback (most recent call last):",
        "[1, 2]",
        "four",
    ]


def test_severity_and_timestamp_parsing() -> None:
    assert severity_number("error") == 500
    assert severity_number("FATAL") == 600
    assert severity_number(450) == 400
    assert severity_number("LOUD") is None
    assert parse_timestamp("2024-05-01T10:00:00Z") == 1714557600.0
    assert parse_timestamp("2024-05-01T12:00:00+02:00") == 1714557600.0
    assert parse_timestamp({"seconds": 10, "nanos": 500_000_000}) == 10.5
    assert parse_timestamp("not a time") is None


def test_filter_terms() -> None:
    terms = parse_filter(
        'resource.type="cloud_run_revision" AND severity>=ERROR timestamp>="2024-01-01T00:00:00Z"'
    )
    assert [(term.field, term.op, term.value) for term in terms] == [
        ("resource.type", "=", "cloud_run_revision"),
        ("severity", ">=", "ERROR"),
        ("timestamp", ">=", "2024-01-01T00:00:00Z"),
    ]
    assert parse_filter("") == []
    assert parse_filter('resource.labels.service_name="a \\"quoted\\" name"')[0].value == 'a "quoted" name'
