r"""A job queue over device slots: one job per GPU (or per CPU slot) at a time, each in its own
subprocess with its own log file, with resume, failure isolation and retries.

* Slots are discovered, never hard-coded: every visible GPU (``CUDA_VISIBLE_DEVICES`` or
  ``nvidia-smi``) is one slot and a job on it sees only that GPU; with no GPU, ``jobs`` CPU slots.
* A job is anything with a command and a way to tell whether its results are complete
  (:class:`Job`); evaluation jobs are :class:`SpecJob`\ s, whose validated spec
  (:mod:`mergepipe.evaluate.jobs`) is all a worker needs.
* Resume: a finished job is skipped before it is queued; a job that crashed or was killed
  wrote no completion marker, so it runs again.
* A failed job never stops the others; the summary lists it and the run exits non-zero.
* The state of the last run (``<log dir>/jobs.json``) lets ``retry_failed`` re-run only the
  jobs that failed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mergepipe.core.atomic import write_json
from mergepipe.core.devices import check_gpu_indices, visible_gpus
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.executors import Executor, Handle, Launch, LocalSubprocessExecutor

if TYPE_CHECKING:
    from mergepipe.evaluate.jobs import HarnessJobSpec, ProbeJobSpec

STATE_FILE = "jobs.json"
POLL_SECONDS = 0.1


# -- slots -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """Where one job runs at a time: a GPU, or a share of the CPU."""

    name: str  # gpu0 / cpu1 / ray-gpu0
    env: dict[str, str]
    device: str  # what the job should use: "cuda", "cpu", or "auto" (a cluster slot: what the node has)
    resources: dict[str, float] = field(default_factory=dict)  # what a cluster task asks for


def make_slots(device: str = "auto", jobs: int = 1, gpus: list[int] | None = None) -> list[Slot]:
    """One slot per usable GPU, or ``jobs`` CPU slots when there is none (or device is cpu)."""
    if jobs < 1:
        raise MergepipeError(f"--jobs must be at least 1, got {jobs}")
    if device not in ("auto", "cpu", "cuda"):
        raise MergepipeError(f"device must be auto, cpu or cuda, got {device!r}")
    gpu_ids = check_gpu_indices(list(gpus)) if gpus else ([] if device == "cpu" else visible_gpus())
    if gpus and device == "cpu":
        raise MergepipeError("--gpus given with device cpu; drop one of them")
    if device == "cuda" and not gpu_ids:
        raise MergepipeError("device cuda: no GPU is visible")
    if gpu_ids:
        return [Slot(f"gpu{g}", {"CUDA_VISIBLE_DEVICES": g}, "cuda") for g in gpu_ids]
    # CPU slots share the cores: give each job its share so N jobs do not oversubscribe them.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return [Slot(f"cpu{i}", env, "cpu") for i in range(jobs)]


# -- jobs --------------------------------------------------------------------------------------

class Job(ABC):
    """One unit of work: a model evaluated on one suite. Kinds subclass this."""

    kind: str = "job"

    def __init__(self, model_id: str, suite: str, reference: str) -> None:
        self.model_id = model_id
        self.suite = suite
        self.reference = reference

    @property
    def key(self) -> str:
        """Unique within a run; also the log file's name."""
        return f"{self.model_id}__{self.suite}"

    @abstractmethod
    def command(self, slot: Slot, log_dir: Path) -> list[str]:
        """The command that runs the job on ``slot`` (files it needs may go to ``log_dir``)."""

    @abstractmethod
    def is_finished(self) -> bool:
        """True when this job's complete results (for its current settings) exist."""

    def busy_elsewhere(self) -> bool:
        """True while another process (another run, another host) writes this job's results."""
        return False


class SpecJob(Job):
    """A job described by a validated spec (:mod:`mergepipe.evaluate.jobs`): the spec is the job.

    Locally it runs as ``mergepipe job <log_dir>/<key>.job.json``; a distributed executor ships
    :meth:`spec_for` to a worker instead.
    """

    def __init__(self, spec: HarnessJobSpec | ProbeJobSpec) -> None:
        super().__init__(spec.model.model_id, spec.suite, spec.model.reference)
        self.kind = spec.kind
        self.spec = spec

    def spec_for(self, slot: Slot) -> HarnessJobSpec | ProbeJobSpec:
        return self.spec.model_copy(update={"device": slot.device})

    def spec_path(self, log_dir: Path) -> Path:
        return log_dir / f"{self.key}.job.json"

    def command(self, slot: Slot, log_dir: Path) -> list[str]:
        from mergepipe.evaluate.jobs import write_spec

        path = write_spec(self.spec_for(slot), self.spec_path(log_dir))
        return [sys.executable, "-m", "mergepipe", "job", str(path)]

    def is_finished(self) -> bool:
        return self.spec.is_finished()

    def busy_elsewhere(self) -> bool:
        return self.spec.lock().holder() is not None


