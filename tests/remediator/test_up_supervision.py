"""`remediator up`: what it tells a person (settings for manual commands, log format) and how it
supervises its children: a death is reported at once with the log, Remediator and load generators
are restarted, anything else stops the stack with a non-zero exit."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from remediator.cli import build_parser
from remediator.processes import ChildProcess, child_environment
from remediator.stack import LocalStack, StackOptions
from tests.support.real_parts import free_port


def test_remediator_keeps_the_log_format_the_shell_asked_for(tmp_path: Path) -> None:
    stack = LocalStack(StackOptions(state_dir=tmp_path))
    secrets = tmp_path / "secrets"
    assert stack.remediator_environment(secrets, environ={})["REMEDIATOR_LOG_FORMAT"] == "json"
    text = stack.remediator_environment(secrets, environ={"REMEDIATOR_LOG_FORMAT": "text"})
    assert text["REMEDIATOR_LOG_FORMAT"] == "text"


def test_up_says_what_manual_commands_need_to_reach_the_stack(tmp_path: Path) -> None:
    stack = LocalStack(StackOptions(state_dir=tmp_path, emulator_port=18090, prometheus_port=19090))
    assert stack.manual_environment() == {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'remediator.db'}",
        "CLOUD_RUN_ENDPOINT": "http://127.0.0.1:18090",
        "PROMETHEUS_URL": "http://127.0.0.1:19090",
    }
    described = "\n".join(stack.describe())
    assert "CLOUD_RUN_ENDPOINT=http://127.0.0.1:18090" in described
    assert f"DATABASE_URL=sqlite:///{tmp_path / 'remediator.db'}" in described


def test_db_help_explains_its_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "remediator.cli", "db", "--help"], capture_output=True, text=True, check=True
    )
    assert "upgrade   apply every migration the database lacks" in result.stdout
    assert "current   print the revision the database is at" in result.stdout
    assert "DATABASE_URL" in result.stdout


def test_the_load_generators_options_say_what_they_do() -> None:
    from demo_apps.loadgen.__main__ import build_parser as loadgen_parser

    text = loadgen_parser().format_help()
    assert "address of the control API (default 127.0.0.1)" in text
    assert "(default: no control API)" in text
    assert build_parser().parse_args(["db", "current"]).db_command == "current"


def server(port: int) -> list[str]:
    """A child that is ready when it answers HTTP on `port`."""
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[LocalStack]:
    made = LocalStack(StackOptions(state_dir=tmp_path), say=lambda line: said.append(line))
    said: list[str] = []
    made.said = said  # type: ignore[attr-defined]
    made.http = aiohttp.ClientSession()
    try:
        yield made
    finally:
        for child in made.children:
            await child.stop(grace=2)
        await made.http.close()


async def _start(stack: LocalStack, name: str, tmp_path: Path) -> ChildProcess:
    port = free_port()
    child = ChildProcess(
        name=name,
        argv=server(port),
        log_path=tmp_path / f"{name}.log",
        env=child_environment(),
        ready_url=f"http://127.0.0.1:{port}/",
    )
    stack.children.append(child)
    await child.start()
    assert stack.http is not None
    await child.wait_ready(child.ready_url or "", within=15, session=stack.http)
    return child


async def test_a_dead_load_generator_is_restarted_and_a_dead_prometheus_stops_the_stack(
    stack: LocalStack, tmp_path: Path
) -> None:
    loadgen = await _start(stack, "loadgen-8089", tmp_path)
    prometheus = await _start(stack, "prometheus", tmp_path)
    stop = asyncio.Event()
    supervising = asyncio.create_task(stack.supervise(stop))
    first_pid = loadgen.pid
    assert first_pid is not None
    loadgen.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    async with asyncio.timeout(20):
        while not any("loadgen-8089 restarted" in line for line in stack.said):  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
    said = "\n".join(stack.said)  # type: ignore[attr-defined]
    assert f"loadgen-8089 exited (code -9); its log is {tmp_path / 'loadgen-8089.log'}" in said
    assert loadgen.running and loadgen.pid != first_pid

    assert prometheus.process is not None
    prometheus.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        code = await supervising
    assert code == 1
    said = "\n".join(stack.said)  # type: ignore[attr-defined]
    assert f"prometheus exited (code -15); its log is {tmp_path / 'prometheus.log'}" in said
    assert "stopping the stack: the stack cannot run without it" in said


async def test_a_child_that_keeps_dying_stops_the_stack(stack: LocalStack, tmp_path: Path) -> None:
    remediator = await _start(stack, "remediator", tmp_path)
    supervising = asyncio.create_task(stack.supervise(asyncio.Event()))
    said: list[str] = stack.said  # type: ignore[attr-defined]
    for restarts in range(4):
        assert remediator.process is not None
        remediator.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(20):
            while not supervising.done() and sum("remediator restarted" in line for line in said) == restarts:
                await asyncio.sleep(0.05)
    async with asyncio.timeout(20):
        assert await supervising == 1
    assert any("it restarted 3 times in 300s" in line for line in stack.said)  # type: ignore[attr-defined]


async def test_stopping_on_a_signal_is_a_clean_exit(stack: LocalStack, tmp_path: Path) -> None:
    await _start(stack, "emulator", tmp_path)
    stop = asyncio.Event()
    supervising = asyncio.create_task(stack.supervise(stop))
    await asyncio.sleep(0.2)
    stop.set()
    async with asyncio.timeout(5):
        assert await supervising == 0
