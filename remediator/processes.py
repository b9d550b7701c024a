"""Child processes of the local stack: started with their logs in files, awaited until ready,
stopped in order, and never left behind.

Children get PR_SET_PDEATHSIG on Linux, so even a SIGKILLed runner takes them down, and their own
session, so a terminal's Ctrl-C reaches only the runner, which then stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from incidents import RemediatorError

PR_SET_PDEATHSIG = 1


class StackError(RemediatorError):
    pass


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ensure_port_free(port: int, *, what: str, option: str) -> None:
    """A clear error before anything starts, rather than a child dying with `address in use`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves bind: a port held only by TIME_WAIT connections is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StackError(
                    f"port {port} for {what} is already in use on 127.0.0.1; stop what uses it or pass "
                    f"{option} with another port"
                ) from None
            raise


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class ChildProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    # Where it answers 200 once ready: awaited at start, and again after a restart.
    ready_url: str | None = None
    process: asyncio.subprocess.Process | None = field(default=None, init=False)

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )

    async def wait(self) -> int:
        """Until the process exits; its exit code."""
        assert self.process is not None
        return await self.process.wait()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def wait_ready(self, url: str, *, within: float, session: aiohttp.ClientSession) -> None:
        """Poll `url` until it answers 200; fail early, with the log's tail, if the process exits."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise StackError(
                    f"{self.name} exited (code {code}) before it was ready; its log ({self.log_path}) ends:\n"
                    f"{tail(self.log_path)}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise StackError(
                    f"{self.name} was not ready at {url} within {within:g}s; "
                    f"its log ({self.log_path}) ends:\n"
                    f"{tail(self.log_path)}"
                )
            await asyncio.sleep(0.1)

    async def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def python_module(module: str, *args: str) -> list[str]:
    """argv running `module` with this interpreter (the venv Remediator is installed in)."""
    return [sys.executable, "-m", module, *args]


# What every child needs of this process's environment: where programs, the venv and the home
# directory are, the locale and time zone, and where temporary files go. Anything else in the shell
# (tokens, cloud credentials, other programs' settings) reaches a child only when it is named for it.
BASE_ENVIRONMENT = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH"}
)
BASE_ENVIRONMENT_PREFIXES = ("LC_",)
# How to reach the network through a proxy or a private CA, for children that call out.
NETWORK_ENVIRONMENT = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)


def child_environment(
    *,
    names: frozenset[str] = frozenset(),
    prefixes: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The base variables of `environ` (this process's by default), those named in `names` or starting
    with one of `prefixes`, and `overrides`. Children inherit the venv's PATH, nothing they do not need."""
    source = os.environ if environ is None else environ
    allowed = BASE_ENVIRONMENT | names
    env = {
        name: value
        for name, value in source.items()
        if name in allowed or name.startswith((*BASE_ENVIRONMENT_PREFIXES, *prefixes))
    }
    env.update(overrides)
    return env
