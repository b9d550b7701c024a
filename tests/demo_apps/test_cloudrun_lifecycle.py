"""Service discovery, and that no revision process outlives the emulator however it stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from google.api_core import exceptions

from tests.demo_apps.cloudrun_harness import (
    FAST_POLLING,
    PARENT,
    Emulator,
    clients,
    pid_alive,
    revision_id,
    running_emulator,
    shop_template,
)
from tests.support.real_parts import free_port

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc for child processes"
)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


async def test_sd_targets_list_every_ready_revision(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template())
    second = await emulator.deploy_env("shop", {"RELEASE": "2"})
    with pytest.raises(exceptions.FailedPrecondition):
        await emulator.deploy_env("shop", {"DEMO_FAIL_STARTUP": "1"})
    other = await emulator.create("cart", shop_template())

    async with emulator.http.get(f"{emulator.base_url}/sd/targets") as response:
        groups = await response.json()
    ready = {revision_id(service.latest_ready_revision) for service in (first, second, other)}
    assert {group["labels"]["revision"] for group in groups} == ready
    for group in groups:
        revision = group["labels"]["revision"]
        service = "cart" if revision.startswith("cart-") else "shop"
        assert group["labels"] == {
            "service": service,
            "revision": revision,
            "configuration": service,
            "project": "local",
            "region": "local",
        }
        [target] = group["targets"]
        assert target.startswith("127.0.0.1:")
        async with emulator.http.get(f"http://{target}/metrics") as response:
            assert response.status == 200
            assert f'revision="{revision}"' in await response.text()


async def test_app_cleanup_stops_every_revision_process() -> None:
    async with running_emulator() as emulator:
        await emulator.create("shop", shop_template())
        await emulator.deploy_env("shop", {"RELEASE": "2"})
        await emulator.create("cart", shop_template())
        pids = emulator.pids()
        routers = [emulator.control.router(name).uri for name in ("shop", "cart")]
        assert len(pids) == 3
        assert all(pid_alive(pid) for pid in pids)
    assert not any(pid_alive(pid) for pid in pids)
    async with aiohttp.ClientSession() as http:
        for uri in routers:
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(uri + "/")


# -- the emulator as its own process -------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def emulator_process() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "demo_apps.cloudrun", "--port", str(port), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def wait_healthy(base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(base_url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the emulator did not come up")


async def start_two_revisions(base_url: str) -> None:
    services, _ = clients(base_url)
    try:
        for service_id in ("shop", "cart"):
            operation = await asyncio.to_thread(
                services.create_service,
                parent=PARENT,
                service={"template": shop_template()},
                service_id=service_id,
            )
            await asyncio.to_thread(operation.result, timeout=30, polling=FAST_POLLING)
    finally:
        services.transport.close()


async def wait_gone(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not any(pid_alive(pid) for pid in pids)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_emulator_and_its_revisions(
    emulator_process: tuple[subprocess.Popen[bytes], str], signum: signal.Signals
) -> None:
    process, base_url = emulator_process
    await wait_healthy(base_url)
    await start_two_revisions(base_url)
    revisions = children_of(process.pid)
    assert len(revisions) == 2

    process.send_signal(signum)
    assert await asyncio.to_thread(process.wait, 15) == 0
    await wait_gone(revisions, 1.0)


async def test_a_killed_emulator_takes_its_revisions_along(
    emulator_process: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base_url = emulator_process
    await wait_healthy(base_url)
    await start_two_revisions(base_url)
    revisions = children_of(process.pid)
    assert len(revisions) == 2

    os.kill(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.wait, 10)
    # PR_SET_PDEATHSIG delivers SIGTERM to each revision; the shop then stops within its shutdown timeout.
    await wait_gone(revisions, 10.0)


async def test_a_taken_port_is_a_clear_error(emulator_process: tuple[subprocess.Popen[bytes], str]) -> None:
    process, base_url = emulator_process
    await wait_healthy(base_url)
    port = base_url.rsplit(":", 1)[1]
    second = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "demo_apps.cloudrun", "--port", port],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in second.stderr
    assert process.poll() is None


async def test_a_revision_process_that_dies_is_started_again(emulator: Emulator) -> None:
    created = await emulator.create("shop", shop_template())
    revision = revision_id(created.latest_ready_revision)
    process = emulator.control.process("shop", revision)
    first_pid = process.pid
    os.kill(first_pid, signal.SIGKILL)

    deadline = time.monotonic() + 15
    while not (process.ready and process.pid != first_pid):
        assert time.monotonic() < deadline, "the revision was not started again"
        await asyncio.sleep(0.05)
    assert process.restarts == 1
    assert await emulator.served_by(created.uri, 10) == {f"200 {revision}": 10}
    async with emulator.http.post(
        f"{emulator.base_url}/v2/entries:list",
        json={
            "resourceNames": ["projects/local"],
            "filter": 'logName="projects/local/logs/run.googleapis.com%2Fvarlog%2Fsystem" severity=WARNING',
        },
    ) as response:
        messages = [entry.get("textPayload", "") for entry in (await response.json())["entries"]]
    assert messages == ["Container terminated on signal 9; a new instance will start."]
