"""A server process managed through a pid file in a state directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says what to do."""


class PortInUseError(ServiceError):
    def __init__(self, service: str, port: int) -> None:
        super().__init__(
            f"{service}: port 127.0.0.1:{port} is already taken by another process; "
            f"free it or choose another port (see `sandmeter stack --help`)"
        )
        self.service, self.port = service, port


class StartTimeoutError(ServiceError):
    pass


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # a reused pid belongs to another program: only our binary counts
    return marker.encode() in cmdline


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    state_dir: Path
    ports: Sequence[int]
    ready: Callable[[], bool]
    # what must appear in the pid's command line for it to be ours (default: argv[0]'s name);
    # "prometheus" also appears in prometheus-alertmanager's, so those two pass their config path
    marker: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pidfile(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.state_dir / f"{self.name}.out"

    @property
    def _marker(self) -> str:
        return self.marker or Path(self.argv[0]).name

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid, self._marker) else None

    def start(self, timeout_s: float) -> bool:
        """Starts the process unless it already runs; returns True when it started it."""
        if self.pid() is not None:
            return False
        self.spawn()
        self.await_ready(timeout_s)
        return True

    def spawn(self) -> None:
        """Launches the process without waiting for it (see `await_ready`)."""
        for port in self.ports:
            if not port_free(port):
                raise PortInUseError(self.name, port)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log:
            self._proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.state_dir,
            )
        self.pidfile.write_text(f"{self._proc.pid}\n")

    def await_ready(self, timeout_s: float) -> None:
        """Waits until the spawned process answers; stops it and raises if it does not."""
        proc = self._proc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self.pidfile.unlink(missing_ok=True)
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} at start; see {self.logfile}: {self._log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        raise StartTimeoutError(f"{self.name} did not answer within {timeout_s:.0f} s; see {self.logfile}")

    def stop(self, timeout_s: float = 15.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid, self._marker):
            _reap(pid)
            time.sleep(0.1)
        if _alive(pid, self._marker):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
            _reap(pid)
        _reap(pid)  # a child that exited at once is a zombie, which _alive already calls gone
        self.pidfile.unlink(missing_ok=True)
        return True

    def _log_tail(self, n: int = 400) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""


def _reap(pid: int) -> None:
    # our own child turns zombie until waited for; a zombie's cmdline is empty
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
