from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from demo_apps.shop import (
    CapacityModel,
    CapacityRejected,
    CapacitySettings,
    InstanceStartTimeout,
    NoAvailableInstance,
    ScalingBounds,
    ScalingParameterError,
    ShopConfig,
    StructuredLogger,
    create_app,
    parse_scaling_body,
)

ClientFactory = Callable[..., Awaitable[TestClient]]


def make_model(
    *,
    min_instances: int = 1,
    max_instances: int = 1,
    concurrency: int = 1,
    cold_start_s: float = 0.0,
    max_queue_wait_s: float = 1.0,
    max_queued_requests: int | None = None,
    scale_down_delay_s: float = 0.0,
) -> CapacityModel:
    return CapacityModel(
        bounds=ScalingBounds(
            min_instances=min_instances, max_instances=max_instances, concurrency=concurrency
        ),
        settings=CapacitySettings(
            service_time_s=0.0,
            cold_start_s=cold_start_s,
            max_queue_wait_s=max_queue_wait_s,
            max_queued_requests=max_queued_requests,
            target_utilization=0.65,
            scale_down_delay_s=scale_down_delay_s,
        ),
    )


async def serve(model: CapacityModel, hold_s: float) -> float | CapacityRejected:
    """One request holding its slot for `hold_s`: the seconds it queued, or why it was refused."""
    try:
        async with model.slot() as queued_s:
            await asyncio.sleep(hold_s)
            return queued_s
    except CapacityRejected as rejected:
        return rejected


def split(outcomes: list[float | CapacityRejected]) -> tuple[list[float], list[CapacityRejected]]:
    served = sorted(outcome for outcome in outcomes if isinstance(outcome, float))
    rejected = [outcome for outcome in outcomes if isinstance(outcome, CapacityRejected)]
    return served, rejected


async def test_free_slots_serve_at_once() -> None:
    model = make_model(concurrency=3)
    requests = [asyncio.ensure_future(serve(model, 0.1)) for _ in range(3)]
    await asyncio.sleep(0.02)
    snapshot = model.snapshot()
    assert (snapshot.busy, snapshot.queued, snapshot.utilization) == (3, 0, 1.0)
    assert await asyncio.gather(*requests) == [0.0, 0.0, 0.0]
    assert model.snapshot().busy == 0


async def test_saturation_queues_then_rejects_with_429_at_max_instances() -> None:
    model = make_model(concurrency=2, max_queue_wait_s=0.28)
    outcomes = await asyncio.gather(*(serve(model, 0.1) for _ in range(10)))
    served, rejected = split(outcomes)
    # Two at once, then two after one service time, two after two: latency climbs with the queue.
    assert len(served) == 6
    assert served[:2] == [0.0, 0.0]
    assert served[2] == pytest.approx(0.1, abs=0.05)
    assert served[4] == pytest.approx(0.2, abs=0.05)
    assert len(rejected) == 4
    assert all(isinstance(outcome, NoAvailableInstance) for outcome in rejected)
    assert all(outcome.queued_for_s == pytest.approx(0.28, abs=0.05) for outcome in rejected)
    assert rejected[0].message.startswith("429 Too Many Requests")
    assert model.snapshot().queued == 0


async def test_queue_is_bounded_by_count() -> None:
    model = make_model(max_queued_requests=2, max_queue_wait_s=5.0)
    requests = [asyncio.ensure_future(serve(model, 0.15)) for _ in range(5)]
    await asyncio.sleep(0.02)
    assert (model.snapshot().busy, model.snapshot().queued) == (1, 2)
    served, rejected = split(await asyncio.gather(*requests))
    assert len(served) == 3
    assert len(rejected) == 2
    assert all(outcome.queued_for_s == 0.0 for outcome in rejected)


async def test_rejection_is_503_while_the_model_could_still_scale_out() -> None:
    model = make_model(max_instances=5, max_queue_wait_s=0.1)
    served, rejected = split(await asyncio.gather(*(serve(model, 0.3) for _ in range(3))))
    assert served == [0.0]
    assert len(rejected) == 2
    assert all(isinstance(outcome, InstanceStartTimeout) for outcome in rejected)
    assert rejected[0].message.startswith("503 Service Unavailable")


async def test_more_instances_relieve_the_load() -> None:
    model = make_model(concurrency=2, max_queue_wait_s=0.1)
    served, rejected = split(await asyncio.gather(*(serve(model, 0.05) for _ in range(20))))
    assert len(rejected) >= 10
    assert max(served) > 0.03

    snapshot = model.set_bounds(ScalingBounds(min_instances=10, max_instances=10, concurrency=2))
    assert snapshot.instances == 10
    served, rejected = split(await asyncio.gather(*(serve(model, 0.05) for _ in range(20))))
    assert rejected == []
    assert served == [0.0] * 20


