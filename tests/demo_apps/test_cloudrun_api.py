"""The emulator's Admin API, driven by the real google-cloud-run clients, with real shop revisions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from tests.demo_apps.cloudrun_harness import (
    PARENT,
    Emulator,
    google_status,
    revision_id,
    running_emulator,
    shop_template,
)

SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
FAILED = run_v2.Condition.State.CONDITION_FAILED
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


def snapshot(service: run_v2.Service) -> tuple:
    """What a rejected request must leave unchanged."""
    return (
        service.generation,
        service.etag,
        list(service.traffic),
        list(service.traffic_statuses),
        service.latest_created_revision,
        service.latest_ready_revision,
        (service.scaling.min_instance_count, service.scaling.max_instance_count),
    )


async def test_create_service_answers_a_ready_service_that_serves(emulator: Emulator) -> None:
    operation = await emulator.call(
        emulator.services.create_service,
        parent=PARENT,
        service=run_v2.Service(template=shop_template(), labels={"team": "shop"}),
        service_id="shop",
    )
    assert operation.operation.name.startswith(f"{PARENT}/operations/")
    service = await emulator.wait(operation)

    assert service.name == emulator.name("shop")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", service.uri)
    assert list(service.urls) == [service.uri]
    assert service.terminal_condition.type_ == "Ready"
    assert service.terminal_condition.state == SUCCEEDED
    assert {condition.type_: condition.state for condition in service.conditions} == {
        "RoutesReady": SUCCEEDED,
        "ConfigurationsReady": SUCCEEDED,
    }
    assert service.generation == service.observed_generation == 1
    assert not service.reconciling
    assert service.uid and service.etag
    assert service.labels["team"] == "shop"
    assert service.create_time <= service.update_time
    revision = revision_id(service.latest_ready_revision)
    assert re.fullmatch(r"shop-00001-[a-z]{3}", revision)
    assert service.latest_created_revision == service.latest_ready_revision
    assert [(status.type_, status.revision, status.percent) for status in service.traffic_statuses] == [
        (LATEST, revision, 100)
    ]
    assert [(target.type_, target.percent) for target in service.traffic] == [(LATEST, 100)]
    assert service.template.max_instance_request_concurrency == 80

    assert await emulator.get("shop") == service
    listed = await emulator.call(lambda: list(emulator.services.list_services(parent=PARENT)))
    assert [item.name for item in listed] == [service.name]
    async with emulator.http.get(service.uri + "/api/catalog") as response:
        assert response.status == 200
        assert response.headers["X-Revision"] == revision


async def test_deploys_make_revisions_listed_newest_first(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template({"RELEASE": "1"}))
    second = await emulator.deploy_env("shop", {"RELEASE": "2"})
    third = await emulator.deploy_env("shop", {"RELEASE": "3"})

    names = [revision_id(service.latest_ready_revision) for service in (first, second, third)]
    assert len(set(names)) == 3
    assert [name.split("-")[1] for name in names] == ["00001", "00002", "00003"]
    assert third.generation == 3
    assert third.traffic_statuses[0].revision == names[2]

    revisions = await emulator.list_revisions("shop")
    assert [revision_id(revision.name) for revision in revisions] == names[::-1]
    create_times = [revision.create_time for revision in revisions]
    assert create_times == sorted(create_times, reverse=True)
    assert len(set(create_times)) == 3
    for revision, release in zip(revisions, ["3", "2", "1"], strict=True):
        assert revision.service == emulator.name("shop")
        assert revision.conditions[0].type_ == "Ready"
        assert revision.conditions[0].state == SUCCEEDED
        assert revision.max_instance_request_concurrency == 80
        assert revision.scaling.max_instance_count == 100
        assert {env.name: env.value for env in revision.containers[0].env}["RELEASE"] == release
    fetched = await emulator.call(emulator.revisions.get_revision, name=revisions[1].name)
    assert fetched == revisions[1]

    # Revisions that lost their traffic keep running.
    assert len({emulator.control.process("shop", name).pid for name in names}) == 3
    assert all(emulator.control.process("shop", name).ready for name in names)


async def test_an_update_that_keeps_the_template_makes_no_revision(emulator: Emulator) -> None:
    created = await emulator.create("shop", shop_template())
    service = await emulator.get("shop")
    service.labels["tier"] = "gold"
    service.description = "coffee gear"
    updated = await emulator.wait(await emulator.call(emulator.services.update_service, service=service))

    assert updated.generation == 2
    assert updated.labels["tier"] == "gold"
    assert updated.description == "coffee gear"
    assert updated.latest_created_revision == created.latest_created_revision
    assert updated.etag != created.etag
    assert len(await emulator.list_revisions("shop")) == 1


async def test_traffic_split_50_50_is_served_within_tolerance(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template({"RELEASE": "1"}))
    second = await emulator.deploy_env("shop", {"RELEASE": "2"})
    one, two = revision_id(first.latest_ready_revision), revision_id(second.latest_ready_revision)

    split = await emulator.set_traffic("shop", {one: 50, two: 50})
    assert sorted((status.revision, status.percent) for status in split.traffic_statuses) == sorted(
        [(one, 50), (two, 50)]
    )
    counts = await emulator.served_by(split.uri, 400)
    # Binomial(400, 0.5): standard deviation 10; 140..260 is six of them.
    assert set(counts) == {f"200 {one}", f"200 {two}"}
    assert 140 <= counts[f"200 {one}"] <= 260


async def test_pinned_traffic_persists_across_a_later_deploy(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template({"RELEASE": "1"}))
    await emulator.deploy_env("shop", {"RELEASE": "2"})
    one = revision_id(first.latest_ready_revision)

    pinned = await emulator.set_traffic("shop", {one: 100})
    assert [(target.type_, target.revision, target.percent) for target in pinned.traffic] == [
        (REVISION, one, 100)
    ]
    assert await emulator.served_by(pinned.uri, 60) == {f"200 {one}": 60}

    third = await emulator.deploy_env("shop", {"RELEASE": "3"})
    assert revision_id(third.latest_ready_revision) != one
    assert [(status.revision, status.percent) for status in third.traffic_statuses] == [(one, 100)]
    assert await emulator.served_by(third.uri, 60) == {f"200 {one}": 60}

    back_to_latest = await emulator.set_traffic("shop", {"LATEST": 100})
    latest = revision_id(third.latest_ready_revision)
    assert [(status.type_, status.revision) for status in back_to_latest.traffic_statuses] == [
        (LATEST, latest)
    ]
    assert await emulator.served_by(third.uri, 30) == {f"200 {latest}": 30}


async def test_service_level_scaling_makes_no_revision_and_reaches_the_process(emulator: Emulator) -> None:
    created = await emulator.create(
        "shop", shop_template(scaling=run_v2.RevisionScaling(max_instance_count=5))
    )
    revision = revision_id(created.latest_ready_revision)
    assert await scaling_metrics(emulator, revision) == (0, 5)

    update = run_v2.Service(
        name=emulator.name("shop"), scaling=run_v2.ServiceScaling(min_instance_count=2, max_instance_count=7)
    )
    operation = await emulator.call(
        emulator.services.update_service,
        request=run_v2.UpdateServiceRequest(
            service=update, update_mask=field_mask_pb2.FieldMask(paths=["scaling"])
        ),
    )
    updated = await emulator.wait(operation)

    assert updated.scaling.min_instance_count == 2
    assert updated.scaling.max_instance_count == 7
    assert updated.generation == 2
    assert updated.latest_created_revision == created.latest_created_revision
    assert updated.template == created.template
    assert len(await emulator.list_revisions("shop")) == 1
    assert await scaling_metrics(emulator, revision) == (2, 7)


async def scaling_metrics(emulator: Emulator, revision: str) -> tuple[int, int]:
    process = emulator.control.process("shop", revision)
    async with emulator.http.get(f"http://{process.address}/metrics") as response:
        text = await response.text()
    values = {}
    for name in ("run_container_min_instances", "run_container_max_instances"):
        match = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.]+)$", text, re.MULTILINE)
        assert match, f"{name} missing from /metrics"
        values[name] = int(float(match.group(1)))
    return values["run_container_min_instances"], values["run_container_max_instances"]


async def test_a_deploy_that_fails_to_start_leaves_traffic_where_it_was(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template())
    one = revision_id(first.latest_ready_revision)

    with pytest.raises(exceptions.FailedPrecondition) as failure:
        await emulator.deploy_env("shop", {"DEMO_FAIL_STARTUP": "1"})
    assert "is not ready and cannot serve traffic" in failure.value.message
    assert "exited with code" in failure.value.message

    service = await emulator.get("shop")
    broken = revision_id(service.latest_created_revision)
    assert broken != one
    assert revision_id(service.latest_ready_revision) == one
    assert [(status.revision, status.percent) for status in service.traffic_statuses] == [(one, 100)]
    assert service.terminal_condition.state == FAILED
    assert broken in service.terminal_condition.message
    revision = await emulator.call(emulator.revisions.get_revision, name=service.latest_created_revision)
    assert revision.conditions[0].state == FAILED
    assert "exited with code" in revision.conditions[0].message
    assert await emulator.served_by(service.uri, 30) == {f"200 {one}": 30}

    with pytest.raises(exceptions.FailedPrecondition) as unknown_image:
        await emulator.create("other", shop_template(image="registry.local/nope:1"))
    assert "Image 'registry.local/nope:1' not found" in unknown_image.value.message
    other = await emulator.get("other")
    assert other.terminal_condition.state == FAILED
    assert not other.latest_ready_revision
    async with emulator.http.get(other.uri + "/") as response:
        assert response.status == 503
        assert (await response.json())["error"]["status"] == "UNAVAILABLE"


async def test_image_names_with_registry_and_tag_run_the_shop(emulator: Emulator) -> None:
    service = await emulator.create("shop", shop_template(image="us-docker.pkg.dev/p/r/demo-app-a:latest"))
    assert service.terminal_condition.state == SUCCEEDED


async def test_invalid_traffic_is_rejected_and_changes_nothing(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template({"RELEASE": "1"}))
    second = await emulator.deploy_env("shop", {"RELEASE": "2"})
    with pytest.raises(exceptions.FailedPrecondition):
        await emulator.deploy_env("shop", {"DEMO_FAIL_STARTUP": "1"})
    one, two = revision_id(first.latest_ready_revision), revision_id(second.latest_ready_revision)
    broken = revision_id((await emulator.get("shop")).latest_created_revision)
    before = snapshot(await emulator.get("shop"))
    split_before = emulator.control.router("shop").split()

    invalid = {
        "sum below 100": {one: 50, two: 40},
        "sum above 100": {one: 60, two: 60},
        "unknown revision": {"shop-99999-zzz": 100},
        "revision not ready": {broken: 100},
        "negative percent": {one: 120, two: -20},
    }
    for case, split in invalid.items():
        with pytest.raises(exceptions.BadRequest) as rejected:
            await emulator.set_traffic("shop", split)
        assert google_status(rejected.value) == "INVALID_ARGUMENT", case
        assert snapshot(await emulator.get("shop")) == before, case

    service = await emulator.get("shop")
    service.traffic.extend(
        [
            run_v2.TrafficTarget(type_=REVISION, revision=one, percent=50),
            run_v2.TrafficTarget(type_=REVISION, revision=one, percent=50),
        ]
    )
    del service.traffic[0]
    with pytest.raises(exceptions.BadRequest, match="duplicate") as duplicate:
        await emulator.call(emulator.services.update_service, service=service)
    assert google_status(duplicate.value) == "INVALID_ARGUMENT"
    assert snapshot(await emulator.get("shop")) == before
    assert emulator.control.router("shop").split() == split_before


async def test_bad_requests_get_google_errors_and_change_nothing(emulator: Emulator) -> None:
    await emulator.create("shop", shop_template())
    before = snapshot(await emulator.get("shop"))

    with pytest.raises(exceptions.Conflict) as twice:
        await emulator.create("shop", shop_template())
    assert google_status(twice.value) == "ALREADY_EXISTS"
    invalid_creates = {
        "upper case": ("Shop", shop_template()),
        "leading digit": ("1shop", shop_template()),
        "trailing hyphen": ("shop-", shop_template()),
        "too long": ("a" * 50, shop_template()),
        "underscore": ("sh_op", shop_template()),
        "reserved env": ("other", shop_template({"PORT": "1"})),
        "revision prefix": ("other", shop_template(revision="elsewhere-1")),
        "no container": ("other", run_v2.RevisionTemplate()),
        "min above max": (
            "other",
            shop_template(scaling=run_v2.RevisionScaling(min_instance_count=3, max_instance_count=2)),
        ),
    }
    for case, (service_id, template) in invalid_creates.items():
        with pytest.raises(exceptions.BadRequest) as rejected:
            await emulator.create(service_id, template)
        assert google_status(rejected.value) == "INVALID_ARGUMENT", case

    missing = emulator.name("missing")
    with pytest.raises(exceptions.NotFound):
        await emulator.get("missing")
    with pytest.raises(exceptions.NotFound):
        await emulator.call(
            emulator.services.update_service, service=run_v2.Service(name=missing, template=shop_template())
        )
    with pytest.raises(exceptions.NotFound):
        await emulator.call(emulator.services.delete_service, name=missing)
    with pytest.raises(exceptions.NotFound):
        await emulator.call(
            emulator.revisions.get_revision, name=f"{emulator.name('shop')}/revisions/shop-9-abc"
        )
    with pytest.raises(exceptions.NotFound):
        await emulator.call(
            emulator.services.get_service, name="projects/other/locations/local/services/shop"
        )

    stale = await emulator.get("shop")
    stale.etag = "not-the-etag"
    stale.labels["x"] = "y"
    with pytest.raises(exceptions.Conflict) as conflict:
        await emulator.call(emulator.services.update_service, service=stale)
    assert google_status(conflict.value) == "ABORTED"

    listed = await emulator.call(lambda: list(emulator.services.list_services(parent=PARENT)))
    assert [service.name for service in listed] == [emulator.name("shop")]
    assert snapshot(await emulator.get("shop")) == before
    assert len(await emulator.list_revisions("shop")) == 1


async def test_delete_service_stops_its_processes_and_router(emulator: Emulator) -> None:
    created = await emulator.create("shop", shop_template())
    process = emulator.control.process("shop", revision_id(created.latest_ready_revision))
    operation = await emulator.call(emulator.services.delete_service, name=emulator.name("shop"))
    deleted = await emulator.wait(operation)

    assert deleted.name == emulator.name("shop")
    assert not process.running
    with pytest.raises(exceptions.NotFound):
        await emulator.get("shop")
    assert emulator.control.router("shop") is None
    recreated = await emulator.create("shop", shop_template())
    assert recreated.uid != created.uid


async def test_validate_only_and_allow_missing(emulator: Emulator) -> None:
    operation = await emulator.call(
        emulator.services.create_service,
        request=run_v2.CreateServiceRequest(
            parent=PARENT,
            service_id="shop",
            service=run_v2.Service(template=shop_template()),
            validate_only=True,
        ),
    )
    assert operation.done()
    with pytest.raises(exceptions.NotFound):
        await emulator.get("shop")

    operation = await emulator.call(
        emulator.services.update_service,
        request=run_v2.UpdateServiceRequest(
            service=run_v2.Service(name=emulator.name("shop"), template=shop_template()), allow_missing=True
        ),
    )
    created = await emulator.wait(operation)
    assert created.terminal_condition.state == SUCCEEDED
    assert created.generation == 1


async def test_operations_can_be_fetched_listed_and_waited_for(emulator: Emulator) -> None:
    operation = await emulator.call(
        emulator.services.create_service,
        parent=PARENT,
        service=run_v2.Service(template=shop_template()),
        service_id="shop",
    )
    name = operation.operation.name
    async with emulator.http.post(f"{emulator.base_url}/v2/{name}:wait", json={"timeout": "20s"}) as response:
        waited = await response.json()
    assert waited["done"] is True
    assert waited["response"]["@type"] == "type.googleapis.com/google.cloud.run.v2.Service"
    assert waited["response"]["terminalCondition"]["state"] == int(SUCCEEDED)
    assert waited["metadata"]["@type"] == "type.googleapis.com/google.cloud.run.v2.Service"
    async with emulator.http.get(f"{emulator.base_url}/v2/{name}") as response:
        assert (await response.json())["name"] == name
    async with emulator.http.get(f"{emulator.base_url}/v2/{PARENT}/operations") as response:
        assert name in [item["name"] for item in (await response.json())["operations"]]
    async with emulator.http.delete(f"{emulator.base_url}/v2/{name}") as response:
        assert response.status == 200
    async with emulator.http.get(f"{emulator.base_url}/v2/{name}") as response:
        assert response.status == 404
        assert (await response.json())["error"]["status"] == "NOT_FOUND"


async def test_revisions_without_traffic_can_be_deleted(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template({"RELEASE": "1"}))
    second = await emulator.deploy_env("shop", {"RELEASE": "2"})
    old, serving = first.latest_ready_revision, second.latest_ready_revision
    process = emulator.control.process("shop", revision_id(old))

    with pytest.raises(exceptions.BadRequest) as refused:
        await emulator.call(emulator.revisions.delete_revision, name=serving)
    assert google_status(refused.value) == "FAILED_PRECONDITION"
    deleted = await emulator.wait(await emulator.call(emulator.revisions.delete_revision, name=old))
    assert deleted.name == old
    assert not process.running
    assert [revision.name for revision in await emulator.list_revisions("shop")] == [serving]
