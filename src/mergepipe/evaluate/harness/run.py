"""One lm-evaluation-harness job: a model and a list of tasks -> ``harness_results/<model-id>/<suite>/``.

The job runs lm-eval's Python API in-process (no second interpreter start-up) and writes its
files with lm-eval's own ``EvaluationTracker``, so the folder holds exactly what ``lm_eval
--output_path ... --log_samples`` writes (see :mod:`mergepipe.evaluate.harness.results` for the
layout and what "finished" means).

lm-eval, torch and transformers are imported only when a job runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergepipe.config import HarnessSettings
from mergepipe.core.atomic import temp_name
from mergepipe.core.devices import choose_device
from mergepipe.core.locks import this_host
from mergepipe.core.paths import check_writable
from mergepipe.core.records import ModelInfo
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.harness import tinybench
from mergepipe.evaluate.harness.dataset_mirror import mirror_record, reading_from_mirror
from mergepipe.evaluate.harness.preflight import TaskCheck, check_tasks
from mergepipe.evaluate.harness.results import (
    RESULTS_GLOB,
    SUITE_RE,
    default_suite_name,
    find_finished,
    remove_incomplete,
    results_lock,
    scores_of,
    settings_hash,
    versions,
)
from mergepipe.evaluate.harness.tasks import TaskSelection, check_backend, include_paths_for, parse_tasks, select_tasks
from mergepipe.evaluate.models import PreparedModel, prepare_model

log = logging.getLogger(__name__)


@dataclass
class HarnessOutcome:
    model_id: str
    suite: str
    status: str  # "done" | "skipped"
    results_file: Path
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_seconds: float = 0.0


def model_args_for(model: PreparedModel, settings: HarnessSettings) -> dict[str, Any]:
    if model.kind == "adapter":
        assert model.base_dir is not None
        if settings.backend == "vllm":
            args: dict[str, Any] = {"pretrained": str(model.base_dir), "enable_lora": True,
                                    "lora_local_path": str(model.local_dir)}
        else:
            args = {"pretrained": str(model.base_dir), "peft": str(model.local_dir)}
    else:
        args = {"pretrained": str(model.local_dir)}
    if settings.dtype != "auto":
        args["dtype"] = settings.dtype
    return args


def run_harness(
    model: str | PreparedModel,
    tasks: list[str],
    *,
    results_dir: Path,
    suite: str | None = None,
    settings: HarnessSettings | None = None,
    include_paths: list[Path | str] | None = None,
    device: str = "auto",
    role: str | None = None,
    run: str | None = None,
    force: bool = False,
    revision: str | None = None,
    datasets_dir: Path | str | None = None,
) -> HarnessOutcome:
    """Evaluate ``model`` on ``tasks`` and write ``<results_dir>/<model-id>/<suite>/``.

    Skips the work (status "skipped") when results with the same settings hash exist, unless
    ``force``. Raises MergepipeError for bad input, before loading anything heavy: unknown tasks,
    a missing Python package or dataset (:mod:`mergepipe.evaluate.harness.preflight`).
    tinyBenchmarks tasks whose IRT estimate cannot be computed here run as their ``_mean``
    variants (:mod:`mergepipe.evaluate.harness.tinybench`). Datasets the mirror ``datasets_dir``
    holds are read from it.
    """
    settings = settings or HarnessSettings()
    requested = parse_tasks(tasks)
    tasks, substitution = tinybench.substitute(requested, settings.limit)
    if any(tinybench.is_mean_variant(t) for t in tasks):
        substitution = substitution or tinybench.irt_unavailable_reason(settings.limit)
    suite = suite or default_suite_name(tasks)
    if not SUITE_RE.match(suite):
        raise MergepipeError(f"--suite: {suite!r} must be letters, digits, '.', '_', '+' or '-'")
    results_dir = Path(results_dir).expanduser().resolve()
    check_writable(results_dir, "results dir")
    check_backend(settings.backend)
    prepared = model if isinstance(model, PreparedModel) else prepare_model(model, revision)
    job_hash = settings_hash(prepared.model_id, tasks, settings)
    model_dir = results_dir / prepared.model_id
    suite_dir = model_dir / suite
    info = ModelInfo.describe(prepared.model_id, prepared.reference, prepared.local_dir, role=role, run=run)

    mirror = Path(datasets_dir).expanduser().resolve() if datasets_dir is not None else None

    def preflight() -> TaskCheck:
        found = check_tasks(requested, include_paths_for(include_paths), datasets_dir=mirror, limit=settings.limit)
        found.raise_for_problems()
        return found

    # Pre-flight before anything is written (not even the lock): a missing package or dataset
    # leaves no trace. Finished results need neither, so they are reused without the check.
    check = preflight() if force or find_finished(suite_dir, job_hash) is None else None

    # One writer per model and suite, across runs and hosts: a second run waits, then reuses.
    with results_lock(model_dir, suite, prepared.model_id):
        done = None if force else find_finished(suite_dir, job_hash)
        if done is not None:
            info.write(results_dir)
            print(f"skip: {prepared.model_id}/{suite} already evaluated with these settings ({done.name})")
            return HarnessOutcome(prepared.model_id, suite, "skipped", done, scores_of(done))
        if check is None:  # the results seen before the lock were removed meanwhile
            check = preflight()
        if substitution and tasks != requested:
            changed = ", ".join(t for t in tasks if tinybench.is_mean_variant(t))
            print(f"note: tinyBenchmarks scored as plain means of the items ({changed}): {substitution}",
                  flush=True)
        selection = select_tasks(tasks, check.include_paths)
        remove_incomplete(model_dir, suite_dir)
        device = choose_device(device, "--device")
        print(
            f"evaluating {prepared.reference} as {prepared.model_id} on {', '.join(tasks)} "
            f"(suite {suite}, backend {settings.backend}, device {device}, dtype {settings.dtype}, "
            f"batch size {settings.batch_size}, fewshot {settings.num_fewshot}, "
            f"chat template {'on' if settings.apply_chat_template else 'off'}, limit {settings.lm_eval_limit()}, "
            f"seeds {list(settings.seeds)})",
            flush=True,
        )
        staging = model_dir / temp_name(suite)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            start = time.perf_counter()
            tracker = _tracker(staging)
            with reading_from_mirror(mirror) as from_mirror, tinybench.irt_parameters_in_place():
                results, samples = _evaluate(prepared, tasks, settings, selection, device, tracker)
            wall = time.perf_counter() - start
            results["mergepipe"] = _record(prepared, suite, tasks, job_hash, settings, device, selection, wall)
            results["mergepipe"].update(_provenance(requested, results, substitution, check, from_mirror))
            final = _write_results(tracker, results, samples, staging, suite_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    info.write(results_dir)
    _print_table(results)
    print(f"results: {final}", flush=True)
    return HarnessOutcome(prepared.model_id, suite, "done", final, scores_of(final), wall)


def _record(prepared: PreparedModel, suite: str, tasks: list[str], job_hash: str,
            settings: HarnessSettings, device: str, selection: TaskSelection, wall: float) -> dict[str, Any]:
    """The top-level ``"mergepipe"`` key of a results file: how the scores were made."""
    return {
        "model_id": prepared.model_id,
        "reference": prepared.reference,
        "model_kind": prepared.kind,
        "adapter_base": str(prepared.base_dir) if prepared.base_dir else None,
        "model_revision": prepared.revision,
        "model_content_hash": prepared.content_hash,
        "suite": suite,
        "tasks": tasks,
        "settings_hash": job_hash,
        "backend": settings.backend,
        "dtype": settings.dtype,
        "batch_size": settings.batch_size,
        "num_fewshot": settings.num_fewshot,
        "apply_chat_template": settings.apply_chat_template,
        "limit": settings.limit,
        "max_gen_toks": settings.max_gen_toks,
        "seed": settings.seed,
        "seeds": {"python": settings.seeds[0], "numpy": settings.seeds[1], "torch": settings.seeds[2],
                  "fewshot": settings.seeds[3]},
        "device": device,
        "host": this_host(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "builtin_tasks_indexed": selection.uses_builtin,
        "wall_seconds": round(wall, 3),
        **versions(),
    }


def _provenance(requested: list[str], results: dict[str, Any], substitution: str | None, check: TaskCheck,
                from_mirror: dict[str, str]) -> dict[str, Any]:
    """How each score was aggregated and where each dataset was read from."""
    names = [*(results.get("results") or {}), *(results.get("groups") or {})]
    sources: dict[str, Any] = {}
    for located in check.datasets:
        path = located.ref.path
        if path in from_mirror:
            record = mirror_record(Path(from_mirror[path])) or {}
            sources[path] = {"source": "mirror", "folder": from_mirror[path], "sha": record.get("sha")}
        else:
            sources.setdefault(path, {"source": {"cache": "Hugging Face cache", "hub": "Hub"}.get(
                located.where, located.where)})
    return {
        "requested_tasks": requested,
        "aggregation": tinybench.aggregation_labels(names, substitution),
        "datasets_dir": str(check.datasets_dir) if check.datasets_dir else None,
        "datasets": sources,
    }


def _tracker(staging: Path) -> Any:
    from lm_eval.loggers import EvaluationTracker

    return EvaluationTracker(output_path=str(staging))


def _evaluate(prepared: PreparedModel, tasks: list[str], settings: HarnessSettings,
              selection: TaskSelection, device: str, tracker: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import lm_eval

    seeds = settings.seeds
    try:
        results = lm_eval.simple_evaluate(
            model=settings.backend,
            model_args=model_args_for(prepared, settings),
            tasks=tasks,
            num_fewshot=settings.num_fewshot,
            batch_size=settings.batch_size,
            device="cuda:0" if device == "cuda" else device,  # the job sees only its own GPU
            limit=settings.lm_eval_limit(),
            log_samples=True,
            evaluation_tracker=tracker,
            gen_kwargs={"max_gen_toks": settings.max_gen_toks} if settings.max_gen_toks else None,
            apply_chat_template=settings.apply_chat_template,
            fewshot_as_multiturn=settings.apply_chat_template,
            task_manager=selection.task_manager,
            random_seed=seeds[0],
            numpy_random_seed=seeds[1],
            torch_random_seed=seeds[2],
            fewshot_random_seed=seeds[3],
        )
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        if selection.uses_builtin and os.environ.get("HF_DATASETS_OFFLINE") == "1":
            raise MergepipeError(
                f"a dataset of {', '.join(tasks)} is not in the local datasets cache and the Hub "
                f"cannot be reached (offline): {str(exc).splitlines()[0][:300]}"
            ) from None
        raise
    if results is None:  # only on non-zero ranks of a distributed run
        raise MergepipeError("lm-eval returned no results")
    samples = results.pop("samples", {})
    return results, samples


def _write_results(tracker: Any, results: dict[str, Any], samples: dict[str, Any],
                   staging: Path, suite_dir: Path) -> Path:
    """Save with lm-eval's own EvaluationTracker (the CLI's code path) into staging, then move."""
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        if task_name in samples:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    written = list(staging.glob(f"*/{RESULTS_GLOB}"))
    if len(written) != 1:  # the tracker logs a warning instead of raising on write errors
        raise MergepipeError(f"lm-eval could not write its results file under {staging}")
    suite_dir.mkdir(parents=True, exist_ok=True)
    # Samples first, the results file last: the results file is the completion marker.
    for sample in sorted(written[0].parent.glob("samples_*.jsonl")):
        os.replace(sample, suite_dir / sample.name)
    final = suite_dir / written[0].name
    os.replace(written[0], final)
    return final


def _print_table(results: dict[str, Any]) -> None:
    try:
        from lm_eval.utils import make_table

        print(make_table(results))
        if results.get("groups"):
            print(make_table(results, "groups"))
    except Exception as exc:  # a display problem must not fail a finished evaluation
        log.debug("could not print the results table: %s", exc)
