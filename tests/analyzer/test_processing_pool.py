"""The analysis worker pool: notified incidents once each, the sweep, and a stop that lets work finish."""

from __future__ import annotations

import asyncio

from analyzer import ProcessingConfig
from incidents import ActionStatus, IncidentRepository, IncidentStatus, Store, database_now
from tests.analyzer.processing_support import open_incident, processor, status_and_events
from tests.support.contexts import StaticContextSource
from tests.support.incident_states import incident_in

NO_SWEEP = ProcessingConfig(sweep_interval=3600)


async def test_an_incident_notified_again_while_waiting_is_analysed_once(store: Store) -> None:
    incident_id = await open_incident(store)
    source = StaticContextSource()
    pool = processor(store, source, NO_SWEEP)
    await pool.start()
    try:
        await asyncio.sleep(0.2)  # the first sweep ran and found it; notify it again, three times
        for _ in range(3):
            pool.notify([incident_id])
        async with asyncio.timeout(10):
            await pool.wait_idle()
    finally:
        await pool.stop()
    assert len(source.calls) == 1
    assert (await status_and_events(store, incident_id))[0] == "queued"


async def test_the_sweep_finds_incidents_nobody_notified(store: Store) -> None:
    pool = processor(store, StaticContextSource(), ProcessingConfig(sweep_interval=0.05))
    await pool.start()
    try:
        incident_id = await open_incident(store)  # opened after the first sweep, never notified
        async with asyncio.timeout(10):
            while (await status_and_events(store, incident_id))[0] != "queued":
                await asyncio.sleep(0.05)
    finally:
        await pool.stop()


async def test_stop_lets_an_analysis_in_flight_finish(store: Store) -> None:
    incident_id = await open_incident(store)
    source = StaticContextSource()
    source.gate = asyncio.Event()
    pool = processor(store, source, NO_SWEEP)
    await pool.start()
    pool.notify([incident_id])
    async with asyncio.timeout(10):
        while not source.calls:
            await asyncio.sleep(0.01)
    stopping = asyncio.create_task(pool.stop(grace_seconds=10))
    await asyncio.sleep(0.1)
    assert not stopping.done()
    source.gate.set()
    await stopping
    assert (await status_and_events(store, incident_id))[0] == "queued"
    pool.notify([incident_id])  # after stop: left for the next process's sweep
    assert len(source.calls) == 1


async def test_the_sweep_hands_an_incident_no_worker_can_move_to_a_human(store: Store) -> None:
    incident_id, _ = await incident_in(store, IncidentStatus.VERIFYING, action=ActionStatus.FAILED)
    pool = processor(store, StaticContextSource(), ProcessingConfig(sweep_interval=0.05))
    await pool.start()
    try:
        async with asyncio.timeout(10):
            while (await status_and_events(store, incident_id))[0] != "escalated":
                await asyncio.sleep(0.05)
    finally:
        await pool.stop()
    assert "sweep.unattended" in (await status_and_events(store, incident_id))[1]


async def test_stop_past_its_grace_hands_the_analysis_lease_back_for_another_process(store: Store) -> None:
    incident_id = await open_incident(store)
    source = StaticContextSource()
    source.gate = asyncio.Event()  # the analysis never finishes on its own
    pool = processor(store, source, NO_SWEEP)
    await pool.start()
    pool.notify([incident_id])
    async with asyncio.timeout(10):
        while not source.calls:
            await asyncio.sleep(0.01)
    await pool.stop(grace_seconds=0.1)
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
        assert incident.status == "analyzing"
        waiting = await IncidentRepository(session).list_needing_analysis(now=await database_now(session))
    assert list(waiting) == [incident_id]  # at once, not after the 60 s lease

    successor = processor(store, StaticContextSource(), NO_SWEEP)
    await successor.process(incident_id)
    assert (await status_and_events(store, incident_id))[0] == "queued"
