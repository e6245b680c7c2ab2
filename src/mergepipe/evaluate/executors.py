"""How a job is launched on a slot: the small interface the scheduler talks to.

The scheduler decides *what* runs *where* (jobs, slots, resume, retries); an executor only
starts a job's command with a slot's environment, reports when it ends and stops it on request.
:class:`LocalSubprocessExecutor` runs one local subprocess per job; an executor for a
distributed engine implements the same three methods.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from mergepipe.core.locks import this_host


@dataclass
class Launch:
    """One job's command on one slot."""

    command: list[str]
    env: dict[str, str]  # added to (and overriding) the scheduler's own environment
    log_path: Path
    cwd: Path | None = None
    job: Any = None  # the scheduler's Job (an executor that ships specs uses job.spec_for(slot))
    slot: Any = None


@dataclass
class Handle:
    """A started job, as the executor tracks it."""

    launch: Launch
    started: float = field(default_factory=time.monotonic)
    native: Any = None  # executor-specific (a Popen for local subprocesses)
    log_file: IO[str] | None = None
    node: str = ""  # where the job runs, once known (shown in progress lines and the summary)


class Executor(ABC):
    name = "executor"

    def prepare(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Checks before the first job starts (a cluster checks its shared storage here)."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release what the executor holds once every job has ended."""

    @abstractmethod
    def start(self, launch: Launch) -> Handle:
        """Start the command; return at once."""

    @abstractmethod
    def poll(self, handle: Handle) -> int | None:
        """The exit code once the job has ended, else None. Negative = killed by that signal."""

    @abstractmethod
    def stop(self, handle: Handle, grace_seconds: float = 5.0) -> None:
        """Stop the job (and everything it started); wait at most ``grace_seconds`` before killing."""


class LocalSubprocessExecutor(Executor):
    """One subprocess per job in its own process group, stdout and stderr to the job's log file."""

    name = "local"

    def start(self, launch: Launch) -> Handle:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = launch.log_path.open("a", encoding="utf-8")
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(launch.env.items()))
        log.write(f"=== {stamp} {shown_env} {shlex.join(launch.command)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                launch.command,
                env={**os.environ, **launch.env},
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the scheduler only
            )
        except OSError as exc:
            log.write(f"=== could not start: {exc}\n")
            log.close()
            raise
        return Handle(launch=launch, native=proc, log_file=log, node=this_host())

    def poll(self, handle: Handle) -> int | None:
        code = handle.native.poll()
        if code is not None:
            self._close(handle, code)
        return code

    def stop(self, handle: Handle, grace_seconds: float = 5.0) -> None:
        proc: subprocess.Popen[bytes] = handle.native
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._close(handle, proc.returncode)

    @staticmethod
    def _close(handle: Handle, code: int | None) -> None:
        if handle.log_file is not None and not handle.log_file.closed:
            handle.log_file.write(f"=== exit code {code}\n")
            handle.log_file.close()
