"""``mergepipe search``: propose, merge, evaluate on the tune tasks, learn; then report honestly.

Each round the optimiser proposes as many candidates as there are evaluation slots (or
``search.parallel``); they are merged by the merge stage (skip-by-hash) under
``merged_models/<study>/`` and evaluated on the ``tune`` tasks by the evaluation stage
(``evaluate_config``: the scheduler over the slots, through the configured executor), so a round's
candidates are evaluated in parallel. Their objective goes back to the study, which is stored on
disk after every round (:mod:`mergepipe.search.study`).

When the budget is spent, the ``report`` tasks are evaluated once, for the best candidate, each
method at its default parameters (the untuned baselines) and the experts. The optimiser never saw
those scores; the result printed, written to ``organized_results/search_summary.json`` and shown in
the report is the best candidate's report score next to the defaults' and the experts'.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergepipe.config import EvaluateSection, MergeSection, MethodSpec, PipelineConfig
from mergepipe.errors import ConfigError, MergepipeError
from mergepipe.results.search_table import ComparedModel, StudySummary, comparison_text, write_summary, write_trials
from mergepipe.search.scores import aggregate, objective, task_scores
from mergepipe.search.space import Space, build_space
from mergepipe.search.study import (
    CANDIDATE_ATTR,
    FAILED_ATTR,
    counted,
    open_study,
    recover_interrupted,
    study_dir,
    study_lock,
)

TUNE_SUITE = "tune"
REPORT_SUITE = "report"


@dataclass
class SearchResult:
    summary: StudySummary
    trials_run: int  # candidates evaluated by this process (not counting earlier runs)
    resumed: list[int] = field(default_factory=list)  # interrupted trials proposed again


def check_split(config: PipelineConfig) -> None:
    """Tune and report tasks resolve and share no task, also through groups and tags (one line)."""
    from mergepipe.evaluate.harness.tasks import include_paths_for, leaf_tasks, select_tasks

    section = config.search
    selection = select_tasks([*section.tune, *section.report], include_paths_for(config.evaluate.include_paths),
                             load_builtin=False)
    tuned = {t: leaf_tasks(selection.task_manager, t) for t in section.tune}
    for name in section.report:
        for tune_name, leaves in tuned.items():
            shared = sorted(leaf_tasks(selection.task_manager, name) & leaves)
            if shared:
                raise ConfigError(f"search.report: {name} shares {shared[0]} with search.tune's {tune_name}; "
                                  "report only on tasks the search does not tune on")


def evaluation_section(config: PipelineConfig) -> EvaluateSection:
    """The evaluation settings of the search: the pipeline's, with the tune and report suites."""
    section = config.search
    return config.evaluate.model_copy(update={
        "suites": {TUNE_SUITE: list(section.tune), REPORT_SUITE: list(section.report)},
        "do_harness": True, "do_holmes": False})


def _merge_config(config: PipelineConfig, specs: list[MethodSpec]) -> PipelineConfig:
    merge = MergeSection.model_validate({**config.merge.model_dump(), "methods": specs, "raw_config": None})
    return config.model_copy(update={"run": config.search_name, "merge": merge})


@dataclass
class Candidate:
    trial: Any
    method: str
    parameters: dict[str, Any]
    name: str
    output_dir: Path | None = None
    model_id: str | None = None
    merge_seconds: float | None = None
    output_bytes: int | None = None
    error: str | None = None


def _merge(config: PipelineConfig, specs: list[MethodSpec], say: Callable[[str], None]) -> dict[str, Any]:
    """Merge ``specs`` under the study's run (skip-by-hash); name -> (plan, outcome)."""
    from mergepipe.merge.run import prepare, run_merges

    merge_config = _merge_config(config, specs)
    plans, _ = prepare(merge_config)
    outcomes = run_merges(merge_config, plans, report=lambda m: say(f"   {m}"))
    return {p.name: (p, o) for p, o in zip(plans, outcomes, strict=True)}


def _evaluate(config: PipelineConfig, models: list[str], suites: list[str], executor: Any) -> None:
    from mergepipe.evaluate.stage import evaluate_config

    if models:
        evaluate_config(config.model_copy(update={"run": config.search_name}), models=models, suites=suites,
                        section=evaluation_section(config), raise_on_failure=False, executor=executor)


def _scores(config: PipelineConfig, model_id: str, suite: str) -> dict[str, float] | None:
    section = evaluation_section(config)
    return task_scores(config.outputs.harness_results, model_id, suite, list(section.suites[suite]),
                       section.harness_settings(config.seed), config.search.metric)


