"""Plan an evaluation: models x suites -> validated job specs over slots (no heavy work).

Everything is checked before the first job starts: models resolve, task names exist (with
did-you-mean hints), task YAMLs parse, their Python functions import and their datasets are
present or reachable (:mod:`mergepipe.evaluate.harness.preflight`), result and log folders are
writable, GPU indices exist, the Holmes data folder exists. The result is a list of
:mod:`mergepipe.evaluate.jobs` specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mergepipe.config import EvaluateSection, PipelineConfig
from mergepipe.config.evaluate import HOLMES_SUITE
from mergepipe.core.paths import check_writable
from mergepipe.core.plugins import registry
from mergepipe.core.records import is_merged_model, merged_model_dirs
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.harness.offline import hub_online
from mergepipe.evaluate.harness.preflight import TaskCheck, check_tasks
from mergepipe.evaluate.harness.tasks import check_backend, include_paths_for
from mergepipe.evaluate.jobs import HarnessJobSpec, JobModel, ProbeJobSpec
from mergepipe.evaluate.models import PreparedModel, prepare_model
from mergepipe.evaluate.scheduler import Slot, SpecJob, make_slots


@dataclass(frozen=True)
class ModelEntry:
    model: PreparedModel
    role: str | None
    run: str | None = None

    def job_model(self) -> JobModel:
        return JobModel(reference=self.model.reference, revision=self.model.requested_revision,
                        model_id=self.model.model_id, role=self.role, run=self.run)  # type: ignore[arg-type]


@dataclass
class EvaluationPlan:
    jobs: list[SpecJob]
    slots: list[Slot]
    log_dir: Path
    models: list[ModelEntry] = field(default_factory=list)


def collect_models(config: PipelineConfig, roles: list[str], models: list[str] | None = None) -> list[ModelEntry]:
    """The models to evaluate: ``models`` if given, else the config's ``roles``. Deduplicated by id."""
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
        if "base" in roles and config.base_model is not None:
            wanted.append((config.base_model.path, config.base_model.revision, "base", None))
        if "experts" in roles:
            wanted += [(r.path, r.revision, "expert", None) for r in config.models]
        if "merged" in roles:
            run_dir = config.outputs.merged_models / config.run
            wanted += [(str(d), None, "merged", config.run) for d in merged_model_dirs(run_dir)]
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for ref, revision, role, run in wanted:
        prepared = prepare_model(ref, revision)
        if prepared.model_id in seen:
            continue
        seen.add(prepared.model_id)
        if role is None and is_merged_model(prepared.local_dir):
            role = "merged"
        entries.append(ModelEntry(prepared, role, run))
    return entries


def plan_evaluation(
    config: PipelineConfig,
    *,
    models: list[str] | None = None,
    suites: list[str] | None = None,
    section: EvaluateSection | None = None,
    slots: list[Slot] | None = None,
) -> EvaluationPlan:
    """Validate everything and build the job list; raises a one-line error on bad input.

    ``section`` replaces ``config.evaluate`` (the command line's overrides applied to it);
    ``slots`` replaces this machine's GPU / CPU slots (a cluster executor's).
    """
    section = section or config.evaluate
    wanted_suites = list(section.suites) if suites is None else list(suites)
    for name in wanted_suites:
        if name != HOLMES_SUITE and name not in section.suites:
            raise MergepipeError(f"--suites: unknown suite {name!r}; the config defines: "
                                 f"{', '.join(section.suites) or 'none'} (and 'holmes')")
    do_holmes = section.do_holmes or (suites is not None and HOLMES_SUITE in suites)
    harness_suites = [s for s in wanted_suites if s != HOLMES_SUITE] if section.do_harness else []
    if not harness_suites and not do_holmes:
        raise MergepipeError("nothing to evaluate: harness and holmes are both off (or no suite selected)")
    slots = slots or make_slots(section.device, section.jobs, section.gpus)
    out = config.outputs
    check_writable(out.logs, "log dir")
    log_dir = out.logs / config.run / "evaluate"
    entries = collect_models(config, list(section.roles), models)
    if not entries:
        raise MergepipeError("no model to evaluate: set base_model / models in the config, merge first, "
                             "or pass --models")
    specs: list[HarnessJobSpec | ProbeJobSpec] = []
    if harness_suites:
        check_writable(out.harness_results, "results dir")
        check_backend(section.backend)
        # Unknown names, broken YAMLs, missing packages and datasets fail here, before any job starts.
        checks = check_suites(section, harness_suites)
        settings = section.harness_settings(config.seed)
        harness_specs = [HarnessJobSpec(model=entry.job_model(), suite=suite, tasks=checks[suite].tasks,
                                        settings=settings, include_paths=checks[suite].include_paths,
                                        results_dir=out.harness_results, datasets_dir=section.datasets_dir)
                         for entry in entries for suite in harness_suites]
        for suite, check in checks.items():  # a suite whose jobs are all finished needs nothing more
            if any(s.suite == suite and not s.is_finished() for s in harness_specs):
                check.raise_for_problems()
        specs += harness_specs
    if do_holmes:
        specs += probe_specs(config, entries)
    return EvaluationPlan([SpecJob(s) for s in specs], slots, log_dir, entries)


def check_suites(section: EvaluateSection, suites: list[str] | None = None) -> dict[str, TaskCheck]:
    """The pre-flight of every harness suite (tasks, their Python functions and datasets)."""
    include = include_paths_for(section.include_paths)
    online = hub_online()
    return {name: check_tasks(list(section.suites[name]), include, datasets_dir=section.datasets_dir,
                              limit=section.limit, online=online)
            for name in (list(section.suites) if suites is None else suites)}


def probing_data_dir(config: PipelineConfig) -> Path | None:
    """The Holmes data folder: ``holmes.data_dir``, else a plugin's default (the demo zoo's sets)."""
    section = config.holmes
    if section.data_dir is not None or section.engine != "builtin":
        return section.data_dir
    source = registry().default_probing_source()
    if source is None:
        raise MergepipeError("holmes.data_dir: no probing data given and no default probing data installed")
    return Path(source.data_dir())


def probe_specs(config: PipelineConfig, entries: list[ModelEntry]) -> list[ProbeJobSpec]:
    data_dir = probing_data_dir(config)
    if data_dir is not None and not data_dir.is_dir():
        raise MergepipeError(f"holmes.data_dir: folder not found: {data_dir}")
    check_writable(config.outputs.holmes_results, "results dir")
    return [ProbeJobSpec(model=e.job_model(), holmes=config.holmes, data_dir=data_dir,
                         results_dir=config.outputs.holmes_results) for e in entries]
