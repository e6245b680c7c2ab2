"""The whole pipeline in one call: prepare -> validate -> merge -> publish -> evaluate -> predict -> organize
-> report.

Every stage reads the previous stage's files on disk and skips finished work, so an
interrupted run resumes where it stopped. The whole config (every section, the Hub token when
publishing, models, disk space) is validated before the first merge; what a plugin must build
first (the demo zoo's models) runs as a stage of its own before that. A stage's failures are
collected and reported at the end (non-zero exit), and later stages still run on whatever
earlier stages did produce.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mergepipe import __version__
from mergepipe.config import HubSection, PipelineConfig
from mergepipe.core.plugins import registry
from mergepipe.core.records import Failure, RunSummary, StageSummary
from mergepipe.core.usage import ResourceMonitor, StageUsage, human_bytes
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.harness.preflight import TaskCheck
from mergepipe.merge.plan import PlannedMerge


@dataclass
class Validated:
    """Everything checked before work starts."""

    config: PipelineConfig
    plans: list[PlannedMerge]
    bytes_per_merge: int
    hub: HubSection
    task_checks: dict[str, TaskCheck] = field(default_factory=dict)  # harness suite -> its pre-flight
    missing: list[str] = field(default_factory=list)  # what a dry run found missing (a run stops on it)

    def notes(self) -> list[str]:
        return list(dict.fromkeys(n for c in self.task_checks.values() for n in c.notes()
                                  if not c.fallback_lines()))


@dataclass
class RunReport:
    stages: list[StageUsage] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def validate(config: PipelineConfig, offline_ok: bool = False) -> Validated:
    """Pre-flight every stage (the config itself is already validated); raises MergepipeError.

    ``offline_ok`` (dry runs): what is missing on this machine (Hub models not fetched yet,
    datasets, Python packages, the queries file) is listed in ``missing`` instead of raised.
    """
    from mergepipe.evaluate.plan import check_suites
    from mergepipe.evaluate.queries import read_queries
    from mergepipe.merge.run import prepare
    from mergepipe.publish.settings import check_publishing

    hub = check_publishing(config)
    plans, per_merge = prepare(config, offline_ok=offline_ok)
    missing: list[str] = []
    checks: dict[str, TaskCheck] = {}
    ev = config.evaluate
    if ev.do_harness and ev.suites:
        checks = check_suites(ev)
        for suite, check in checks.items():
            if offline_ok:
                missing += [f"suite {suite}: {line}" for line in check.missing_lines()]
                missing += check.fallback_lines()
            else:
                check.raise_for_problems()
    if config.predict.queries is not None:
        try:
            read_queries(config.predict.queries)
        except MergepipeError as exc:
            if not offline_ok:
                raise
            missing.append(f"predict: {exc}")
    return Validated(config, plans, per_merge, hub, checks, list(dict.fromkeys(missing)))


def check_before_building(config: PipelineConfig, offline_ok: bool = False) -> None:
    """The checks that need nothing a plugin builds (publishing settings, the queries file), run
    before the plugins' preparations: a missing token must not wait for a zoo build of minutes.
    ``offline_ok`` (dry runs): a missing queries file is left for the plan's missing list."""
    from mergepipe.evaluate.queries import read_queries
    from mergepipe.publish.settings import check_publishing

    check_publishing(config)
    if config.predict.queries is not None and not offline_ok:
        read_queries(config.predict.queries)


