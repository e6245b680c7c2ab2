"""Merges on a Ray cluster (``merge.executor: ray``): one cluster task per planned merge.

Each merge asks for ``cluster.gpus_per_merge`` GPUs when the cluster has GPUs (and
``merge.device`` is not ``cpu``) and for the memory it needs, estimated from the models' tensor
shapes: mergekit loads tensors lazily, so a merge holds about one output shard plus, per tensor,
every input's copy in float32. Ray runs as many merges at once as resources allow: 15 merges
of a sweep run side by side on 15 GPUs.

A merge task runs the same code as a local merge (:func:`mergepipe.merge.run.run_one`): the
same atomic write into the shared ``merged_models/`` folder, the same record written last, the
same skip-by-hash. Each task gets a fresh worker process (``max_calls=1``), so one merge's
memory never carries over into the next.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mergepipe.config import PipelineConfig
from mergepipe.core.cluster import Resources, check_shared_storage, connect
from mergepipe.core.models import inspect_model
from mergepipe.errors import MergepipeError
from mergepipe.merge.plan import PlannedMerge

BASELINE_BYTES = 2 * 2**30  # interpreter, torch and mergekit in the worker
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _model_dirs(plan: PlannedMerge) -> list[Path]:
    """The local model folders a planned merge reads (``base+adapter`` counts its base)."""
    cfg = plan.mergekit_config
    refs = [str(m.get("model", "")) for m in cfg.get("models") or [] if isinstance(m, dict)]
    refs.append(str(cfg.get("base_model") or ""))
    dirs = []
    for ref in refs:
        path = Path(ref.split("+", 1)[0]) if ref else None
        if path is not None and (path / "config.json").is_file() and path not in dirs:
            dirs.append(path)
    return dirs


def estimated_memory(plan: PlannedMerge, config: PipelineConfig) -> int:
    """Bytes one merge needs in memory (see the module docstring): shard + per-tensor working set."""
    from mergekit.common import parse_kmb

    dirs = _model_dirs(plan)
    inputs = max(1, len(plan.mergekit_config.get("models") or []) + 1)
    largest = params = 0
    for i, folder in enumerate(dirs):
        for shape in inspect_model(folder).tensor_shapes.values():
            count = 1
            for dim in shape:
                count *= dim
            largest = max(largest, count)
            params += count if i == 0 else 0
    shard = min(parse_kmb(config.merge.shard_size), params * _DTYPE_BYTES.get(config.dtype, 4))
    return int(BASELINE_BYTES + shard + (inputs + 2) * largest * 4)


def _merge_on_node(plan: PlannedMerge, config: PipelineConfig) -> dict[str, Any]:
    """Inside a Ray worker: one merge, on the GPU Ray assigned (if any)."""
    import ray

    from mergepipe.core.devices import choose_device
    from mergepipe.merge.run import run_one

    node = f"{ray.util.get_node_ip_address()}:{ray.get_runtime_context().get_node_id()[:8]}"
    device = choose_device(config.merge.device, "merge.device")
    outcome = run_one(plan, config, device)
    return {"wall_seconds": outcome.wall_seconds, "node": node, "device": device}


def run_merges_on_ray(config: PipelineConfig, plans: list[PlannedMerge], *, force: bool = False,
                      report: Callable[[str], None] = print) -> list[Any]:
    """Submit every merge that is not up to date as a cluster task; wait for all; one outcome each."""
    from mergepipe.merge.run import MergeOutcome

    cluster = config.cluster
    resources: Resources = connect(cluster)  # first: it decides how Ray resolves addresses
    import ray

    report(resources.describe())
    if cluster.check_shared_storage:
        check_shared_storage([config.outputs.merged_models, config.outputs.merge_config], resources.nodes)
    gpus = cluster.gpus_per_merge if resources.gpus > 0 and config.merge.device != "cpu" else 0.0
    if config.merge.device == "cuda" and resources.gpus == 0:
        raise MergepipeError("merge.device is 'cuda' but the Ray cluster has no GPU")
    most_memory = max(n.memory for n in resources.nodes)
    task = ray.remote(max_retries=0, max_calls=1)(_merge_on_node)
    outcomes: dict[str, MergeOutcome] = {}
    pending: dict[Any, PlannedMerge] = {}
    waiting = list(plans)  # a merge of merges is submitted once its input merges are done
    index = {p.name: i for i, p in enumerate(plans, 1)}

    def submit_ready() -> None:
        for plan in list(waiting):
            prefix = f"[{index[plan.name]}/{len(plans)}] {plan.name}"
            deps = [outcomes.get(d) for d in plan.depends_on]
            lost = [d for d, o in zip(plan.depends_on, deps, strict=True) if o is not None and o.status == "failed"]
            if lost:
                waiting.remove(plan)
                report(f"{prefix}: FAILED: input merge {lost[0]} failed")
                outcomes[plan.name] = MergeOutcome(plan.name, "failed", plan.output_dir,
                                                   error=f"input merge {lost[0]} failed")
                continue
            if any(o is None for o in deps):
                continue
            waiting.remove(plan)
            if plan.is_complete() and not force:
                report(f"{prefix}: up to date, skipped ({plan.output_dir})")
                outcomes[plan.name] = MergeOutcome(plan.name, "skipped", plan.output_dir)
                continue
            memory = estimated_memory(plan, config)
            if most_memory and memory > most_memory:
                raise MergepipeError(f"merge {plan.name} needs about {memory / 2**30:.1f} GiB of memory but no "
                                     f"node of the Ray cluster has more than {most_memory / 2**30:.1f} GiB")
            ref = task.options(num_gpus=gpus, num_cpus=1, memory=memory).remote(plan, config)
            pending[ref] = plan
            report(f"{prefix}: submitted to the cluster ({gpus:g} GPU, {memory / 2**30:.1f} GiB)")

    try:
        submit_ready()
        while pending or waiting:
            if not pending:  # only merges whose inputs can never be made are left
                submit_ready()
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                plan = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # one failed merge must not stop the others
                    cause = getattr(exc, "cause", None) or exc
                    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
                    report(f"{plan.name}: FAILED: {first}")
                    outcomes[plan.name] = MergeOutcome(plan.name, "failed", plan.output_dir, error=first)
                    continue
                report(f"{plan.name}: done in {result['wall_seconds']:.1f}s on {result['node']} "
                       f"({result['device']}) -> {plan.output_dir}")
                outcomes[plan.name] = MergeOutcome(plan.name, "merged", plan.output_dir, result["wall_seconds"],
                                                   node=result["node"])
            if ready:
                submit_ready()
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return [outcomes[p.name] for p in plans]
