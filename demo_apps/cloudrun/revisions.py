"""Revision processes: start one per revision, wait for its health check, keep it running, stop it.

Each process gets its own session (so its whole process group can be signalled) and, on Linux, is
told by `prctl(PR_SET_PDEATHSIG)` to receive SIGTERM when the emulator dies, however it dies: state
survives nothing but the emulator's process. Both output streams are read line by line into the
log store. A process that exits after it was ready is started again on the same port, like Cloud
Run replacing a crashed instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from demo_apps.cloudrun.exceptions import EmulatorError
from demo_apps.cloudrun.logstore import STDERR, STDOUT, LogOrigin, LogStore
from demo_apps.cloudrun.model import Capacity, CommonReason, RevisionReason

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
HEALTH_PATH = "/healthz"
SCALING_PATH = "/_emulator/scaling"
HEALTH_POLL_INTERVAL_S = 0.05
# Longest line kept whole; a longer one is cut by the reader.
STREAM_LIMIT = 1024 * 1024
FAILURE_LOG_LINES = 8
MAX_CONDITION_MESSAGE = 2000


class RevisionStartError(EmulatorError):
    """A revision did not become ready; the message is what its Ready condition says."""

    def __init__(
        self,
        message: str,
        *,
        reason: CommonReason,
        revision_reason: RevisionReason = RevisionReason.UNDEFINED,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.revision_reason = revision_reason


def free_port(host: str, *, avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A port nothing listens on now (and that this emulator has not handed out)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise EmulatorError(f"no free port on {host}")


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function that ties a child's life to this process (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died between fork and prctl.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass(frozen=True, kw_only=True)
class ProcessSettings:
    host: str
    startup_timeout_s: float
    stop_timeout_s: float
    restart_backoff_s: float
    max_restart_backoff_s: float
    echo_logs: bool = False


class RevisionProcess:
    """The process behind one revision, from first start to final stop."""

    def __init__(
        self,
        *,
        origin: LogOrigin,
        argv: tuple[str, ...],
        env: Mapping[str, str],
        capacity: Capacity,
        port: int,
        logs: LogStore,
        session: aiohttp.ClientSession,
        settings: ProcessSettings,
    ) -> None:
        self.origin = origin
        self.port = port
        self.capacity = capacity
        self._argv = argv
        self._env = dict(env)
        self._logs = logs
        self._session = session
        self._settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._watch: asyncio.Task[None] | None = None
        self._healthy = False
        self._stopping = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def ready(self) -> bool:
        return self._healthy and self.running

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self.port}"

    async def start(self) -> None:
        """Start the process and wait for its health check; RevisionStartError when it fails."""
        await self._spawn(reason="DEPLOYMENT_ROLLOUT")
        await self._wait_healthy()
        self._healthy = True
        self._watch = asyncio.create_task(self._keep_running(), name=f"watch {self.origin.revision}")

    async def _spawn(self, *, reason: str) -> None:
        env = {**self._env, **self.capacity.as_env()}
        self._logs.append_system(self.origin, f"Starting new instance. Reason: {reason}.")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
                limit=STREAM_LIMIT,
            )
        except OSError as exc:
            message = f"The user-provided container could not be started: {exc}."
            self._logs.append_system(self.origin, message, severity="ERROR")
            raise RevisionStartError(message, reason=CommonReason.CONTAINER_MISSING) from exc
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self._process.stdout, STDOUT)),
            asyncio.create_task(self._pump(self._process.stderr, STDERR)),
        ]
        logger.info(
            "revision process started",
            extra={"revision": self.origin.revision, "pid": self._process.pid, "port": self.port},
        )

    async def _pump(self, stream: asyncio.StreamReader, log_id: str) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                # Longer than STREAM_LIMIT: the reader dropped it.
                self._logs.append_system(
                    self.origin, "A log line longer than 1 MiB was dropped.", severity="WARNING"
                )
                continue
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                continue
            self._logs.append_line(self.origin, log_id, line)
            if self._settings.echo_logs:
                print(f"[{self.origin.revision}] {line}", file=sys.stderr, flush=True)

    async def _wait_healthy(self) -> None:
        process = self._process
        assert process is not None
        url = f"http://{self._settings.host}:{self.port}{HEALTH_PATH}"
        timeout = aiohttp.ClientTimeout(total=1.0)
        deadline = asyncio.get_running_loop().time() + self._settings.startup_timeout_s
        while True:
            if process.returncode is not None:
                await self._drain_pumps()
                raise self._start_error(self._exit_message(process.returncode))
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(url, timeout=timeout) as response:
                    if response.status == 200:
                        self._logs.append_system(
                            self.origin, f"Default STARTUP HTTP probe succeeded on GET {HEALTH_PATH}."
                        )
                        return
            if asyncio.get_running_loop().time() >= deadline:
                await self._terminate()
                raise self._start_error(
                    f"The user-provided container failed to answer GET {HEALTH_PATH} with 200 on the port "
                    f"defined by the PORT={self.port} environment variable within "
                    f"{self._settings.startup_timeout_s:g} seconds."
                )
            await asyncio.sleep(HEALTH_POLL_INTERVAL_S)

    def _exit_message(self, returncode: int) -> str:
        if returncode < 0:
            try:
                how = f"was terminated by signal {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was terminated by signal {-returncode}"
        else:
            how = f"exited with code {returncode}"
        return (
            f"The user-provided container {how} before it answered GET {HEALTH_PATH} on the port defined by "
            f"the PORT={self.port} environment variable."
        )

    def _start_error(self, message: str) -> RevisionStartError:
        self._logs.append_system(self.origin, message, severity="ERROR")
        lines = [
            record.text
            for record in self._logs.tail(self.origin.service, self.origin.revision, FAILURE_LOG_LINES)
        ]
        if lines:
            message = f"{message} Last log lines: {' | '.join(lines)}"
        if len(message) > MAX_CONDITION_MESSAGE:
            message = message[: MAX_CONDITION_MESSAGE - 3] + "..."
        return RevisionStartError(
            message,
            reason=CommonReason.REVISION_FAILED,
            revision_reason=RevisionReason.HEALTH_CHECK_CONTAINER_ERROR,
        )

    async def _keep_running(self) -> None:
        """Start the process again whenever it dies while it should be serving."""
        backoff = self._settings.restart_backoff_s
        while not self._stopping:
            process = self._process
            assert process is not None
            returncode = await process.wait()
            await self._drain_pumps()
            if self._stopping:
                return
            self._healthy = False
            how = f"terminated on signal {-returncode}" if returncode < 0 else f"called exit({returncode})"
            self._logs.append_system(
                self.origin, f"Container {how}; a new instance will start.", severity="WARNING"
            )
            logger.warning(
                "revision process exited; restarting",
                extra={"revision": self.origin.revision, "returncode": returncode, "backoff_s": backoff},
            )
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            try:
                await self._spawn(reason="INSTANCE_RESTART")
                await self._wait_healthy()
            except RevisionStartError as exc:
                logger.warning(
                    "revision restart failed", extra={"revision": self.origin.revision, "error": exc.message}
                )
                backoff = min(backoff * 2, self._settings.max_restart_backoff_s)
                continue
            self.restarts += 1
            self._healthy = True
            backoff = self._settings.restart_backoff_s

    async def push_capacity(self, capacity: Capacity) -> bool:
        """Tell the running process its new capacity; it applies it without a restart."""
        self.capacity = capacity
        if not self.running:
            return False
        url = f"http://{self._settings.host}:{self.port}{SCALING_PATH}"
        try:
            async with self._session.put(
                url, json=capacity.as_json(), timeout=aiohttp.ClientTimeout(total=2.0)
            ) as response:
                if response.status < 300:
                    return True
                detail = f"HTTP {response.status}: {(await response.text())[:200]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = repr(exc)
        logger.warning("capacity push failed", extra={"revision": self.origin.revision, "error": detail})
        return False

    async def stop(self) -> None:
        self._stopping = True
        self._healthy = False
        # The watcher first: it may be starting a replacement, which must not be left behind.
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._terminate()
        await self._drain_pumps()

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._settings.stop_timeout_s)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        logger.info(
            "revision process stopped",
            extra={"revision": self.origin.revision, "pid": process.pid, "returncode": process.returncode},
        )

    async def _drain_pumps(self) -> None:
        if not self._pumps:
            return
        _, pending = await asyncio.wait(self._pumps, timeout=1.0)
        for task in pending:
            task.cancel()
        self._pumps = []


def _signal_group(pid: int, signum: signal.Signals) -> None:
    # The process leads its own session, so its group id is its pid; children it started go too.
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
