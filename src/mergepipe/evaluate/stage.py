"""The evaluation stage: plan the jobs, run them over the slots, print the summary.

``evaluate_config(config)`` is the one entry point (``mergepipe evaluate``, ``evaluation_only.sh``
and ``mergepipe run`` call it).
"""

from __future__ import annotations

from mergepipe.config import EvaluateSection, PipelineConfig
from mergepipe.errors import StageFailed
from mergepipe.evaluate.executors import Executor
from mergepipe.evaluate.plan import plan_evaluation
from mergepipe.evaluate.scheduler import Interrupted, Progress, RunSummary, run_jobs


def evaluate_config(
    config: PipelineConfig,
    *,
    models: list[str] | None = None,
    suites: list[str] | None = None,
    section: EvaluateSection | None = None,
    retry_failed: bool = False,
    progress: Progress | None = None,
    raise_on_failure: bool = True,
    executor: Executor | None = None,
) -> RunSummary:
    """Evaluate the config's models on its suites; print a summary table; return the summary.

    ``section`` replaces ``config.evaluate`` (command-line overrides applied). Raises
    :class:`StageFailed` (exit code 1) after the summary when any job failed, unless
    ``raise_on_failure`` is False. ``executor`` replaces the local subprocess launcher.
    """
    section = section or config.evaluate
    slots = None
    if executor is None and section.executor == "ray":
        from mergepipe.evaluate.ray_executor import RayExecutor

        executor = RayExecutor(config, section)
        print(f"evaluate: {executor.describe()}", flush=True)
        slots = executor.slots()
    plan = plan_evaluation(config, models=models, suites=suites, section=section, slots=slots)
    print(f"evaluate: {len(plan.models)} model(s), {len(plan.jobs)} job(s) on "
          f"{len(plan.slots)} slot(s) ({', '.join(s.name for s in plan.slots)}); logs in {plan.log_dir}",
          flush=True)
    if executor is not None:
        executor.prepare()  # e.g. the cluster's shared-storage check: before any job starts
    try:
        summary = run_jobs(list(plan.jobs), plan.slots, plan.log_dir, retry_failed=retry_failed,
                           progress=progress, executor=executor)
    except Interrupted as exc:
        print(exc.summary.table(), flush=True)
        raise
    print(summary.table(), flush=True)
    if raise_on_failure and not summary.ok:
        raise StageFailed(f"{len(summary.failed)} of {len(plan.jobs)} evaluation job(s) failed; "
                          f"see the logs listed above (re-run with --retry-failed)")
    return summary