async def test_first_request_starts_an_instance_and_waits_for_its_cold_start() -> None:
    model = make_model(min_instances=0, max_instances=3, cold_start_s=0.1)
    assert model.snapshot().instances == 0
    request = asyncio.ensure_future(serve(model, 0.0))
    await asyncio.sleep(0.02)
    snapshot = model.snapshot()
    assert (snapshot.ready_instances, snapshot.starting_instances, snapshot.queued) == (0, 1, 1)
    assert snapshot.utilization == 1.0
    queued = await request
    assert isinstance(queued, float)
    assert queued == pytest.approx(0.1, abs=0.04)
    assert model.snapshot().ready_instances == 1


async def test_autoscaler_scales_out_to_max_after_a_cold_start() -> None:
    model = make_model(min_instances=1, max_instances=3, cold_start_s=0.1, max_queue_wait_s=2.0)
    requests = [asyncio.ensure_future(serve(model, 0.4)) for _ in range(4)]
    await asyncio.sleep(0.01)
    model.autoscale_once()
    await asyncio.sleep(0.05)
    # Demand 4 over 1 slot each at 65 % target wants 7 instances; max_instances allows 3.
    snapshot = model.autoscale_once()
    assert (snapshot.ready_instances, snapshot.starting_instances) == (1, 2)
    assert snapshot.queued == 3
    await asyncio.sleep(0.12)
    snapshot = model.snapshot()
    assert (snapshot.ready_instances, snapshot.busy, snapshot.queued) == (3, 3, 1)
    await asyncio.gather(*requests)


async def test_scale_down_waits_then_goes_one_step_at_a_time_to_min() -> None:
    model = make_model(min_instances=1, max_instances=5, scale_down_delay_s=0.2)
    model.set_bounds(ScalingBounds(min_instances=4, max_instances=5, concurrency=1))
    model.set_bounds(ScalingBounds(min_instances=1, max_instances=5, concurrency=1))
    assert model.snapshot().instances == 4
    assert model.autoscale_once().instances == 4
    await asyncio.sleep(0.1)
    assert model.autoscale_once().instances == 4
    await asyncio.sleep(0.15)
    assert model.autoscale_once().instances == 3
    assert model.autoscale_once().instances == 2
    assert model.autoscale_once().instances == 1
    assert model.autoscale_once().instances == 1


async def test_traffic_keeps_one_instance_and_min_zero_is_honoured_without_it() -> None:
    model = make_model(min_instances=0, max_instances=5)
    model.set_bounds(ScalingBounds(min_instances=2, max_instances=5, concurrency=1))
    model.set_bounds(ScalingBounds(min_instances=0, max_instances=5, concurrency=1))
    await serve(model, 0.0)
    assert model.autoscale_once().instances == 1
    await serve(model, 0.0)
    assert model.autoscale_once().instances == 1
    assert model.autoscale_once().instances == 0


async def test_bounds_changes_apply_at_once() -> None:
    model = make_model(min_instances=1, max_instances=10, concurrency=1, max_queue_wait_s=2.0)
    assert model.set_bounds(ScalingBounds(min_instances=4, max_instances=10, concurrency=1)).instances == 4
    assert model.set_bounds(ScalingBounds(min_instances=1, max_instances=2, concurrency=1)).instances == 2

    requests = [asyncio.ensure_future(serve(model, 0.2)) for _ in range(6)]
    await asyncio.sleep(0.02)
    assert (model.snapshot().busy, model.snapshot().queued) == (2, 4)
    snapshot = model.set_bounds(ScalingBounds(min_instances=1, max_instances=2, concurrency=3))
    assert (snapshot.busy, snapshot.queued, snapshot.concurrency) == (6, 0, 3)
    served, rejected = split(await asyncio.gather(*requests))
    assert rejected == []
    assert served[:2] == [0.0, 0.0]
    # Admitted by the concurrency change, long before a slot of the first two would have freed up.
    assert all(0 < wait < 0.15 for wait in served[2:])


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    model = make_model(max_queue_wait_s=5.0)
    holder = asyncio.ensure_future(serve(model, 0.1))
    waiter = asyncio.ensure_future(serve(model, 0.0))
    await asyncio.sleep(0.01)
    assert model.snapshot().queued == 1
    waiter.cancel()
    await asyncio.sleep(0)
    assert model.snapshot().queued == 0
    assert await holder == 0.0
    assert model.snapshot().busy == 0
    assert await serve(model, 0.0) == 0.0


async def test_close_refuses_waiting_and_later_requests() -> None:
    model = make_model(min_instances=0, max_instances=1, cold_start_s=5.0)
    waiting = asyncio.ensure_future(serve(model, 0.0))
    await asyncio.sleep(0.01)
    model.close()
    assert isinstance(await waiting, InstanceStartTimeout)
    assert isinstance(await serve(model, 0.0), InstanceStartTimeout)
    assert model.snapshot().starting_instances == 0