# -- progress ----------------------------------------------------------------------------------

class Progress:
    """Plain lines when not on a terminal (CI logs); a refreshed status line on a terminal."""

    def __init__(self, total: int, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = total
        self.start = time.monotonic()
        self.counts = {"queued": 0, "running": 0, "done": 0, "failed": 0, "skipped": 0}
        self._last_status = ""

    def elapsed(self) -> str:
        return _clock(time.monotonic() - self.start)

    def status(self) -> str:
        c = self.counts
        return (f"[{self.elapsed()}] {c['done'] + c['failed'] + c['skipped']}/{self.total} | "
                f"queued {c['queued']} running {c['running']} done {c['done']} "
                f"failed {c['failed']} skipped {c['skipped']}")

    def event(self, message: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + message + "\n")
            self.refresh(force=True)
        else:
            self.stream.write(f"{self.status()} {message}\n")
        self.stream.flush()

    def refresh(self, force: bool = False) -> None:
        if not self.tty:
            return
        line = self.status()
        if force or line != self._last_status:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self._last_status = line

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.status() + "\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- running -----------------------------------------------------------------------------------

@dataclass
class JobResult:
    key: str
    kind: str
    model_id: str
    suite: str
    reference: str
    status: str  # done | failed | skipped | not-retried | interrupted | not-started
    slot: str | None = None
    node: str | None = None
    seconds: float | None = None
    submitted_at: float | None = None  # epoch seconds: handed to the executor
    noticed_at: float | None = None  # epoch seconds: its end seen by the scheduler
    returncode: int | None = None
    log: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunSummary:
    results: list[JobResult] = field(default_factory=list)
    wall_seconds: float = 0.0
    slots: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status in ("failed", "interrupted")]

    @property
    def ok(self) -> bool:
        return not self.failed

    def table(self) -> str:
        rows = [("model", "suite", "status", "slot", "node", "time", "log")]
        for r in self.results:
            rows.append((r.model_id, r.suite, r.status + (f" ({r.reason})" if r.reason else ""),
                         r.slot or "-", r.node or "-", _clock(r.seconds) if r.seconds is not None else "-",
                         r.log or "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1]
                 for row in rows]
        lines.insert(1, "-" * min(160, max(len(line) for line in lines)))
        lines.append(f"{self.count('done')} done, {self.count('failed') + self.count('interrupted')} failed, "
                     f"{self.count('skipped')} skipped (already finished), "
                     f"{self.count('not-retried')} not retried, {self.count('not-started')} not started; "
                     f"{_clock(self.wall_seconds)} on "
                     f"{len(self.slots)} slot(s)")
        return "\n".join(lines)


def read_state(log_dir: Path) -> dict[str, dict[str, Any]]:
    import json

    try:
        data = json.loads((log_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("jobs", {}) if isinstance(data, dict) else {}


def _last_line(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 8192))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines if ln and not ln.startswith("=== ")]
    return lines[-1][:200] if lines else None


def run_jobs(
    jobs: list[Job],
    slots: list[Slot],
    log_dir: Path,
    *,
    executor: Executor | None = None,
    retry_failed: bool = False,
    progress: Progress | None = None,
) -> RunSummary:
    """Run ``jobs`` over ``slots``: skip finished ones, isolate failures, record state.

    With ``retry_failed``, only jobs that failed (or were interrupted) in the previous run of this
    log dir are run. Ctrl-C / SIGTERM stop the running jobs, which are then reported interrupted.
    """
    if not slots:
        raise MergepipeError("no slot to run jobs on")
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise MergepipeError(f"job {dup} is listed twice")
    executor = executor or LocalSubprocessExecutor()
    log_dir.mkdir(parents=True, exist_ok=True)
    previous = read_state(log_dir)
    # "running" in the saved state means the previous scheduler itself died mid-job.
    failed_before = {(v.get("reference"), v.get("suite")) for v in previous.values()
                     if v.get("status") in ("failed", "interrupted", "running")}
    progress = progress or Progress(len(jobs))
    start = time.monotonic()
    results: dict[str, JobResult] = {}
    queue: deque[Job] = deque()
    for job in jobs:
        base = JobResult(job.key, job.kind, job.model_id, job.suite, job.reference, "queued",
                         log=str(log_dir / f"{job.key}.log"))
        if job.is_finished():
            base.status = "skipped"
        elif retry_failed and (job.reference, job.suite) not in failed_before:
            base.status = "not-retried"
        else:
            queue.append(job)
        results[job.key] = base
    progress.counts["queued"] = len(queue)
    progress.counts["skipped"] = sum(r.status == "skipped" for r in results.values())
    for r in results.values():
        if r.status == "skipped":
            progress.event(f"skip {r.key}: already finished")

    state = {**previous}

    def save_state() -> None:
        for r in results.values():
            if r.status in ("done", "failed", "interrupted", "running"):
                state[r.key] = r.to_json()
        write_json(log_dir / STATE_FILE, {"updated": datetime.now(timezone.utc).isoformat(), "jobs": state})

    free = list(slots)
    running: dict[str, tuple[Job, Slot, Handle]] = {}
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        while queue or running:
            while queue and free:
                job = _next_job(queue, idle=not running)
                if job is None:  # every queued job is being written by another run right now
                    break
                res = results[job.key]
                progress.counts["queued"] -= 1
                if job.is_finished():  # another run finished it meanwhile: reuse, do not redo
                    res.status, res.reason = "skipped", "finished by another run"
                    progress.counts["skipped"] += 1
                    progress.event(f"skip {job.key}: finished by another run")
                    continue
                slot = free.pop(0)
                launch = Launch(job.command(slot, log_dir), dict(slot.env), log_dir / f"{job.key}.log",
                                job=job, slot=slot)
                try:
                    running[job.key] = (job, slot, executor.start(launch))
                except OSError as exc:  # the command itself could not start: fail this job only
                    free.append(slot)
                    res.status, res.slot, res.reason = "failed", slot.name, f"could not start: {exc}"
                    progress.counts["failed"] += 1
                    progress.event(f"FAILED {job.key} ({res.reason})")
                    continue
                res.status, res.slot, res.submitted_at = "running", slot.name, time.time()
                progress.counts["running"] += 1
                progress.event(f"start {job.key} on {slot.name}")
                save_state()
            dispatched_none = bool(queue and free)
            for key in list(running):
                job, slot, handle = running[key]
                code = executor.poll(handle)
                if code is None:
                    continue
                del running[key]
                free.append(slot)
                results[key].node = handle.node or None
                results[key].noticed_at = time.time()
                _finish(job, results[key], code, time.monotonic() - handle.started, progress)
                save_state()
            progress.refresh()
            if running or dispatched_none:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        interrupted = True
        for key, (_job, _slot, handle) in running.items():
            executor.stop(handle)
            res = results[key]
            res.status, res.reason = "interrupted", "stopped by the user"
            res.seconds = time.monotonic() - handle.started
        for job in queue:
            results[job.key].status = "not-started"
        save_state()
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        progress.close()
    summary = RunSummary(list(results.values()), time.monotonic() - start, [s.name for s in slots])
    if interrupted:
        raise Interrupted(summary)
    return summary


class Interrupted(KeyboardInterrupt):
    def __init__(self, summary: RunSummary) -> None:
        super().__init__("interrupted")
        self.summary = summary


def _next_job(queue: deque[Job], idle: bool) -> Job | None:
    """The first queued job nobody else is writing right now, or None. When nothing of ours is
    running either (``idle``), the first job goes anyway: it waits for the other writer itself."""
    for job in list(queue):
        if not job.busy_elsewhere():
            queue.remove(job)
            return job
    return queue.popleft() if idle and queue else None


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _finish(job: Job, res: JobResult, code: int, seconds: float, progress: Progress) -> None:
    res.returncode, res.seconds = code, seconds
    progress.counts["running"] -= 1
    # Whether a job that exited 0 really finished is judged from what it left on disk.
    if code == 0 and job.is_finished():
        res.status, res.reason = "done", None
        progress.counts["done"] += 1
        progress.event(f"done {job.key} in {_clock(seconds)}" + (f" on {res.node}" if res.node else ""))
        return
    if code == 0:
        reason = "exited 0 but wrote no complete results"
    elif code < 0:
        reason = f"killed by signal {-code}"
    else:
        reason = _last_line(Path(res.log)) if res.log else None
        reason = f"exit {code}: {reason}" if reason else f"exit {code}"
    res.status, res.reason = "failed", reason
    progress.counts["failed"] += 1
    where = f" on {res.node}" if res.node else ""
    progress.event(f"FAILED {job.key}{where} ({reason}); log: {res.log}")
