"""`remediator demo --mode approve`: the bad deploy waits for a human, who approves in the local fake
Slack with a signed click; the rollback then runs and is verified, every real process included."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tests.support.real_parts import binary_or_missing, free_port

pytestmark = pytest.mark.e2e


async def test_the_demo_in_approve_mode_goes_through_a_human() -> None:
    binary_or_missing("prometheus")
    binary_or_missing("prometheus-alertmanager")
    ports = {
        name: free_port() for name in ("emulator", "prometheus", "alertmanager", "remediator", "loadgen")
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "remediator.cli",
        "demo",
        "--mode",
        "approve",
        "--approve-after",
        "2",
        "--baseline-seconds",
        "30",
        "--no-grafana",
        "--json",
        *[arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(400):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    summary = json.loads(text.strip().splitlines()[-1])
    assert (summary["action"], summary["verified"], summary["approved_by"]) == ("ROLLBACK", True, "on-call")
    assert "slack card in #incidents, waiting for a human:" in text
    assert "[ Approve ]   [ Reject ]" in text
    assert "slack: Remediator answered the signed click with HTTP 200" in text
    assert "slack thread: ✅ approved: by on-call" in text
    assert "slack card updated: ✅ Resolved" in text
    # The card once the approval was given: no buttons any more, and who decided.
    final_card = text.split("the card in Slack now:", 1)[1]
    assert "[ Approve ]" not in final_card
    assert "Approved by on-call · MTTR" in final_card