def describe_plan(v: Validated) -> list[str]:
    """What a run would do: merges, evaluation jobs per slot, expected disk use."""
    from mergepipe.evaluate.scheduler import make_slots

    config, ev = v.config, v.config.evaluate
    todo = [p for p in v.plans if not p.is_complete()]
    size = (f"about {human_bytes(v.bytes_per_merge)} each on disk "
            f"({human_bytes(v.bytes_per_merge * len(todo))} new in {config.outputs.merged_models})"
            if v.bytes_per_merge else "size unknown until the models are fetched")
    lines = [f"run {config.run}: {len(v.plans)} merge(s), {len(todo)} to do, {size}"]
    for plan in v.plans:
        state = "up to date" if plan.is_complete() else "to merge"
        note = plan.note()
        lines.append(f"  merge {plan.name:26s} {plan.method.name:18s} {state}" + (f"  ({note})" if note else ""))
    remote = sorted({r for p in v.plans for r in p.unavailable})
    if remote:
        lines.append(f"  not available locally (downloaded when the run starts; not yet checked): {', '.join(remote)}")
    if v.hub.push:
        lines.append(f"  publish {len(v.plans)} model(s) to {v.hub.namespace} "
                     f"({'private' if v.hub.private else 'public'})")
    n_models = ("base" in ev.roles and config.base_model is not None) + \
        ("experts" in ev.roles) * len(config.models) + ("merged" in ev.roles) * len(v.plans)
    suites = (list(ev.suites) if ev.do_harness else []) + (["holmes"] if ev.do_holmes else [])
    if config.merge.executor == "ray" or ev.executor == "ray":
        from mergepipe.core.cluster import connect

        lines.append(f"  cluster: {connect(config.cluster).describe()}")
        if config.merge.executor == "ray":
            lines.append(f"  merges run as cluster tasks, {config.cluster.gpus_per_merge:g} GPU each when the "
                         "cluster has GPUs")
    if ev.executor == "ray":
        from mergepipe.evaluate.ray_executor import RayExecutor

        slots = RayExecutor(config).slots()
    else:
        slots = make_slots(ev.device, ev.jobs, ev.gpus)
    n_jobs = n_models * len(suites)
    if suites:
        lines.append(f"  evaluate {n_models} model(s) x {len(suites)} suite(s) ({', '.join(suites)}) = "
                     f"{n_jobs} job(s) on {len(slots)} slot(s) ({', '.join(s.name for s in slots)}), "
                     f"about {math.ceil(n_jobs / max(len(slots), 1))} job(s) per slot")
    else:
        lines.append("  evaluate: off (evaluate.do_harness and evaluate.do_holmes are false)")
    if config.predict.queries is not None:
        roles = ", ".join(config.predict.roles)
        lines.append(f"  predict: answers of the {roles} model(s) to {config.predict.queries} into "
                     f"{config.outputs.predictions / config.run}/<model>/{config.predict.queries.name}")
    if suites:
        lines.append(f"  organize, plot and report into {config.outputs.organized_results}")
    for note in v.notes():
        lines.append(f"  note: {note}")
    if remote or v.missing:
        lines.append("missing on this machine:")
        lines += [f"  model {name}: not downloaded yet (a run downloads it)" for name in remote]
        lines += [f"  {line}" for line in v.missing]
    else:
        lines.append("nothing missing on this machine")
    return lines


def _stage(report: RunReport, name: str, work: Callable[[StageUsage], None],
           say: Callable[[str], None]) -> StageUsage:
    usage = StageUsage(name)
    say(f"== {name}")
    try:
        with ResourceMonitor(usage):
            work(usage)
    except MergepipeError as exc:  # StageFailed included
        usage.status, usage.detail = "failed", str(exc)
        report.failures.append(Failure(stage=name, message=str(exc)))
    report.stages.append(usage)
    say(f"   {name}: {usage.status} in {usage.wall_seconds:.1f}s, peak RSS {human_bytes(usage.peak_rss_bytes)}"
        + (f", peak GPU {human_bytes(usage.peak_gpu_bytes)}" if usage.peak_gpu_bytes is not None else ""))
    return usage


def prepare_plugins(config: PipelineConfig, report: RunReport, say: Callable[[str], None]) -> None:
    """Run what installed plugins must build for this config (the demo zoo), each as its own stage."""
    for prep in registry().preparations:
        if not prep.needed(config):
            continue
        stage = _stage(report, prep.name, lambda _usage, prep=prep: prep.run(), say)
        if stage.status == "failed":  # nothing later can work without it
            raise MergepipeError(f"{prep.name}: {stage.detail}")