def _model_id(reference: str) -> str:
    from mergepipe.evaluate.models import prepare_model

    return prepare_model(reference).model_id


def _values(config: PipelineConfig, cand: Candidate, obj: float) -> list[float]:
    second = config.search.second_objective
    if second == "merge_seconds":
        return [obj, float(cand.merge_seconds or 0.0)]
    if second == "output_bytes":
        return [obj, float(cand.output_bytes or 0)]
    return [obj]


def _record(path: Path) -> Any:
    from mergepipe.core.records import MergeRecord

    return MergeRecord.read(path)


def run_round(config: PipelineConfig, study: Any, space: Space, n: int, executor: Any,
              say: Callable[[str], None]) -> list[Candidate]:
    """Propose ``n`` candidates, merge them, evaluate them on the tune tasks, tell the study."""
    from optuna.trial import TrialState

    cands = []
    for _ in range(n):
        trial = study.ask()
        method, params = space.suggest(trial)
        name = trial.user_attrs.get(CANDIDATE_ATTR) or f"t{trial.number:03d}-{method}"
        trial.set_user_attr(CANDIDATE_ATTR, name)
        cands.append(Candidate(trial, method, params, name))
    say(f"round: trial(s) {', '.join(str(c.trial.number) for c in cands)}")
    merged = _merge(config, [MethodSpec(name=c.method, parameters=c.parameters, label=c.name) for c in cands], say)
    for c in cands:
        plan, outcome = merged[c.name]
        if outcome.status == "failed":
            c.error = f"merge failed: {outcome.error}"
            continue
        c.output_dir = plan.output_dir
        record = _record(plan.output_dir)
        c.merge_seconds = record.wall_seconds if record else None
        c.output_bytes = record.output_bytes if record else None
        c.model_id = _model_id(str(plan.output_dir))
    _evaluate(config, [str(c.output_dir) for c in cands if c.output_dir], [TUNE_SUITE], executor)
    for c in cands:
        scores = _scores(config, c.model_id, TUNE_SUITE) if c.model_id and not c.error else None
        if scores is None and not c.error:
            c.error = "evaluation failed (see the job log under logs/)"
        value = objective(scores, config.search) if scores is not None else math.nan
        if not c.error and math.isnan(value):
            c.error = "a tune task has no score for the metric"
        if c.error:
            c.trial.set_user_attr(FAILED_ATTR, c.error)
            study.tell(c.trial, state=TrialState.FAIL)
            say(f"   trial {c.trial.number} {c.name}: FAILED ({c.error})")
            continue
        c.trial.set_user_attr("scores", scores)
        c.trial.set_user_attr("model_id", c.model_id)
        c.trial.set_user_attr("merge_seconds", c.merge_seconds)
        study.tell(c.trial, _values(config, c, value))
        say(f"   trial {c.trial.number} {c.name}: objective {value:.4f} ({_params_text(c.parameters)})")
    return cands


def _params_text(params: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, list):
            return "/".join(fmt(x) for x in v)
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} {fmt(v)}" for k, v in params.items())


def best_trials(study: Any, multi: bool) -> list[Any]:
    """The best trial first; with two objectives, the Pareto front ordered by the first objective."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    if multi:
        return sorted(study.best_trials, key=lambda t: (-t.values[0], t.values[1], t.number))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # The first trial to reach the best value (Optuna's own best_trial, with a deterministic tie-break).
    return [max(complete, key=lambda t: (t.values[0], -t.number))]


def _prune(config: PipelineConfig, study: Any, keep: set[int]) -> None:
    """keep_models: best -- delete the weights of scored candidates that are not (or no longer) best."""
    from optuna.trial import TrialState

    if config.search.keep_models != "best":
        return
    run_dir = config.outputs.merged_models / config.search_name
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        name = trial.user_attrs.get(CANDIDATE_ATTR)
        if trial.number in keep or not name or (trial.state == TrialState.FAIL
                                                 and not trial.user_attrs.get(FAILED_ATTR)):
            continue
        folder = run_dir / name
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def trial_rows(config: PipelineConfig, study: Any, space: Space) -> list[dict[str, Any]]:
    """The study's trials as rows of ``search_trials.csv``."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name not in ("COMPLETE", "FAIL") or (trial.state.name == "FAIL"
                                                            and not trial.user_attrs.get(FAILED_ATTR)):
            continue
        method, params = _trial_candidate(trial, space)
        scores = trial.user_attrs.get("scores") or {}
        values = trial.values or []
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else None
        row = {"trial": trial.number, "state": "complete" if trial.state.name == "COMPLETE" else "failed",
               "method": method, "parameters": json.dumps(params, sort_keys=True),
               "name": trial.user_attrs.get(CANDIDATE_ATTR), "model_id": trial.user_attrs.get("model_id"),
               "objective": values[0] if values else None, "second": values[1] if len(values) > 1 else None,
               "seconds": seconds}
        row.update({f"tune:{t}": scores.get(t) for t in config.search.tune})
        rows.append(row)
    return rows


