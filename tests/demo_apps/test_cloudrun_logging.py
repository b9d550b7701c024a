"""Cloud Logging `entries:list` over real revision log lines."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core import exceptions

from demo_apps.cloudrun.images import DEFAULT_IMAGES
from tests.demo_apps.cloudrun_harness import (
    TEST_CONFIG,
    Emulator,
    revision_id,
    running_emulator,
    shop_template,
)

# A second image: a process that writes plain text on both streams and exits before it serves.
SYSTEM_LOG = "projects/local/logs/run.googleapis.com%2Fvarlog%2Fsystem"
PLAIN_TEXT_APP = (
    sys.executable,
    "-c",
    "import sys; print('plain text on stdout', flush=True); "
    "print('boom on stderr', file=sys.stderr); sys.exit(3)",
)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    config = replace(TEST_CONFIG, images={**DEFAULT_IMAGES, "plain-text": PLAIN_TEXT_APP})
    async with running_emulator(config) as running:
        yield running


async def entries(emulator: Emulator, **body: Any) -> dict[str, Any]:
    body.setdefault("resourceNames", ["projects/local"])
    async with emulator.http.post(f"{emulator.base_url}/v2/entries:list", json=body) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return answer


async def all_pages(emulator: Emulator, **body: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    for _ in range(100):
        page = await entries(emulator, **body, **({"pageToken": token} if token else {}))
        found.extend(page["entries"])
        token = page.get("nextPageToken")
        if not token:
            return found
    raise AssertionError("paging did not end")


async def eventually(emulator: Emulator, count: int, **body: Any) -> list[dict[str, Any]]:
    """Log lines travel through a pipe: wait until `count` entries match."""
    found: list[dict[str, Any]] = []
    for _ in range(100):
        found = await all_pages(emulator, **body)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} entries, found {len(found)}")


async def test_entries_list_filters_real_request_logs(emulator: Emulator) -> None:
    first = await emulator.create("shop", shop_template())
    second = await emulator.deploy_env("shop", {"DEMO_ERROR_RATE": "100"})
    healthy, failing = revision_id(first.latest_ready_revision), revision_id(second.latest_ready_revision)
    await emulator.set_traffic("shop", {healthy: 50, failing: 50})
    started = datetime.now(UTC).isoformat().replace("+00:00", "Z")

    counts = await emulator.served_by(first.uri, 60)
    errors, successes = counts[f"500 {failing}"], counts[f"200 {healthy}"]
    assert errors + successes == 60
    assert errors > 0
    assert successes > 0

    service = 'resource.type="cloud_run_revision" AND resource.labels.service_name="shop"'
    error_entries = await eventually(
        emulator, errors, filter=f'{service} AND severity>=ERROR AND timestamp>="{started}"'
    )
    assert len(error_entries) == errors
    for entry in error_entries:
        assert entry["severity"] == "ERROR"
        assert entry["resource"] == {
            "type": "cloud_run_revision",
            "labels": {
                "service_name": "shop",
                "revision_name": failing,
                "configuration_name": "shop",
                "location": "local",
                "project_id": "local",
            },
        }
        assert entry["logName"] == "projects/local/logs/run.googleapis.com%2Fstdout"
        assert entry["httpRequest"]["status"] == 500
        assert entry["httpRequest"]["requestUrl"] == "/api/catalog"
        assert entry["jsonPayload"]["message"]
        assert "severity" not in entry["jsonPayload"]
        assert entry["timestamp"] >= started
        assert entry["receiveTimestamp"] >= entry["timestamp"][:19]
    assert len({entry["insertId"] for entry in error_entries}) == errors

    healthy_requests = await eventually(
        emulator,
        successes,
        filter=f'resource.labels.revision_name="{healthy}" severity=INFO timestamp>="{started}" '
        "httpRequest.status=200",
    )
    assert len(healthy_requests) == successes
    assert {entry["resource"]["labels"]["revision_name"] for entry in healthy_requests} == {healthy}

    below_error = await all_pages(emulator, filter=f'{service} AND severity<ERROR AND timestamp>="{started}"')
    assert all(
        entry["severity"] in ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING") for entry in below_error
    )
    assert len(below_error) >= successes

    newest_first = await all_pages(emulator, filter=service, orderBy="timestamp desc", pageSize=7)
    oldest_first = await all_pages(emulator, filter=service, orderBy="timestamp asc", pageSize=1000)
    assert [entry["insertId"] for entry in newest_first] == [entry["insertId"] for entry in oldest_first][
        ::-1
    ]
    stamps = [entry["timestamp"] for entry in oldest_first]
    assert stamps == sorted(stamps)
    assert len(newest_first) == len({entry["insertId"] for entry in newest_first})
    first_page = await entries(emulator, filter=service, pageSize=5)
    assert len(first_page["entries"]) == 5
    assert first_page["nextPageToken"]

    before_start = await all_pages(emulator, filter=f'{service} AND timestamp<"{started}"')
    assert before_start
    assert all(entry["timestamp"] < started for entry in before_start)
    assert await all_pages(emulator, filter='resource.labels.service_name="nothing-here"') == []
    assert (await entries(emulator, resourceNames=["projects/elsewhere"]))["entries"] == []


async def test_plain_text_lines_and_a_failed_start(emulator: Emulator) -> None:
    with pytest.raises(exceptions.FailedPrecondition) as failure:
        await emulator.create("plain", shop_template(image="plain-text"))
    assert "exited with code 3" in failure.value.message
    assert "boom on stderr" in failure.value.message

    lines = await eventually(
        emulator,
        2,
        filter=f'resource.labels.service_name="plain" AND logName!="{SYSTEM_LOG}"',
    )
    by_stream = {entry["logName"].rsplit("%2F", 1)[-1]: entry for entry in lines}
    assert by_stream["stdout"]["textPayload"] == "plain text on stdout"
    assert by_stream["stdout"]["severity"] == "DEFAULT"
    assert by_stream["stderr"]["textPayload"] == "boom on stderr"
    assert by_stream["stderr"]["severity"] == "ERROR"
    system = await all_pages(
        emulator, filter='logName="projects/local/logs/run.googleapis.com%2Fvarlog%2Fsystem" severity>=ERROR'
    )
    assert any("exited with code 3" in entry["textPayload"] for entry in system)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"filter": "severity>=ERROR OR severity=INFO"}, "OR"),
        ({"filter": "NOT severity=INFO"}, "NOT"),
        ({"filter": "(severity=INFO)"}, "("),
        ({"filter": 'jsonPayload.message:"boom"'}, "':'"),
        ({"filter": 'jsonPayload.message="boom"'}, "jsonPayload.message"),
        ({"filter": "severity=LOUD"}, "LOUD"),
        ({"filter": 'timestamp>="yesterday"'}, "yesterday"),
        ({"filter": 'resource.type>"a"'}, "resource.type"),
        ({"orderBy": "severity desc"}, "orderBy"),
        ({"resourceNames": []}, "resourceNames"),
        ({"pageToken": "garbage"}, "pageToken"),
    ],
)
async def test_unsupported_requests_are_named_in_a_400(emulator: Emulator, body: dict, named: str) -> None:
    body.setdefault("resourceNames", ["projects/local"])
    async with emulator.http.post(f"{emulator.base_url}/v2/entries:list", json=body) as response:
        answer = await response.json()
    assert response.status == 400
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert named in answer["error"]["message"]
