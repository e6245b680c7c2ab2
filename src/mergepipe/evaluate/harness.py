"""One lm-evaluation-harness job: a model and a list of tasks -> ``harness_results/<model-id>/<suite>/``.

The job runs lm-eval's Python API in-process (no second interpreter start-up) and writes its
files with lm-eval's own ``EvaluationTracker``, so the folder holds exactly what ``lm_eval
--output_path ... --log_samples`` writes (``results_<timestamp>.json``,
``samples_<task>_<timestamp>.jsonl``), plus a top-level ``"mergepipe"`` key in the results JSON
recording every setting that can change a score.

Only the task folders we know of (``include_paths``, the demo zoo's tasks) are indexed; lm-eval's
thousands of built-in task YAMLs are indexed only when a requested name is not found there.

Finished means: a ``results_*.json`` whose ``mergepipe.settings_hash`` matches the job. Files are
staged in a hidden temporary folder and moved into place samples first, results file last, so an
interrupted job never leaves a results file behind.

This module imports nothing heavy at import time (the scheduler uses its hashing and lookup
helpers); lm-eval, torch and transformers are imported only when a job runs.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mergepipe import __version__
from mergepipe.atomic import TMP_MARK, remove_stale_temporaries
from mergepipe.errors import MergepipeError, ModelError

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")
DTYPES = ("auto", "float32", "float16", "bfloat16")
# lm-eval's own defaults for (python, numpy, torch, fewshot) seeds when none is given.
LM_EVAL_DEFAULT_SEEDS = (0, 1234, 1234, 1234)
RESULTS_GLOB = "results_*.json"
_SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,95}$")


@dataclass(frozen=True)
class HarnessSettings:
    """Everything besides the model and the tasks that can change a score."""

    batch_size: int | str = 1
    num_fewshot: int | None = None
    apply_chat_template: bool = False
    limit: float | None = None
    backend: str = "hf"
    dtype: str = "auto"
    seed: int | None = None  # None = lm-eval's defaults (0, 1234, 1234, 1234)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise MergepipeError(f"--backend: unknown backend {self.backend!r}; choose hf or vllm")
        if self.dtype not in DTYPES:
            raise MergepipeError(f"--dtype: unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        bs = self.batch_size
        if not (bs == "auto" or (isinstance(bs, int) and bs >= 1)):
            raise MergepipeError(f"--batch-size: must be a positive integer or 'auto', got {bs!r}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise MergepipeError(f"--num-fewshot: must be >= 0, got {self.num_fewshot}")
        if self.limit is not None and self.limit <= 0:
            raise MergepipeError(f"--limit: must be > 0, got {self.limit}")

    @property
    def seeds(self) -> tuple[int, int, int, int]:
        return LM_EVAL_DEFAULT_SEEDS if self.seed is None else (self.seed,) * 4

    def lm_eval_limit(self) -> int | float | None:
        # lm-eval reads a value >= 1 as a document count and < 1 as a fraction.
        if self.limit is None:
            return None
        return int(self.limit) if self.limit >= 1 else float(self.limit)


def parse_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"a,b c"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    names: list[str] = []
    for item in items:
        for name in re.split(r"[,\s]+", item.strip()):
            if name and name not in names:
                names.append(name)
    if not names:
        raise MergepipeError("TASKS: no task names given")
    return names


def default_suite_name(tasks: list[str]) -> str:
    """The results sub-folder of an ad-hoc task list (``eval-harness`` without ``--suite``)."""
    joined = "+".join(tasks)
    if _SUITE_RE.match(joined) and len(joined) <= 64:
        return joined
    return "tasks-" + hashlib.sha256(joined.encode()).hexdigest()[:8]


def settings_hash(model_id: str, tasks: list[str], settings: HarnessSettings) -> str:
    """The identity of a harness job's results: same hash = same scores expected."""
    payload = {"model_id": model_id, "tasks": sorted(tasks), **asdict(settings)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- finding finished results ----------------------------------------------------------------

def find_finished(suite_dir: Path, job_hash: str) -> Path | None:
    """The newest complete results file in ``suite_dir`` made with settings hash ``job_hash``."""
    if not suite_dir.is_dir():
        return None
    for path in sorted(suite_dir.glob(RESULTS_GLOB), reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # unreadable = not finished
        if isinstance(data, dict) and (data.get("mergepipe") or {}).get("settings_hash") == job_hash:
            return path
    return None


def remove_incomplete(model_dir: Path, suite_dir: Path) -> list[Path]:
    """Delete what an interrupted job left: staging folders and samples without a results file."""
    removed = remove_stale_temporaries(model_dir)
    if suite_dir.is_dir():
        stamps = {p.stem.removeprefix("results_") for p in suite_dir.glob(RESULTS_GLOB)}
        for sample in suite_dir.glob("samples_*.jsonl"):
            stamp = sample.stem.rsplit("_", 1)[-1]
            if stamp not in stamps:
                sample.unlink(missing_ok=True)
                removed.append(sample)
    return removed


# -- pre-flight checks -----------------------------------------------------------------------

def check_writable(directory: Path, what: str = "results dir") -> None:
    """Raise a one-line error unless ``directory`` can be created and written to."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test{TMP_MARK}{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise MergepipeError(f"{what} {directory} is not writable ({exc.strerror or exc})") from None


def check_backend(backend: str) -> None:
    """The vllm backend needs the vllm package, which is not part of the default environment."""
    import importlib.util

    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise MergepipeError("--backend vllm: the vllm package is not installed (pip install 'lm-eval[vllm]' "
                             "into environments/main, on a machine with a CUDA GPU)")


def check_task_yamls(include_paths: list[Path]) -> None:
    """Parse every task YAML under ``include_paths``; lm-eval would silently skip a broken one."""
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    for root in include_paths:
        files = [root] if root.is_file() else sorted(root.glob("**/*.yaml"))
        for path in files:
            try:
                load_yaml(path, resolve_func=False, recursive=False)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" line {mark.line + 1}" if mark else ""
                problem = getattr(exc, "problem", None) or "syntax error"
                raise MergepipeError(f"task YAML {path}:{where}: {problem}") from None
            except (OSError, ValueError) as exc:
                raise MergepipeError(f"task YAML {path}: {exc}") from None


def is_zoo_task(name: str) -> bool:
    return name == "zoo" or name.startswith("zoo_")


def zoo_include_path() -> Path | None:
    """The demo zoo's task folder (building the zoo on first use), or None without a zoo."""
    try:
        from mergepipe import zoo

        return Path(zoo.task_include_path())
    except (ImportError, AttributeError):
        return None


def include_paths_for(include_paths: list[Path | str] | None) -> list[Path]:
    """The user's task folders, absolute; a folder that does not exist is an error."""
    paths: list[Path] = []
    for p in include_paths or []:
        path = Path(p).expanduser().resolve()
        if not path.exists():
            raise MergepipeError(f"--include-path: task folder not found: {path}")
        if path not in paths:
            paths.append(path)
    return paths


@dataclass
class TaskSelection:
    task_manager: Any
    uses_builtin: bool
    include_paths: list[Path] = field(default_factory=list)


def builtin_task_names() -> list[str]:
    """Names of lm-eval's built-in tasks, groups and tags, cached per lm-eval version.

    Indexing the built-in YAMLs takes seconds to tens of seconds; the names only change with
    the lm-eval version, so validating a task name (and suggesting close ones) is instant after
    the first time.
    """
    from mergepipe.paths import cache_dir

    version = versions()["lm_eval_version"]
    cache = cache_dir() / f"lm_eval_task_names-{version}.json"
    try:
        names = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(names, list):
            return names
    except (OSError, json.JSONDecodeError):
        pass
    from lm_eval.tasks import TaskManager

    names = list(TaskManager(include_defaults=True).all_tasks)
    try:
        from mergepipe.atomic import write_json

        write_json(cache, names)
    except OSError:
        pass  # a read-only cache only costs time
    return names


def select_tasks(tasks: list[str], include_paths: list[Path], load_builtin: bool = True) -> TaskSelection:
    """A TaskManager that knows every requested task, indexing built-in tasks only if needed.

    Raises a one-line error naming unknown tasks with their closest known names. With
    ``load_builtin`` False the names are only validated (the scheduler's pre-flight check).
    """
    from lm_eval.tasks import TaskManager

    include_paths = list(include_paths)
    check_task_yamls(include_paths)
    paths = [str(p) for p in include_paths] or None
    manager = TaskManager(include_path=paths, include_defaults=False)
    missing = [t for t in tasks if t not in manager.all_tasks and not Path(t).is_file()]
    zoo_path = zoo_include_path() if any(is_zoo_task(t) for t in missing) else None
    if zoo_path is not None and zoo_path not in include_paths:
        # The demo zoo's tasks are found without an include path (the zoo is built on first use).
        include_paths.append(zoo_path)
        paths = [str(p) for p in include_paths]
        manager = TaskManager(include_path=paths, include_defaults=False)
        missing = [t for t in tasks if t not in manager.all_tasks and not Path(t).is_file()]
    if not missing:
        return TaskSelection(manager, False, include_paths)
    builtin = builtin_task_names()
    unknown = [t for t in missing if t not in builtin]
    if unknown:
        known = sorted(set(manager.all_tasks) | set(builtin))
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            parts.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise MergepipeError(f"unknown lm-eval task {'; '.join(parts)}")
    # Built-in tasks fetch their data from the Hub: go offline up front when it is unreachable,
    # so a missing dataset fails in one clear line instead of after minutes of retries.
    ensure_offline_if_unreachable()
    if load_builtin:
        manager = TaskManager(include_path=paths, include_defaults=True)
    return TaskSelection(manager, True, include_paths)


def hub_reachable(timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_offline_if_unreachable() -> bool:
    """Set the HF offline variables when the Hub cannot be reached; True when offline."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        offline = True
    elif hub_reachable():
        return False
    else:
        offline = True
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ[var] = "1"
    try:  # already-imported libraries read these at import time
        import datasets.config

        datasets.config.HF_DATASETS_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):
        pass
    return offline


# -- the job -----------------------------------------------------------------------------------

@dataclass
class HarnessOutcome:
    model_id: str
    suite: str
    status: str  # "done" | "skipped"
    results_file: Path
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class PreparedModel:
    reference: str
    model_id: str
    local_dir: Path
    kind: str  # "full" | "adapter"
    base_dir: Path | None  # an adapter's base model
    revision: str | None  # the Hub commit actually used, or the requested revision
    content_hash: str
    requested_revision: str | None = None  # what the user asked for (part of the model id)


def prepare_model(reference: str, revision: str | None = None) -> PreparedModel:
    """Resolve ``reference`` (dir, Hub id, zoo://, adapter) and compute its results id."""
    from mergepipe.config import ModelRef
    from mergepipe.models import fingerprint, model_id, resolve

    ref = ModelRef(path=reference, revision=revision)
    resolved = resolve(ref, "MODEL")
    base_dir: Path | None = None
    if resolved.kind == "adapter":
        base_dir = _adapter_base(resolved.local_dir)
    content = fingerprint(resolved.local_dir)
    if base_dir is not None:
        content = hashlib.sha256((content + fingerprint(base_dir)).encode()).hexdigest()
    snapshot = resolved.local_dir.name if resolved.local_dir.parent.name == "snapshots" else None
    return PreparedModel(
        reference=reference,
        model_id=model_id(ref, resolved),
        local_dir=resolved.local_dir,
        kind=resolved.kind,
        base_dir=base_dir,
        revision=snapshot or revision,
        content_hash=content[:16],
        requested_revision=revision,
    )


def _adapter_base(adapter_dir: Path) -> Path:
    from mergepipe.models import resolve

    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ModelError(f"{adapter_dir}/adapter_config.json: unreadable") from None
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_dir}/adapter_config.json: no base_model_name_or_path")
    candidate = (adapter_dir / base) if not Path(base).is_absolute() and (adapter_dir / base).is_dir() else None
    resolved = resolve(str(candidate) if candidate else base, "adapter base model")
    if resolved.kind != "full":
        raise ModelError(f"{adapter_dir}: the adapter's base {base} is not a full model")
    return resolved.local_dir


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


def choose_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        return device  # e.g. cuda:0, mps
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda:0" if device in ("auto", "cuda") else device
    if device == "cuda":
        raise MergepipeError("--device cuda: no GPU is visible")
    return "cpu"


def versions() -> dict[str, str]:
    out = {"mergepipe_version": __version__}
    for name, key in (("lm_eval", "lm_eval_version"), ("transformers", "transformers_version"),
                      ("torch", "torch_version")):
        try:
            out[key] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[key] = "not installed"
    return out


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
) -> HarnessOutcome:
    """Evaluate ``model`` on ``tasks`` and write ``<results_dir>/<model-id>/<suite>/``.

    Skips the work (status "skipped") when results with the same settings hash exist, unless
    ``force``. Raises MergepipeError for bad input, before loading anything heavy.
    """
    from mergepipe.evaluate import model_info

    settings = settings or HarnessSettings()
    tasks = parse_tasks(tasks)
    suite = suite or default_suite_name(tasks)
    if not _SUITE_RE.match(suite):
        raise MergepipeError(f"--suite: {suite!r} must be letters, digits, '.', '_', '+' or '-'")
    results_dir = Path(results_dir).expanduser().resolve()
    check_writable(results_dir)
    check_backend(settings.backend)
    prepared = model if isinstance(model, PreparedModel) else prepare_model(model, revision)
    job_hash = settings_hash(prepared.model_id, tasks, settings)
    model_dir = results_dir / prepared.model_id
    suite_dir = model_dir / suite
    info = model_info.describe(prepared.model_id, prepared.reference, prepared.local_dir, role=role, run=run)

    done = None if force else find_finished(suite_dir, job_hash)
    if done is not None:
        model_info.write(results_dir, info)
        print(f"skip: {prepared.model_id}/{suite} already evaluated with these settings ({done.name})")
        return HarnessOutcome(prepared.model_id, suite, "skipped", done, _scores(done))

    selection = select_tasks(tasks, include_paths_for(include_paths))
    remove_incomplete(model_dir, suite_dir)
    device = choose_device(device)
    print(
        f"evaluating {prepared.reference} as {prepared.model_id} on {', '.join(tasks)} "
        f"(suite {suite}, backend {settings.backend}, device {device}, dtype {settings.dtype}, "
        f"batch size {settings.batch_size}, fewshot {settings.num_fewshot}, "
        f"chat template {'on' if settings.apply_chat_template else 'off'}, limit {settings.lm_eval_limit()}, "
        f"seeds {list(settings.seeds)})",
        flush=True,
    )
    staging = model_dir / f".{suite}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        start = time.perf_counter()
        tracker = _tracker(staging)
        results, samples = _evaluate(prepared, tasks, settings, selection, device, tracker)
        wall = time.perf_counter() - start
        results["mergepipe"] = _record(prepared, suite, tasks, job_hash, settings, device, selection, wall)
        final = _write_results(tracker, results, samples, staging, suite_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    model_info.write(results_dir, info)
    _print_table(results)
    print(f"results: {final}", flush=True)
    return HarnessOutcome(prepared.model_id, suite, "done", final, _scores(final), wall)


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
        "seed": settings.seed,
        "seeds": {"python": settings.seeds[0], "numpy": settings.seeds[1], "torch": settings.seeds[2],
                  "fewshot": settings.seeds[3]},
        "device": device,
        "builtin_tasks_indexed": selection.uses_builtin,
        "wall_seconds": round(wall, 3),
        **versions(),
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
            device=device,
            limit=settings.lm_eval_limit(),
            log_samples=True,
            evaluation_tracker=tracker,
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


def _scores(results_file: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {task: {k: v for k, v in metrics.items() if k != "alias"}
            for task, metrics in (data.get("results") or {}).items()}


def _print_table(results: dict[str, Any]) -> None:
    try:
        from lm_eval.utils import make_table

        print(make_table(results))
        if results.get("groups"):
            print(make_table(results, "groups"))
    except Exception as exc:  # a display problem must not fail a finished evaluation
        log.debug("could not print the results table: %s", exc)


def main(argv: list[str] | None = None) -> int:
    """``python -m mergepipe.evaluate.harness ...`` = ``mergepipe eval-harness ...``."""
    from mergepipe.cli import main as cli_main

    return cli_main(["eval-harness", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
