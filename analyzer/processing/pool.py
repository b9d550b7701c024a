"""The analysis worker pool: incidents the webhook opened, and those the sweep finds waiting.

`notify()` queues incident ids in memory (the webhook calls it after its transaction committed);
`workers` tasks take them one at a time through the pipeline (pipeline.py). The sweep looks in the
store every `sweep_interval` for incidents still `open`, or left `analyzing` by a process whose
lease ran out, so work survives a restart and a crash; and for incidents `queued`/`acting`/`verifying`
that no worker can move any more, which it hands to a human (incidents/handover.py). The lifecycle
watcher (watch.py) sends incidents that wait on the world back to analysis when it changes, and opens
recurrences.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from analyzer.config import ProcessingConfig
from analyzer.engines.base import DecisionEngine
from analyzer.metrics import AnalyzerMetrics
from analyzer.policy import PolicyGuard
from analyzer.processing.pipeline import ContextSource, IncidentPipeline
from analyzer.processing.watch import LifecycleWatcher, TrafficSource
from incidents import IncidentRepository, Store, database_now, escalate_unattended, utcnow
from incidents.lifecycle import LifecycleConfig

log = logging.getLogger("analyzer.processing")

# On shutdown, how long analyses in flight may take to finish: within Cloud Run's ~10 s from SIGTERM
# to SIGKILL, beside the actuator's own stop (incidents/runtime/shutdown.py).
STOP_GRACE_SECONDS = 3.0
HAND_BACK_TIMEOUT_SECONDS = 1.5


class IncidentProcessor:
    def __init__(
        self,
        *,
        store: Store,
        context_source: ContextSource,
        engine: DecisionEngine,
        policy: PolicyGuard,
        metrics: AnalyzerMetrics,
        config: ProcessingConfig | None = None,
        owner: str | None = None,
        lifecycle: LifecycleConfig | None = None,
    ) -> None:
        self.store = store
        self.config = config or ProcessingConfig()
        self.owner = owner or f"analyzer-{uuid.uuid4().hex[:8]}"
        self.pipeline = IncidentPipeline(
            store=store,
            context_source=context_source,
            engine=engine,
            policy=policy,
            metrics=metrics,
            config=self.config,
            owner=self.owner,
        )
        self._queue: asyncio.Queue[int | None] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._pending: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._analysing: set[int] = set()
        # Traffic is read through the context source when it can (the collector's ContextBuilder).
        self.watcher = LifecycleWatcher(
            store=store,
            traffic=context_source if isinstance(context_source, TrafficSource) else None,
            config=lifecycle or LifecycleConfig(),
            metrics=metrics,
            notify=self.notify,
        )

    # lifecycle

    def notify(self, incident_ids: list[int]) -> None:
        """Queue incidents for analysis (called by the webhook after its transaction committed)."""
        if self._stopping.is_set():
            return  # the sweep of the next process picks these up
        for incident_id in incident_ids:
            if incident_id not in self._pending:
                self._pending.add(incident_id)
                self._idle.clear()
                self._queue.put_nowait(incident_id)

    async def start(self) -> None:
        self._stopping.clear()
        for number in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"analysis-worker-{number}"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="analysis-sweep"))
        self._tasks.append(asyncio.create_task(self.watcher.run(self._stopping), name="lifecycle-watch"))

    async def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Let in-flight analyses finish (cancelling one mid-transaction would waste it) for
        `grace_seconds`; then cancel them and hand their analysis leases back, so another process's
        sweep takes them at once instead of after the lease. Safe to call more than once."""
        self._stopping.set()
        if not self._tasks:
            return
        for _ in range(self.config.workers):
            self._queue.put_nowait(None)
        _, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        cut_short = sorted(self._analysing)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if cut_short:
            await self._hand_back(cut_short)

    async def _hand_back(self, incident_ids: list[int]) -> None:
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_SECONDS), self.store.session() as session:
                handed = await IncidentRepository(session).hand_back_analysis(
                    incident_ids, owner=self.owner, now=await database_now(session)
                )
        except Exception as exc:
            log.warning("could not hand analysis leases back; they lapse instead", extra={"error": str(exc)})
            return
        for incident_id in handed:
            log.info("analysis lease handed back (shutting down)", extra={"incident_id": incident_id})

    async def wait_idle(self) -> None:
        """Wait until every queued incident has been processed (tests, benchmarks)."""
        await self._idle.wait()

    async def _work(self) -> None:
        while True:
            incident_id = await self._queue.get()
            if incident_id is None:
                return
            self._in_flight += 1
            self._analysing.add(incident_id)
            try:
                await self.pipeline.process(incident_id)
            except Exception:  # process() records its own failures; this is the last resort
                log.exception("analysis crashed", extra={"incident_id": incident_id})
            finally:
                self._analysing.discard(incident_id)
                self._in_flight -= 1
                self._pending.discard(incident_id)
                if not self._pending and self._in_flight == 0:
                    self._idle.set()

    async def _sweep(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.store.session() as session:
                    waiting = await IncidentRepository(session).list_needing_analysis(now=utcnow())
                self.notify(list(waiting))
            except Exception:
                log.exception("analysis sweep failed; retrying")
            try:
                # Incidents no worker can move any more go to a human (incidents/handover.py).
                await escalate_unattended(self.store)
            except Exception:
                log.exception("sweep for unattended incidents failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.config.sweep_interval)

    @property
    def context_source(self) -> ContextSource:
        return self.pipeline.context_source

    async def process(self, incident_id: int) -> None:
        """One incident through the pipeline, now (tests; the workers call the pipeline themselves)."""
        await self.pipeline.process(incident_id)
