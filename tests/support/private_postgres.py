"""A private PostgreSQL server for tests and benchmarks that restart, kill or freeze the database.

The machine's own cluster (127.0.0.1:5432) is shared by everyone and is never touched: this module
runs `initdb` into a temporary directory with the machine's binaries (/usr/lib/postgresql/*/bin),
starts `postgres` in the foreground as a child of this process on a free 127.0.0.1 port with trust
authentication, and removes everything on `close()` (and on exit, if a caller forgot).

As root, PostgreSQL refuses to run: the binaries run as the `postgres` user through `setpriv`,
which exec()s (no intermediate process), so the postmaster's pid is our child's pid and every
signal (stop, kill -9, SIGSTOP/SIGCONT) reaches the server itself. `--pdeathsig` makes the server
shut down fast if this process dies without cleaning up.

    with PrivatePostgres.create() as server:
        url = server.create_database("remediator")
        server.restart()        # fast shutdown, then start again
        server.kill()           # kill -9 of the postmaster and every backend, then start() recovers
        server.freeze(); server.thaw()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_ROOT = Path("/usr/lib/postgresql")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class PostgresUnavailable(Exception):
    """The machine has no PostgreSQL server binaries (or no `postgres` user to run them as root)."""


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres."""
    candidates = []
    if POSTGRES_ROOT.is_dir():
        for entry in POSTGRES_ROOT.iterdir():
            bin_dir = entry / "bin"
            if (bin_dir / "initdb").exists() and (bin_dir / "postgres").exists():
                with contextlib.suppress(ValueError):
                    candidates.append((float(entry.name), bin_dir))
    if not candidates:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries under {POSTGRES_ROOT}/*/bin: "
            "`sudo apt-get install postgresql` (the machine's cluster is not used, only its binaries)"
        )
    return max(candidates)[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children_of(pid: int) -> list[int]:
    """Every process whose parent is `pid` (PostgreSQL's backends and auxiliary processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) is in parentheses and may contain spaces.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


@dataclass
class PrivatePostgres:
    """One throw-away PostgreSQL cluster. Not thread-safe; one owner drives it."""

    bin_dir: Path
    base: Path
    port: int
    user: str | None  # who the server runs as; None: as this process's user
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    restarts: int = field(default=0, init=False)

    @classmethod
    def create(cls, *, port: int | None = None) -> PrivatePostgres:
        """initdb a new cluster in a temporary directory and start it."""
        bin_dir = postgres_bin_dir()
        user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root needs a `postgres` user to run the server as"
                ) from None
            user = "postgres"
        base = Path(tempfile.mkdtemp(prefix="remediator-pg-"))
        server = cls(bin_dir=bin_dir, base=base, port=port or _free_port(), user=user)
        atexit.register(server.close)
        try:
            server._init()
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    # paths and commands

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_server_user(self, argv: list[str], *, pdeathsig: bool = False) -> list[str]:
        if self.user is None:
            return argv
        entry = pwd.getpwnam(self.user)
        wrapper = [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
        ]
        if pdeathsig:
            # SIGINT is PostgreSQL's fast shutdown: sessions are ended, nothing is left running.
            wrapper.append("--pdeathsig=INT")
        return [*wrapper, "--", *argv]

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _init(self) -> None:
        # The base stays root's; the server user may only traverse it to reach its own directories.
        self.base.chmod(0o711)
        for directory in (self.data_dir, self.socket_dir):
            directory.mkdir(mode=0o700)
            self._chown(directory)
        self.log_path.touch()
        self._chown(self.log_path)
        result = subprocess.run(
            self._as_server_user(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            cwd=self.base,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")

    # lifecycle

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._as_server_user(
                    [
                        str(self.bin_dir / "postgres"),
                        "-D",
                        str(self.data_dir),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"port={self.port}",
                        "-c",
                        f"unix_socket_directories={self.socket_dir}",
                        "-c",
                        "max_connections=200",
                        # Only the OS page cache is at risk, and a killed process leaves that intact:
                        # committed data survives kill -9 of the server, as on a real one.
                        "-c",
                        "fsync=off",
                        "-c",
                        "full_page_writes=off",
                    ],
                    pdeathsig=True,
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.base,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, within: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        probe = [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited (code {self.process.returncode}): {self._log_tail()}")
            if subprocess.run(probe, check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready within {within:g}s: {self._log_tail()}")
            time.sleep(0.1)

    def stop(self, *, mode: str = "fast") -> None:
        """Shut down: `fast` (SIGINT, sessions ended) or `immediate` (SIGQUIT, crash recovery next)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.thaw()  # a frozen server cannot shut down
        self.process.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, *, down_seconds: float = 0.0) -> None:
        self.stop()
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def kill(self) -> None:
        """kill -9 of the postmaster and of every backend (as a crashed machine would lose them)."""
        if self.process is None or self.process.poll() is not None:
            return
        pids = [self.process.pid, *_children_of(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        for pid in pids[1:]:
            self._wait_gone(pid)

    def freeze(self) -> None:
        """SIGSTOP the whole server: connections stay open and every query hangs (a stalled disk,
        a paused VM), which is different from a server that refuses connections."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for pid in [self.process.pid, *_children_of(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    @staticmethod
    def _wait_gone(pid: int, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; returns its URL (postgresql://, trust auth)."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                f'CREATE DATABASE "{name}"',
            ],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE {name} failed: {result.stderr.decode(errors='replace')}")
        return self.url(name)

    def close(self) -> None:
        """Stop the server (hard, if it does not stop) and remove its directory. Idempotent."""
        with contextlib.suppress(Exception):
            self.stop(mode="immediate")
        with contextlib.suppress(Exception):
            self.kill()
        shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def __enter__(self) -> PrivatePostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def private_postgres_or_missing() -> Path:
    """The server binaries' directory for a test; a skip that says how to get them, or under CI=true
    a failure (see tests/support/real_parts.py)."""
    from tests.support.real_parts import missing_real_part

    try:
        bin_dir = postgres_bin_dir()
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")
    except (PostgresUnavailable, KeyError) as exc:
        missing_real_part("a private PostgreSQL server", str(exc))
        raise AssertionError("unreachable") from exc
    return bin_dir
