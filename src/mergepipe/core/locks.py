"""Locks that name their holder, for runs and results shared by processes on one or many hosts.

A lock is a file created with ``O_CREAT | O_EXCL`` holding its owner (host, pid, the pid's start
time, purpose, since when). Exclusive creation is atomic on local filesystems and on NFS v3 and
later (Linux clients since 2.6), which is why it is used rather than ``fcntl``/``flock``: those
are advisory, per host, and on NFS depend on a lock daemon many clusters do not run.

While held, the owner refreshes the file's modification time every ``heartbeat`` seconds. A lock
is stale, and may be broken, when its owner is gone:

- on the same host: its pid no longer runs (or now belongs to a process started later);
- on another host (pids cannot be checked across hosts): no heartbeat for ``stale_after`` seconds.

Limits: clocks of the hosts must roughly agree (the heartbeat age compares the file's mtime,
set by the file server or the writer, with this host's clock; keep ``stale_after`` well above
any skew); NFS attribute caching delays a heartbeat's visibility by up to ``actimeo`` (default at
most 60 s), so ``stale_after`` defaults to 5 minutes. Breaking a stale lock renames it away
first, so two processes breaking the same lock cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from mergepipe.errors import MergepipeError

DEFAULT_HEARTBEAT = 10.0
DEFAULT_STALE_AFTER = 300.0
# A lock file younger than this may still be being written by its creator.
_FRESH = 5.0


class LockHeld(MergepipeError):
    """Someone else holds the lock (the message names them)."""


def this_host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """When ``pid`` started (kernel ticks since boot, Linux), to tell a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, started: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return started is None or process_start(pid) in (None, started)


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    pid_start: str | None
    purpose: str
    since: str
    token: str

    @classmethod
    def me(cls, purpose: str) -> Owner:
        return cls(this_host(), os.getpid(), process_start(os.getpid()), purpose,
                   datetime.now(timezone.utc).isoformat(timespec="seconds"), uuid.uuid4().hex)

    def describe(self) -> str:
        return f"{self.purpose} (host {self.host}, pid {self.pid}, since {self.since})"


def read_owner(path: Path) -> Owner | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Owner(**{k: data.get(k) for k in Owner.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def is_stale(path: Path, stale_after: float = DEFAULT_STALE_AFTER) -> bool:
    """Whether the lock at ``path`` was left by an owner that is gone (False if it is free)."""
    age = _age(path)
    if age is None:
        return False
    owner = read_owner(path)
    if owner is None:  # unreadable: being written right now, or garbage from a crash
        return age > _FRESH
    if owner.host == this_host():
        return not pid_alive(owner.pid, owner.pid_start)
    return age > stale_after


class FileLock:
    """An exclusive lock file (see the module docstring); usable as a context manager."""

    def __init__(self, path: Path, purpose: str, *, heartbeat: float = DEFAULT_HEARTBEAT,
                 stale_after: float = DEFAULT_STALE_AFTER) -> None:
        self.path = Path(path)
        self.purpose = purpose
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.owner: Owner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> Owner | None:
        """Who holds the lock now, when someone (alive) does."""
        if not self.path.exists() or is_stale(self.path, self.stale_after):
            return None
        return read_owner(self.path)

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            owner = Owner.me(self.purpose)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not is_stale(self.path, self.stale_after):
                    return False
                self._break()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(owner), fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.owner = owner
            self._start_heartbeat()
            return True
        return False

    def _break(self) -> None:
        """Move a stale lock out of the way; only one of several breakers succeeds."""
        tombstone = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, tombstone)
            tombstone.unlink(missing_ok=True)

    def acquire(self, timeout: float | None = 0.0, poll: float = 0.5, what: str = "") -> None:
        """Take the lock, waiting up to ``timeout`` seconds (None: forever); else raise LockHeld."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if deadline is not None and time.monotonic() >= deadline:
                holder = read_owner(self.path)
                who = holder.describe() if holder else "another process"
                raise LockHeld(f"{what or self.path} is in use by {who}; lock file {self.path}")
            time.sleep(poll)

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._thread = threading.Thread(target=beat, name=f"lock-heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        current = read_owner(self.path)
        # Only our own lock is removed: a lock broken as stale and retaken by someone else stays.
        if self.owner is not None and current is not None and current.token == self.owner.token:
            self.path.unlink(missing_ok=True)
        self.owner = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_lock(logs_dir: Path, run: str, purpose: str) -> FileLock:
    """The lock of one run's outputs (``<logs>/<run>/.run.lock``): one process works on a run at a time."""
    return FileLock(Path(logs_dir) / run / ".run.lock", purpose)


@contextlib.contextmanager
def holding_run(logs_dir: Path, run: str, purpose: str) -> Iterator[FileLock]:
    """Hold the run's lock, or fail at once with one line naming its holder (host and pid)."""
    lock = run_lock(logs_dir, run, purpose)
    lock.acquire(timeout=0, what=f"run {run!r}")
    try:
        yield lock
    finally:
        lock.release()
