"""A new revision is a scrape target from its start, and (with --await-first-scrape) takes traffic
only once Prometheus has scraped it, so its request series' first samples are zeros."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tests.demo_apps.cloudrun_harness import (
    TEST_CONFIG,
    Emulator,
    revision_id,
    running_emulator,
    shop_template,
)


async def targets(emulator: Emulator) -> dict[str, str]:
    async with emulator.http.get(f"{emulator.base_url}/sd/targets") as response:
        return {group["labels"]["revision"]: group["targets"][0] for group in await response.json()}


async def scrape(emulator: Emulator, address: str) -> str:
    async with emulator.http.get(f"http://{address}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_a_new_revision_waits_for_its_first_scrape_before_taking_traffic() -> None:
    async with running_emulator(replace(TEST_CONFIG, first_scrape_wait_s=20.0)) as emulator:
        # Nothing scrapes the service yet: its first revision is routed at once.
        created = await asyncio.wait_for(emulator.create("shop", shop_template()), 10)
        first = revision_id(created.latest_ready_revision)
        await scrape(emulator, (await targets(emulator))[first])  # now something scrapes it

        deploy = asyncio.create_task(emulator.deploy_env("shop", {"DEMO_RELEASE": "2"}))
        async with asyncio.timeout(15):
            while len(found := await targets(emulator)) < 2:
                await asyncio.sleep(0.05)
        [second] = set(found) - {first}
        # Listed for discovery while it starts; its traffic waits for the scrape.
        await asyncio.sleep(1.0)
        assert not deploy.done()
        service = await emulator.get("shop")
        assert [revision_id(t.revision) for t in service.traffic_statuses if t.percent] == [first]
        exposition = await scrape(emulator, found[second])
        # What Prometheus reads first: every request series at zero.
        assert 'http_response_status_code="500",http_route="/api/catalog"' in exposition
        assert all(
            line.endswith(" 0.0")
            for line in exposition.splitlines()
            if line.startswith("http_server_request_duration_seconds_count")
        )
        updated = await asyncio.wait_for(deploy, 5)
        assert revision_id(updated.latest_ready_revision) == second
        service = await emulator.get("shop")
        assert [revision_id(t.revision) for t in service.traffic_statuses if t.percent] == [second]