def _trial_candidate(trial: Any, space: Space) -> tuple[str, dict[str, Any]]:
    """(method, parameters) of a stored trial, rebuilt from its parameters as the space names them."""
    import optuna

    fixed = optuna.trial.FixedTrial(dict(trial.params))
    try:
        return space.suggest(fixed)
    except (ValueError, KeyError):  # a failed trial may lack parameters
        return "", {}


def _compare(config: PipelineConfig, best: Any, space: Space, executor: Any,
             say: Callable[[str], None]) -> list[ComparedModel]:
    """Evaluate the report tasks (and the tune tasks where missing) for the best candidate, the
    defaults and the experts; the rows of the comparison."""
    section = config.search
    entries: list[tuple[ComparedModel, str]] = []  # (row, reference to evaluate)
    run_dir = config.outputs.merged_models / config.search_name
    if best is not None:
        method, params = _trial_candidate(best, space)
        name = best.user_attrs[CANDIDATE_ATTR]
        folder = run_dir / name
        if not folder.is_dir():  # its weights were pruned (should not happen: the best is kept)
            merged = _merge(config, [MethodSpec(name=method, parameters=params, label=name)], say)
            folder = merged[name][0].output_dir
        entries.append((ComparedModel(label=name, role="best", method=method, parameters=params,
                                      trial=best.number), str(folder)))
    if section.baseline:
        specs = space.defaults()
        merged = _merge(config, specs, say)
        for spec in specs:
            plan, outcome = merged[spec.label]
            if outcome.status == "failed":
                say(f"   default {spec.name}: merge failed ({outcome.error})")
                continue
            entries.append((ComparedModel(label=spec.label or spec.name, role="default", method=spec.name,
                                          parameters=plan.parameters), str(plan.output_dir)))
    entries += [(ComparedModel(label=m.path, role="expert"), m.path) for m in config.models]
    refs = [ref for _, ref in entries]
    _evaluate(config, refs, [TUNE_SUITE, REPORT_SUITE], executor)
    rows = []
    for row, ref in entries:
        row.model_id = _model_id(ref)
        tune = _scores(config, row.model_id, TUNE_SUITE) or {}
        report = _scores(config, row.model_id, REPORT_SUITE) or {}
        row.tune, row.report = tune, report
        row.tune_objective = objective(tune, section) if tune else None
        row.report_mean = aggregate(report, section.report) if report else None
        rows.append(row)
    return rows


def run_search(config: PipelineConfig, *, say: Callable[[str], None] = print, executor: Any = None,
               organize_results: bool = True) -> SearchResult:
    """Run (or resume) the configured search, then the honest comparison; see the module doc."""
    from mergepipe.evaluate.scheduler import make_slots
    from mergepipe.merge.plan import check_methods

    section = config.search
    space = build_space(config)
    check_split(config)
    ev = evaluation_section(config)
    slots = make_slots(ev.device, ev.jobs, ev.gpus)
    parallel = section.parallel or len(slots)
    # Everything a candidate needs is checked before the first trial: a candidate config validates.
    check_methods(_merge_config(config, space.defaults()))
    start = time.perf_counter()
    folder = study_dir(config)
    with study_lock(folder):
        study = open_study(config, parallel)
        resumed = recover_interrupted(study)
        done, _ = counted(study)
        if done or resumed:
            say(f"search {config.search_name}: resuming, {done} of {section.trials} candidate(s) finished"
                + (f"; re-running interrupted trial(s) {', '.join(map(str, resumed))}" if resumed else ""))
        else:
            say(f"search {config.search_name}: {section.trials} candidate(s), sampler {section.sampler}, "
                f"{parallel} per round; study in {folder}")
        ran = 0
        while done < section.trials:
            n = min(parallel, section.trials - done)
            run_round(config, study, space, n, executor, say)
            ran += n
            done, failed = counted(study)
            best = best_trials(study, section.multi_objective)
            _prune(config, study, {t.number for t in best})
            if organize_results:
                write_trials(config.outputs.organized_results, config.search_name, trial_rows(config, study, space))
        done, failed = counted(study)
        best = best_trials(study, section.multi_objective)
        if not best:
            raise MergepipeError(f"search {config.search_name}: every candidate failed; see the messages above")
        say(f"search: {done} candidate(s) scored ({failed} failed); evaluating the report tasks for the best, "
            "the defaults and the experts")
        compared = _compare(config, best[0], space, executor, say)
        weights = section.weights
        summary = StudySummary(
            study=config.search_name, sampler=section.sampler,
            objective=f"{section.aggregate} of {', '.join(section.tune)}" + (" (weighted)" if weights else ""),
            second_objective=section.second_objective, tune=list(section.tune), report=list(section.report),
            trials_done=done, trials_failed=failed, wall_seconds=round(time.perf_counter() - start, 1),
            compared=compared, pareto=[t.number for t in best] if section.multi_objective else [])
        write_trials(config.outputs.organized_results, config.search_name, trial_rows(config, study, space))
        write_summary(config.outputs.organized_results, summary)
    say("")
    say(comparison_text(summary))
    say(result_line(summary))
    if organize_results:
        _organize(config, say)
    return SearchResult(summary, ran, resumed)