# --- /_emulator/scaling ---------------------------------------------------------------------------------

CURRENT = ScalingBounds(min_instances=0, max_instances=10, concurrency=80)


def test_parse_scaling_accepts_any_subset() -> None:
    assert parse_scaling_body({"min_instances": 2}, CURRENT) == ScalingBounds(
        min_instances=2, max_instances=10, concurrency=80
    )
    assert parse_scaling_body({"min_instances": 1, "max_instances": 3, "concurrency": 5}, CURRENT) == (
        ScalingBounds(min_instances=1, max_instances=3, concurrency=5)
    )


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ([1, 2], "body"),
        ({}, "body"),
        ({"replicas": 3}, "replicas"),
        ({"min_instances": -1}, "min_instances"),
        ({"min_instances": "2"}, "min_instances"),
        ({"min_instances": 1.5}, "min_instances"),
        ({"max_instances": 0}, "max_instances"),
        ({"max_instances": 1001}, "max_instances"),
        ({"max_instances": True}, "max_instances"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": None}, "concurrency"),
        ({"min_instances": 11}, "min_instances"),
        ({"min_instances": 5, "max_instances": 4}, "min_instances"),
    ],
)
def test_parse_scaling_rejects(body: object, parameter: str) -> None:
    with pytest.raises(ScalingParameterError) as raised:
        parse_scaling_body(body, CURRENT)
    assert raised.value.parameter == parameter


REVISION = "shop-00003-ghi"
TEST_CONFIG = ShopConfig(
    service="shop",
    revision=REVISION,
    service_time_ms=0,
    cold_start_ms=0,
    min_instances=1,
    max_instances=1,
    concurrency=1,
    random_seed=5,
)


async def shop_client(aiohttp_client: ClientFactory, **overrides: Any) -> TestClient:
    config = dataclasses.replace(TEST_CONFIG, **overrides)
    logger = StructuredLogger(service=config.service, revision=config.revision, stream=io.StringIO())
    return await aiohttp_client(create_app(config, logger=logger))


async def test_scaling_endpoint_changes_bounds_and_reports_state(aiohttp_client: ClientFactory) -> None:
    client = await shop_client(aiohttp_client)
    response = await client.put(
        "/_emulator/scaling", json={"min_instances": 3, "max_instances": 6, "concurrency": 4}
    )
    assert response.status == 200
    state = await response.json()
    assert state["min_instances"] == 3
    assert state["max_instances"] == 6
    assert state["concurrency"] == 4
    assert state["instances"] == 3
    assert await (await client.get("/_emulator/scaling")).json() == state


@pytest.mark.parametrize(
    "body",
    [
        {"min_instances": 7, "max_instances": 6},
        {"concurrency": "lots"},
        {"max_instances": 1, "cores": 2},
        "min_instances=3",
    ],
)
async def test_scaling_endpoint_rejects_bad_input_and_changes_nothing(
    aiohttp_client: ClientFactory, body: object
) -> None:
    client = await shop_client(aiohttp_client)
    before = await (await client.get("/_emulator/scaling")).json()
    response = await client.put("/_emulator/scaling", json=body)
    assert response.status == 400
    assert (await response.json())["parameter"]
    assert await (await client.get("/_emulator/scaling")).json() == before


async def test_saturated_shop_answers_429_and_recovers_with_more_instances(
    aiohttp_client: ClientFactory,
) -> None:
    client = await shop_client(aiohttp_client, service_time_ms=100, max_queue_wait_ms=150)
    responses = await asyncio.gather(*(client.get("/api/catalog") for _ in range(8)))
    statuses = sorted(response.status for response in responses)
    assert statuses.count(200) == 2
    assert statuses.count(429) == 6
    rejected = next(response for response in responses if response.status == 429)
    assert rejected.headers["X-Revision"] == REVISION
    body = await rejected.json()
    assert body["error"].startswith("429 Too Many Requests")
    assert body["queued_ms"] >= 140

    scaled = await client.put("/_emulator/scaling", json={"min_instances": 8, "max_instances": 8})
    assert (await scaled.json())["instances"] == 8
    responses = await asyncio.gather(*(client.get("/api/catalog") for _ in range(8)))
    assert {response.status for response in responses} == {200}


async def test_background_autoscaler_follows_traffic(aiohttp_client: ClientFactory) -> None:
    client = await shop_client(
        aiohttp_client, min_instances=0, max_instances=4, autoscale_interval_s=0.05, scale_down_delay_s=0.1
    )
    assert (await (await client.get("/_emulator/scaling")).json())["instances"] == 0
    assert (await client.get("/api/catalog")).status == 200
    assert (await (await client.get("/_emulator/scaling")).json())["instances"] == 1
    await asyncio.sleep(0.5)
    assert (await (await client.get("/_emulator/scaling")).json())["instances"] == 0
