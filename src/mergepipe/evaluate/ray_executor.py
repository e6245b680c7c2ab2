"""Evaluation jobs on a Ray cluster: one Ray task per job, wherever Ray places it.

The scheduler still decides what runs when (slots, resume, retries, the summary); this executor
only starts, polls and stops jobs. Each job is a Ray task asking for one GPU (``cluster.gpus_per_job``)
on a cluster with GPUs, else ``cluster.cpus_per_job`` CPUs. The task receives the job's validated
spec (:mod:`mergepipe.evaluate.jobs`) and runs it as ``mergepipe job -`` in a child process of the
Ray worker, with the worker's ``CUDA_VISIBLE_DEVICES`` (set by Ray to the GPU it assigned), its
output appended to the job's log file on the shared storage, exactly as a local job's. The child
dies with its worker (``PR_SET_PDEATHSIG``), so a lost node leaves no job writing on.

Ray's own task retries are off: a job that fails (or whose node dies) is reported failed, and
``--retry-failed`` re-runs it, as with the local executor.
"""

from __future__ import annotations

import time
from typing import Any

from mergepipe.config import EvaluateSection, PipelineConfig
from mergepipe.core.cluster import Resources, check_shared_storage, connect
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.executors import Executor, Handle, Launch
from mergepipe.evaluate.scheduler import Slot, SpecJob

# The exit code reported for a job whose worker or node was lost (as if killed by SIGKILL).
LOST = -9


def _run_on_node(spec_json: str, log_path: str, env: dict[str, str]) -> dict[str, Any]:
    """Inside a Ray worker: run one job spec in a child process, its output appended to its log."""
    import ctypes
    import os
    import signal
    import socket
    import subprocess
    import sys
    from datetime import datetime, timezone

    import ray

    ctx = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()}:{ctx.get_node_id()[:8]}"

    def die_with_parent() -> None:
        with_libc = ctypes.CDLL(None, use_errno=True)
        with_libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"=== {stamp} node {node} host {socket.gethostname()} CUDA_VISIBLE_DEVICES={gpus} "
                  f"mergepipe job -\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, "-m", "mergepipe", "job", "-"], env={**os.environ, **env},
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, preexec_fn=die_with_parent)
        assert proc.stdin is not None
        proc.stdin.write(spec_json)
        proc.stdin.close()
        try:
            code = proc.wait()
        except BaseException:  # ray.cancel: stop the job and everything it started
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
            log.write("=== stopped\n")
            raise
        log.write(f"=== exit code {code}\n")
    return {"code": code, "node": node}


class RayExecutor(Executor):
    """Starts :class:`SpecJob`\\ s as Ray tasks (see the module docstring)."""

    name = "ray"

    def __init__(self, config: PipelineConfig, section: EvaluateSection | None = None) -> None:
        self.config = config
        self.section = section or config.evaluate
        self.resources: Resources = connect(config.cluster)
        out = config.outputs
        self.shared = [out.logs, out.harness_results, out.holmes_results]
        self._remote: Any = None

    @property
    def uses_gpus(self) -> bool:
        return self.resources.gpus > 0 and self.section.device != "cpu" and self.config.cluster.gpus_per_job > 0

    def slots(self) -> list[Slot]:
        """As many slots as the cluster runs jobs at once: one per GPU (or ``gpus_per_job``), else
        ``evaluate.jobs`` CPU slots."""
        cluster = self.config.cluster
        if self.uses_gpus:
            n = int(self.resources.gpus // cluster.gpus_per_job)
            return [Slot(f"ray-gpu{i}", {}, "auto", {"num_gpus": cluster.gpus_per_job}) for i in range(n)]
        if self.section.device == "cuda":
            raise MergepipeError("evaluate.device is 'cuda' but the Ray cluster has no GPU")
        threads = str(max(1, int(cluster.cpus_per_job)))
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        return [Slot(f"ray-cpu{i}", env, "cpu", {"num_cpus": cluster.cpus_per_job, "num_gpus": 0})
                for i in range(self.section.jobs)]

    def describe(self) -> str:
        slots = self.slots()
        return f"{self.resources.describe()}; {len(slots)} job(s) at once ({slots[0].resources})"

    def prepare(self) -> None:
        if self.config.cluster.check_shared_storage:
            check_shared_storage(self.shared, self.resources.nodes)

    def start(self, launch: Launch) -> Handle:
        import ray

        job = launch.job
        if not isinstance(job, SpecJob):
            raise MergepipeError(f"the Ray executor runs job specs only, not {type(job).__name__}")
        if self._remote is None:
            self._remote = ray.remote(max_retries=0)(_run_on_node)
        spec = job.spec_for(launch.slot)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        options = dict(launch.slot.resources)
        ref = self._remote.options(**options).remote(spec.model_dump_json(), str(launch.log_path), launch.env)
        return Handle(launch=launch, native=ref)

    def poll(self, handle: Handle) -> int | None:
        import ray

        ready, _ = ray.wait([handle.native], timeout=0)
        if not ready:
            return None
        try:
            result = ray.get(handle.native)
        except Exception as exc:  # the worker or its node was lost, or the task was cancelled
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            with open(handle.launch.log_path, "a", encoding="utf-8") as log:
                log.write(f"=== lost: {type(exc).__name__}: {first}\n")
            return LOST
        handle.node = str(result.get("node", ""))
        return int(result["code"])

    def stop(self, handle: Handle, grace_seconds: float = 5.0) -> None:
        import ray

        ray.cancel(handle.native)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and not ray.wait([handle.native], timeout=0.2)[0]:
            pass
        if not ray.wait([handle.native], timeout=0)[0]:
            ray.cancel(handle.native, force=True)
