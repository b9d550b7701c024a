"""Injected Admin API failures (`/_emulator/failures`), seen through the real google-cloud-run client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import requests
from google.api_core import exceptions

from tests.demo_apps.cloudrun_harness import PARENT, Emulator, google_status, running_emulator, shop_template


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


async def inject(emulator: Emulator, **rule: object) -> dict:
    async with emulator.http.post(f"{emulator.base_url}/_emulator/failures", json=rule) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def pending(emulator: Emulator) -> list[dict]:
    async with emulator.http.get(f"{emulator.base_url}/_emulator/failures") as response:
        return (await response.json())["pending"]


async def test_429_then_success(emulator: Emulator) -> None:
    await emulator.create("shop", shop_template())
    await inject(emulator, count=2, kind="429", methods=["PATCH"])
    assert [(rule["kind"], rule["remaining"]) for rule in await pending(emulator)] == [("429", 2)]

    service = await emulator.get("shop")  # a GET does not match the PATCH filter
    service.labels["try"] = "1"
    for _ in range(2):
        with pytest.raises(exceptions.TooManyRequests) as refused:
            await emulator.call(emulator.services.update_service, service=service)
        assert google_status(refused.value) == "RESOURCE_EXHAUSTED"
    assert await pending(emulator) == []

    updated = await emulator.wait(await emulator.call(emulator.services.update_service, service=service))
    assert updated.labels["try"] == "1"
    assert updated.generation == 2  # the refused calls changed nothing


async def test_503_and_500_are_google_errors(emulator: Emulator) -> None:
    await inject(emulator, count=1, kind="503", paths=["/services"])
    await inject(emulator, count=1, kind="500")
    with pytest.raises(exceptions.ServiceUnavailable) as unavailable:
        await emulator.create("shop", shop_template())
    assert google_status(unavailable.value) == "UNAVAILABLE"
    with pytest.raises(exceptions.InternalServerError):
        await emulator.create("shop", shop_template())
    created = await emulator.create("shop", shop_template())
    assert created.generation == 1


async def test_hang_is_a_client_timeout_and_then_the_call_completes(emulator: Emulator) -> None:
    await emulator.create("shop", shop_template())
    await inject(emulator, count=1, kind="hang", hang_seconds=1.0, methods=["GET"])

    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        await emulator.call(
            emulator.services.get_service, name=emulator.name("shop"), timeout=0.3, retry=None
        )
    assert time.monotonic() - started < 0.9
    # The next call is answered at once.
    assert (await emulator.get("shop")).name == emulator.name("shop")


async def test_failures_touch_only_the_admin_api(emulator: Emulator) -> None:
    created = await emulator.create("shop", shop_template())
    await inject(emulator, count=5, kind="503")
    async with emulator.http.get(f"{emulator.base_url}/sd/targets") as response:
        assert response.status == 200
    async with emulator.http.post(
        f"{emulator.base_url}/v2/entries:list", json={"resourceNames": ["projects/local"]}
    ) as response:
        assert response.status == 200
    async with emulator.http.get(created.uri + "/api/catalog") as response:
        assert response.status == 200
    async with emulator.http.get(f"{emulator.base_url}/healthz") as response:
        assert response.status == 200
    assert [rule["remaining"] for rule in await pending(emulator)] == [5]

    async with emulator.http.delete(f"{emulator.base_url}/_emulator/failures") as response:
        assert (await response.json()) == {"cleared": 1}
    assert await pending(emulator) == []
    assert (await emulator.get("shop")).name == emulator.name("shop")


@pytest.mark.parametrize(
    "rule",
    [
        {"count": 0, "kind": "503"},
        {"count": 1, "kind": "418"},
        {"count": 1, "kind": "hang"},
        {"count": 1, "kind": "503", "methods": ["FETCH"]},
        {"count": 1, "kind": "503", "surprise": True},
    ],
)
async def test_invalid_failure_rules_are_refused(emulator: Emulator, rule: dict) -> None:
    async with emulator.http.post(f"{emulator.base_url}/_emulator/failures", json=rule) as response:
        assert response.status == 400
        assert (await response.json())["error"]["status"] == "INVALID_ARGUMENT"
    assert await pending(emulator) == []


@pytest.mark.parametrize(
    ("path", "data", "content_type"),
    [
        ("/_emulator/failures", "kind=503&count=100", "application/x-www-form-urlencoded"),
        ("/_emulator/failures", '{"kind": "503", "count": 100}', "text/plain"),
        (
            "/v2/projects/local/locations/local/services?serviceId=evil",
            "x",
            "multipart/form-data; boundary=x",
        ),
        ("/v2/projects/local/locations/local/services?serviceId=evil", None, None),
    ],
)
async def test_what_a_web_page_could_post_across_sites_is_refused(
    emulator: Emulator, path: str, data: str | None, content_type: str | None
) -> None:
    """A page the developer visits can make the browser post a form, text/plain or no body to
    127.0.0.1 without asking; the emulator takes only JSON bodies (or Google's own clients)."""
    headers = {"Content-Type": content_type} if content_type else {}
    async with emulator.http.post(f"{emulator.base_url}{path}", data=data, headers=headers) as response:
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert "application/json" in error["message"]
    assert await pending(emulator) == []
    assert [s.name for s in await emulator.call(emulator.services.list_services, parent=PARENT)] == []
    # The same requests as JSON are served, and so is the Google client (it created nothing above).
    await inject(emulator, count=1, kind="503", paths=["/nothing"])
    created = await emulator.create("shop", shop_template())
    assert created.generation == 1
