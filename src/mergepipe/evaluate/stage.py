"""The evaluation stage: models x suites -> jobs -> the scheduler.

``evaluate_config(config)`` is the one entry point (``mergepipe evaluate``, ``evaluation_only.sh``
and ``mergepipe run`` call it). Everything is checked before the first job starts: models
resolve, task names exist (with did-you-mean hints), task YAMLs parse, result and log folders
are writable, GPU indices exist.

Job kinds:
* :class:`HarnessJob` runs ``mergepipe eval-harness`` (one lm-eval job) in a subprocess; it is
  finished when a results file with its settings hash exists.
* :class:`ProbeJob` runs ``mergepipe probe`` (Holmes probing, the ``holmes`` suite); the prober
  resumes per dataset itself, and a marker written after a successful run makes it skippable.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergepipe.atomic import write_text
from mergepipe.config import ModelRef, PipelineConfig
from mergepipe.errors import MergepipeError, StageFailed
from mergepipe.evaluate.harness import (
    HarnessSettings,
    PreparedModel,
    check_backend,
    check_writable,
    find_finished,
    include_paths_for,
    prepare_model,
    select_tasks,
    settings_hash,
)
from mergepipe.evaluate.settings import HOLMES_SUITE, EvaluateSection, parse_evaluate_section
from mergepipe.executors import Executor
from mergepipe.scheduler import Interrupted, Job, Progress, RunSummary, Slot, make_slots, run_jobs

ROLE_OF = {"base": "base", "experts": "expert", "merged": "merged"}


@dataclass(frozen=True)
class ModelEntry:
    model: PreparedModel
    role: str | None
    run: str | None = None


class HarnessJob(Job):
    kind = "harness"

    def __init__(self, entry: ModelEntry, suite: str, tasks: list[str], settings: HarnessSettings,
                 results_dir: Path, include_paths: list[Path]) -> None:
        super().__init__(entry.model.model_id, suite, entry.model.reference)
        self.entry = entry
        self.tasks = tasks
        self.settings = settings
        self.results_dir = results_dir
        self.include_paths = include_paths
        self.settings_hash = settings_hash(entry.model.model_id, tasks, settings)

    def command(self, slot: Slot) -> list[str]:
        s = self.settings
        cmd = [sys.executable, "-m", "mergepipe", "eval-harness", self.entry.model.reference, ",".join(self.tasks),
               "--suite", self.suite, "--results-dir", str(self.results_dir), "--device", slot.device,
               "--batch-size", str(s.batch_size), "--backend", s.backend, "--dtype", s.dtype]
        if s.num_fewshot is not None:
            cmd += ["--num-fewshot", str(s.num_fewshot)]
        if s.apply_chat_template:
            cmd.append("--apply-chat-template")
        if s.limit is not None:
            cmd += ["--limit", repr(s.limit)]
        if s.seed is not None:
            cmd += ["--seed", str(s.seed)]
        if self.entry.model.requested_revision:
            cmd += ["--revision", self.entry.model.requested_revision]
        for path in self.include_paths:
            cmd += ["--include-path", str(path)]
        if self.entry.role:
            cmd += ["--role", self.entry.role]
        if self.entry.run:
            cmd += ["--run", self.entry.run]
        return cmd

    def is_finished(self) -> bool:
        return find_finished(self.results_dir / self.model_id / self.suite, self.settings_hash) is not None


class ProbeJob(Job):
    kind = "holmes"

    def __init__(self, entry: ModelEntry, section: Any, data_dir: Path | None, results_dir: Path) -> None:
        super().__init__(entry.model.model_id, HOLMES_SUITE, entry.model.reference)
        self.entry = entry
        self.section = section
        self.data_dir = data_dir
        self.results_dir = results_dir
        blob = json.dumps({"model_id": self.model_id, "data_dir": str(data_dir),
                           **section.model_dump(mode="json")}, sort_keys=True)
        self.settings_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def marker(self) -> Path:
        return self.results_dir / self.model_id / f".mergepipe-probe-{self.settings_hash}.done"

    def command(self, slot: Slot) -> list[str]:
        s = self.section
        cmd = [sys.executable, "-m", "mergepipe", "probe", self.entry.model.reference,
               "--seeds", str(s.seeds), "--out", str(self.results_dir),
               "--engine", s.engine, "--layer", str(s.layer), "--batch-size", str(s.batch_size),
               "--max-length", str(s.max_length), "--device", slot.device,
               "--control" if s.control_task else "--no-control"]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        if s.version:
            cmd += ["--version", s.version]
        if s.dir:
            cmd += ["--holmes-dir", str(s.dir)]
        if self.entry.role:
            cmd += ["--role", self.entry.role, "--reference", self.entry.model.reference]
            if self.entry.run:
                cmd += ["--run", self.entry.run]
        return cmd

    def is_finished(self) -> bool:
        folder = self.results_dir / self.model_id
        return self.marker.is_file() and any(folder.glob("results_*.csv"))

    def mark_done(self) -> None:
        write_text(self.marker, self.settings_hash + "\n")


# -- which models -----------------------------------------------------------------------------

def merged_model_dirs(config: PipelineConfig) -> list[Path]:
    """Every finished merge of the run (a folder with a ``mergepipe_merge.json`` record)."""
    run_dir = config.outputs.merged_models / config.run
    return sorted(p.parent for p in run_dir.glob("*/mergepipe_merge.json"))


def collect_models(config: PipelineConfig, section: EvaluateSection,
                   models: list[str] | None = None) -> list[ModelEntry]:
    """The models to evaluate: ``models`` if given, else the configured roles. Deduplicated by id."""
    wanted: list[tuple[str, str | None, str | None, str | None]] = []  # ref, revision, role, run
    known: dict[str, tuple[str | None, str | None]] = {}
    if config.base_model is not None:
        known[config.base_model.path] = ("base", config.base_model.revision)
    for ref in config.models:
        known.setdefault(ref.path, ("expert", ref.revision))
    if models:
        for ref in models:
            role, revision = known.get(ref, (None, None))
            wanted.append((ref, revision, role, None))
    else:
        if "base" in section.roles and config.base_model is not None:
            wanted.append((config.base_model.path, config.base_model.revision, "base", None))
        if "experts" in section.roles:
            wanted += [(r.path, r.revision, "expert", None) for r in config.models]
        if "merged" in section.roles:
            wanted += [(str(d), None, "merged", config.run) for d in merged_model_dirs(config)]
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for ref, revision, role, run in wanted:
        prepared = prepare_model(ref, revision)
        if prepared.model_id in seen:
            continue
        seen.add(prepared.model_id)
        if role is None and (prepared.local_dir / "mergepipe_merge.json").is_file():
            role = "merged"
        entries.append(ModelEntry(prepared, role, run))
    return entries


# -- the stage --------------------------------------------------------------------------------

@dataclass
class EvaluationPlan:
    jobs: list[Job]
    slots: list[Slot]
    log_dir: Path
    models: list[ModelEntry] = field(default_factory=list)


def plan_evaluation(
    config: PipelineConfig,
    *,
    models: list[str] | None = None,
    suites: list[str] | None = None,
    do_harness: bool | None = None,
    do_holmes: bool | None = None,
    jobs: int | None = None,
    device: str | None = None,
    gpus: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    section: EvaluateSection | None = None,
) -> EvaluationPlan:
    """Validate everything and build the job list; raises a one-line error on bad input."""
    raw = dict(config.evaluate)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    section = section or parse_evaluate_section(raw)
    do_harness = section.do_harness if do_harness is None else do_harness
    do_holmes = section.do_holmes if do_holmes is None else do_holmes
    wanted_suites = list(section.suites) if suites is None else list(suites)
    for name in wanted_suites:
        if name != HOLMES_SUITE and name not in section.suites:
            raise MergepipeError(f"--suites: unknown suite {name!r}; the config defines: "
                                 f"{', '.join(section.suites) or 'none'} (and 'holmes')")
    if suites is not None and HOLMES_SUITE in suites:
        do_holmes = True
    harness_suites = [s for s in wanted_suites if s != HOLMES_SUITE] if do_harness else []
    if not harness_suites and not do_holmes:
        raise MergepipeError("nothing to evaluate: harness and holmes are both off (or no suite selected)")
    slots = make_slots(device or section.device, section.jobs if jobs is None else jobs,
                       section.gpus if gpus is None else gpus)
    out = config.outputs
    check_writable(out.logs, "log dir")
    log_dir = out.logs / config.run / "evaluate"
    entries = collect_models(config, section, models)
    if not entries:
        raise MergepipeError("no model to evaluate: set base_model / models in the config, merge first, "
                             "or pass --models")
    job_list: list[Job] = []
    if harness_suites:
        check_writable(out.harness_results, "results dir")
        check_backend(section.backend)
        all_tasks = sorted({t for s in harness_suites for t in section.suites[s]})
        # Unknown names and broken YAMLs fail here, before any job starts.
        include = select_tasks(all_tasks, include_paths_for(section.include_paths), load_builtin=False).include_paths
        settings = HarnessSettings(
            batch_size=section.batch_size, num_fewshot=section.num_fewshot,
            apply_chat_template=section.apply_chat_template, limit=section.limit,
            backend=section.backend, dtype=section.dtype,
            seed=section.seed if section.seed is not None else config.seed,
        )
        for entry in entries:
            for suite in harness_suites:
                job_list.append(HarnessJob(entry, suite, list(section.suites[suite]), settings,
                                           out.harness_results, include))
    if do_holmes:
        job_list += _probe_jobs(config, entries)
    return EvaluationPlan(job_list, slots, log_dir, entries)


def _probe_jobs(config: PipelineConfig, entries: list[ModelEntry]) -> list[Job]:
    try:
        import mergepipe.commands.probe  # noqa: F401  (the probe command must exist)
        from mergepipe.evaluate.holmes_settings import parse_holmes_section
    except ImportError:
        raise MergepipeError("Holmes probing is not available in this installation (no 'mergepipe probe')") from None
    section = parse_holmes_section(config.holmes, None, "holmes")
    data_dir = section.data_dir
    if data_dir is None and section.engine == "builtin":
        from mergepipe.commands.probe import default_data_dir

        data_dir = default_data_dir()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise MergepipeError(f"holmes.data_dir: folder not found: {data_dir}")
    check_writable(config.outputs.holmes_results, "results dir")
    return [ProbeJob(e, section, Path(data_dir) if data_dir else None, config.outputs.holmes_results)
            for e in entries]


def evaluate_config(
    config: PipelineConfig,
    *,
    models: list[str] | None = None,
    suites: list[str] | None = None,
    do_harness: bool | None = None,
    do_holmes: bool | None = None,
    jobs: int | None = None,
    device: str | None = None,
    gpus: list[int] | None = None,
    retry_failed: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
    raise_on_failure: bool = True,
    executor: Executor | None = None,
) -> RunSummary:
    """Evaluate the config's models on its suites; print a summary table; return the summary.

    ``overrides`` are ``evaluate:`` fields (batch_size, limit, ...) that win over the config.
    Raises :class:`StageFailed` (exit code 1) after the summary when any job failed, unless
    ``raise_on_failure`` is False. ``executor`` replaces the local subprocess launcher.
    """
    plan = plan_evaluation(config, models=models, suites=suites, do_harness=do_harness, do_holmes=do_holmes,
                           jobs=jobs, device=device, gpus=gpus, overrides=overrides)
    print(f"evaluate: {len(plan.models)} model(s), {len(plan.jobs)} job(s) on "
          f"{len(plan.slots)} slot(s) ({', '.join(s.name for s in plan.slots)}); logs in {plan.log_dir}",
          flush=True)
    try:
        summary = run_jobs(plan.jobs, plan.slots, plan.log_dir, retry_failed=retry_failed, progress=progress,
                           executor=executor)
    except Interrupted as exc:
        print(exc.summary.table(), flush=True)
        raise
    print(summary.table(), flush=True)
    if raise_on_failure and not summary.ok:
        raise StageFailed(f"{len(summary.failed)} of {len(plan.jobs)} evaluation job(s) failed; "
                          f"see the logs listed above (re-run with --retry-failed)")
    return summary


def config_for_models(models: list[str], root: Path | None = None) -> PipelineConfig:
    """A minimal config (no file) for evaluating explicit models with default settings."""
    from mergepipe.config import build_config

    config = build_config({"models": [ModelRef(path=m).model_dump() for m in models]}, "flags")
    return config.resolve_paths(root or Path.cwd())