def result_line(summary: StudySummary) -> str:
    """The headline: the best candidate's report score next to the defaults' (whatever the outcome)."""
    best = next((m for m in summary.compared if m.role == "best"), None)
    defaults = [m for m in summary.compared if m.role == "default"]
    if best is None or best.report_mean is None:
        return "no report score for the best candidate"
    parts = [f"report tasks ({', '.join(summary.report)}), never seen by the search: best {best.label} "
             f"{best.report_mean:.3f}"]
    for d in defaults:
        if d.report_mean is not None:
            parts.append(f"{d.label} {d.report_mean:.3f} ({best.report_mean - d.report_mean:+.3f})")
    return "; ".join(parts)


def _organize(config: PipelineConfig, say: Callable[[str], None]) -> None:
    from mergepipe.results.plots import make_plots
    from mergepipe.results.report import write_report
    from mergepipe.results.tables import organize

    out = config.outputs
    organize(out.harness_results, out.holmes_results, out.organized_results,
             mapping_csv=config.holmes.mapping_csv)
    make_plots(out.organized_results)
    html, _ = write_report(out.organized_results)
    say(f"report: {html}")


def describe_search(config: PipelineConfig) -> list[str]:
    """What ``mergepipe search`` would do (everything checked, nothing run): ``--dry-run``."""
    from mergepipe.evaluate.scheduler import make_slots
    from mergepipe.merge.run import prepare

    section = config.search
    space = build_space(config)
    check_split(config)
    ev = evaluation_section(config)
    slots = make_slots(ev.device, ev.jobs, ev.gpus)
    parallel = section.parallel or len(slots)
    prepare(_merge_config(config, space.defaults()), offline_ok=True)  # models resolve, fit together
    lines = [f"search {config.search_name}: {section.trials} candidate(s) of "
             f"{', '.join(m.name for m in section.methods)} (sampler {section.sampler}), {parallel} per round "
             f"over {len(slots)} slot(s) ({', '.join(s.name for s in slots)})"]
    for m in section.methods:
        parts = []
        for key, p in m.space.items():
            what = (f"one of {p.choices}" if p.choices is not None else
                    f"in [{p.low:g}, {p.high:g}]" + (f" step {p.step:g}" if p.step else "") + (" log" if p.log else ""))
            parts.append(f"{key}{' per expert' if p.per_expert else ''} {what}")
        fixed = f"; fixed {_params_text(m.parameters)}" if m.parameters else ""
        lines.append(f"  space {m.name}: {', '.join(parts)}{fixed}")
    second = f" (and minimise {section.second_objective})" if section.multi_objective else ""
    lines.append(f"  objective: maximise the {section.aggregate} of the tune tasks {', '.join(section.tune)}{second}")
    compared = ["the best candidate"] + ([f"{len(section.methods)} default(s)"] if section.baseline else []) + \
        [f"{len(config.models)} expert(s)"]
    lines.append(f"  report tasks (never seen by the search): {', '.join(section.report)}, for "
                 f"{', '.join(compared)}")
    folder = study_dir(config)
    lines.append(f"  study: {folder / 'study.db'}; candidates merged into "
                 f"{config.outputs.merged_models / config.search_name} (keep_models: {section.keep_models})")
    return lines
