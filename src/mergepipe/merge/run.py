"""The merge stage: run every planned merge in-process with mergekit, atomically.

For each merge: the exact mergekit config is written to ``merge_config/<run>/<name>.yaml``;
the model is written into a temporary directory and renamed to
``merged_models/<run>/<name>/`` only when complete, with ``mergepipe_merge.json`` (timings,
peak memory, sizes, versions, config hash) written last inside it. A merge whose finished
output has the same config hash is skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mergepipe.config import PipelineConfig
from mergepipe.core import atomic
from mergepipe.core.devices import choose_device
from mergepipe.core.paths import cache_dir
from mergepipe.core.records import MergeRecord
from mergepipe.core.usage import ResourceMonitor, StageUsage
from mergepipe.merge.adapter_output import FULL_MODEL_SUBDIR, convert_to_adapter
from mergepipe.merge.adapters import lora_cache_key
from mergepipe.merge.plan import (
    PlannedMerge,
    check_methods,
    mergekit_version,
    plan_merges,
    resolve_inputs,
    resolve_stage_inputs,
)
from mergepipe.merge.preflight import run_preflight

LOG = logging.getLogger(__name__)


@dataclass
class MergeOutcome:
    name: str
    status: str  # "merged" | "skipped" | "failed"
    output_dir: Path
    wall_seconds: float = 0.0
    error: str | None = None
    node: str | None = None  # the cluster node it ran on (merge.executor: ray)


def prepare(config: PipelineConfig, offline_ok: bool = False) -> tuple[list[PlannedMerge], int]:
    """Validate, resolve and pre-flight everything; no merging. Returns (plans, bytes/merge).

    ``offline_ok`` (dry runs): Hub models that cannot be fetched now are planned unchecked.
    """
    check_methods(config)
    if config.merge.raw_config is not None:
        base, experts, extra = None, [], {}
    else:
        base, experts = resolve_inputs(config, offline_ok)
        extra = resolve_stage_inputs(config, offline_ok)
    plans = plan_merges(config, (base, experts), extra)
    per_merge = run_preflight(config, plans, base, [*experts, *extra.values()])
    return plans, per_merge


def config_yaml(plan: PlannedMerge) -> str:
    return yaml.safe_dump(plan.mergekit_config, sort_keys=False)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def merge_options(config: PipelineConfig, device: str, lora_cache_key: str = "") -> Any:
    from mergekit.common import parse_kmb
    from mergekit.options import MergeOptions

    return MergeOptions(
        cuda=device == "cuda",
        device=device,
        low_cpu_memory=config.merge.low_cpu_memory and device == "cuda",
        lazy_unpickle=config.merge.lazy_unpickle,
        out_shard_size=parse_kmb(config.merge.shard_size),
        copy_tokenizer=True,
        random_seed=config.seed,
        lora_merge_cache=str(cache_dir() / "lora_merged" / lora_cache_key),
        write_model_card=True,
        quiet=True,
    )


def run_one(plan: PlannedMerge, config: PipelineConfig, device: str) -> MergeOutcome:
    """Merge one model (the caller decided it is not complete yet)."""
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import run_merge

    import mergepipe.merge.methods  # noqa: F401  (register our methods with mergekit)

    text = config_yaml(plan)
    atomic.write_text(plan.config_file, text)
    merge_config = MergeConfiguration.model_validate(plan.mergekit_config)
    atomic.remove_stale_temporaries(plan.output_dir.parent)
    start = time.perf_counter()
    options = merge_options(config, device, lora_cache_key(plan.mergekit_config))
    # mergekit keeps one loader per model *path* for the life of the process: drop them, so an
    # input rewritten in place (a retrained adapter) is read afresh.
    LoaderCache().loaders.clear()
    with ResourceMonitor(StageUsage(plan.name), interval=0.05) as usage, atomic.atomic_dir(plan.output_dir) as tmp:
        # Adapter output: merge into a full model inside the temporary dir, then factor it.
        full = tmp / FULL_MODEL_SUBDIR if plan.adapter_output else tmp
        run_merge(merge_config, str(full), options=options, config_source=text)
        adapter = (convert_to_adapter(full, tmp, plan.adapter_output, config.dtype, device)
                   if plan.adapter_output else None)
        wall = time.perf_counter() - start
        record = MergeRecord(
            name=plan.name,
            run=config.run,
            method=plan.method.name,
            parameters=plan.parameters,
            mergekit_config=plan.mergekit_config,
            config_hash=plan.config_hash,
            mergekit_version=mergekit_version(),
            seed=config.seed,
            dtype=plan.mergekit_config.get("dtype", config.dtype),
            device=device,
            wall_seconds=round(wall, 3),
            peak_rss_bytes=usage.peak_rss_bytes,
            output_bytes=_dir_bytes(tmp),
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            inputs=plan.inputs,
            output="adapter" if adapter is not None else "full",
            adapter=adapter,
            stages=plan.stages or None,
        )
        # Written last: its presence with a matching hash is what "complete" means.
        record.write(tmp)
    return MergeOutcome(plan.name, "merged", plan.output_dir, wall)


def run_merges(
    config: PipelineConfig,
    plans: list[PlannedMerge],
    *,
    force: bool = False,
    keep_going: bool = True,
    report: Callable[[str], None] = print,
) -> list[MergeOutcome]:
    if config.merge.executor == "ray":
        from mergepipe.merge.ray_merge import run_merges_on_ray

        return run_merges_on_ray(config, plans, force=force, report=report)
    device = choose_device(config.merge.device, "merge.device")
    outcomes = []
    failed: set[str] = set()
    for i, plan in enumerate(plans, 1):
        prefix = f"[{i}/{len(plans)}] {plan.name}"
        lost = [d for d in plan.depends_on if d in failed]
        if lost:  # a later stage cannot be made from an earlier one that failed
            reason = f"input merge {lost[0]} failed"
            report(f"{prefix}: FAILED: {reason}")
            outcomes.append(MergeOutcome(plan.name, "failed", plan.output_dir, error=reason))
            failed.add(plan.name)
            continue
        if plan.is_complete() and not force:
            report(f"{prefix}: up to date, skipped ({plan.output_dir})")
            outcomes.append(MergeOutcome(plan.name, "skipped", plan.output_dir))
            continue
        report(f"{prefix}: merging with {plan.method.name} on {device} ...")
        try:
            outcome = run_one(plan, config, device)
        except Exception as exc:  # one failed merge must not stop the others
            if not keep_going:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report(f"{prefix}: FAILED: {first}")
            LOG.debug("merge %s failed", plan.name, exc_info=True)
            outcomes.append(MergeOutcome(plan.name, "failed", plan.output_dir, error=first))
            failed.add(plan.name)
            continue
        report(f"{prefix}: done in {outcome.wall_seconds:.1f}s -> {plan.output_dir}")
        outcomes.append(outcome)
    return outcomes