def run_pipeline(
    config: PipelineConfig,
    *,
    config_file: Path | None = None,
    retry_failed: bool = False,
    say: Callable[[str], None] = print,
) -> RunReport:
    """Run every stage of ``config``; raises MergepipeError only for invalid input."""
    started = dt.datetime.now(dt.timezone.utc)
    report = RunReport()
    check_before_building(config)
    prepare_plugins(config, report, say)
    usage = StageUsage("validate")
    with ResourceMonitor(usage):
        v = validate(config)
    report.stages.append(usage)
    say(f"config valid: {len(v.plans)} merge(s); checked in {usage.wall_seconds:.1f}s")
    outputs = config.outputs

    def merge(stage: StageUsage) -> None:
        from mergepipe.merge.run import run_merges

        outcomes = run_merges(config, v.plans, report=lambda m: say(f"   {m}"))
        failed = [o for o in outcomes if o.status == "failed"]
        stage.extra = {"jobs": len(outcomes), "failed_jobs": len(failed)}
        report.failures += [Failure(stage="merge", job=o.name, message=o.error or "") for o in failed]
        if failed:
            stage.status = "partial" if len(failed) < len(outcomes) else "failed"

    def publish(stage: StageUsage, final: bool = False) -> None:
        from mergepipe.publish.push import LOG_FILE, publish_models

        # Local copies are deleted (when asked) only at the final push, after evaluation.
        settings = v.hub if final else v.hub.model_copy(update={"delete_local_after_push": False})
        done = [(p.name, p.output_dir) for p in v.plans if p.is_complete()]
        outcomes = publish_models(done, settings, run=config.run, merge_config_dir=outputs.merge_config / config.run,
                                  organized_dir=outputs.organized_results if final else None,
                                  log_file=outputs.logs / config.run / LOG_FILE, say=lambda m: say(f"   {m}"))
        failed = [o for o in outcomes if not o.ok]
        report.failures += [Failure(stage=stage.name, job=o.name, message=str(o.error)) for o in failed]
        stage.extra = {"jobs": len(outcomes) - len(failed)}
        if failed:
            stage.status = "failed"

    def evaluate(stage: StageUsage) -> None:
        from mergepipe.evaluate.stage import evaluate_config

        summary = evaluate_config(config, retry_failed=retry_failed, raise_on_failure=False)
        stage.extra = {"jobs": len(summary.results), "failed_jobs": len(summary.failed)}
        report.failures += [Failure(stage="evaluate", job=r.key, message=r.reason or "failed", log=str(r.log or ""))
                            for r in summary.failed]
        if summary.failed:
            stage.status = "partial"

    def organize(stage: StageUsage) -> None:
        from mergepipe.results.plots import make_plots
        from mergepipe.results.tables import organize as organize_results

        holmes = config.holmes
        organize_results(outputs.harness_results, outputs.holmes_results, outputs.organized_results,
                         mapping_csv=holmes.mapping_csv,
                         mapping_search=[holmes.data_dir] if holmes.data_dir else None)
        make_plots(outputs.organized_results)

    def write_report(stage: StageUsage) -> None:
        from mergepipe.results.report import write_report as render

        run_summary(config, config_file, report, started).write(outputs.organized_results)
        render(outputs.organized_results, config_file)

    _stage(report, "merge", merge, say)
    if v.hub.push:
        _stage(report, "publish", publish, say)
    def predict(stage: StageUsage) -> None:
        from mergepipe.evaluate.predict import predict_config

        outcomes = predict_config(config, say=say)
        failed = [(p, e) for p, e in outcomes if e is not None]
        stage.extra = {"jobs": len(outcomes), "failed_jobs": len(failed)}
        report.failures += [Failure(stage="predict", job=p.name, message=e or "") for p, e in failed]
        if failed:
            stage.status = "partial" if len(failed) < len(outcomes) else "failed"

    evaluates = config.evaluate.do_harness or config.evaluate.do_holmes
    if evaluates:
        _stage(report, "evaluate", evaluate, say)
    if config.predict.queries is not None:
        _stage(report, "predict", predict, say)
    if evaluates:  # nothing to organize or report without evaluation results
        _stage(report, "organize", organize, say)
        _stage(report, "report", write_report, say)
    if v.hub.push:
        # The cards now carry the evaluation table; local copies may be deleted after this.
        _stage(report, "republish", lambda s: publish(s, final=True), say)
    run_summary(config, config_file, report, started).write(outputs.organized_results)
    return report


def run_summary(config: PipelineConfig, config_file: Path | None, report: RunReport,
                started: dt.datetime) -> RunSummary:
    return RunSummary(
        run=config.run,
        config_file=str(config_file) if config_file else None,
        config_hash=config.stable_hash(),
        config=config.model_dump(mode="json"),
        mergepipe_version=__version__,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        stages=[StageSummary(**{**s.as_dict(), "seconds": round(s.wall_seconds, 2)}) for s in report.stages],
        total_seconds=round(sum(s.wall_seconds for s in report.stages), 2),
        failures=report.failures,
    )


def budget_table(report: RunReport) -> str:
    """Per-stage wall time and peak memory, plus the total: the run's budget report."""
    rows = [f"{'stage':10s} {'status':8s} {'wall':>9s} {'peak RSS':>10s} {'peak GPU':>10s}"]
    for s in report.stages:
        rows.append(f"{s.name:10s} {s.status:8s} {s.wall_seconds:8.1f}s {human_bytes(s.peak_rss_bytes):>10s} "
                    f"{human_bytes(s.peak_gpu_bytes):>10s}")
    total = sum(s.wall_seconds for s in report.stages)
    peak = max((s.peak_rss_bytes for s in report.stages), default=0)
    gpu = [s.peak_gpu_bytes for s in report.stages if s.peak_gpu_bytes is not None]
    rows.append(f"{'total':10s} {'':8s} {total:8.1f}s {human_bytes(peak):>10s} "
                f"{human_bytes(max(gpu) if gpu else None):>10s}")
    return "\n".join(rows)
