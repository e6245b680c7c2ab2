"""``mergepipe run`` (``script.sh``): the whole pipeline in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from mergepipe.commands.common import (
    add_cluster_options,
    add_config_argument,
    add_model_overrides,
    config_from_args,
)
from mergepipe.errors import StageFailed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the whole pipeline: merge, publish, evaluate, organize, plot, report",
        description=(
            "Validate the whole config, then merge -> publish (if hub.push) -> evaluate (harness and "
            "Holmes suites) -> predict (if predict.queries) -> organize -> plots and report. Finished "
            "merges and evaluation jobs are skipped, so re-running after an interruption resumes. Prints "
            "per-stage wall time and peak memory; exits 1 when any stage had failures."
        ),
    )
    add_config_argument(parser)
    add_model_overrides(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print the plan (merges, jobs per slot, disk use); do nothing")
    parser.add_argument("--jobs", metavar="N",
                        help="CPU evaluation slots when no GPU is visible (default: config evaluate.jobs)")
    parser.add_argument("--retry-failed", action="store_true", help="re-run evaluation jobs that failed before")
    add_cluster_options(parser, "merges and evaluation jobs")
    parser.add_argument("--datasets-dir", metavar="DIR",
                        help="local dataset mirror (default: config evaluate.datasets_dir, $MERGEPIPE_DATASETS_DIR)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.core.locks import holding_run
    from mergepipe.pipeline import (
        RunReport,
        budget_table,
        check_before_building,
        describe_plan,
        prepare_plugins,
        run_pipeline,
        validate,
    )
    from mergepipe.results.report import REPORT_HTML

    config = config_from_args(args, {"evaluate.jobs": args.jobs, "merge.executor": args.executor,
                                     "evaluate.executor": args.executor, "cluster.address": args.ray_address,
                                     "evaluate.datasets_dir": args.datasets_dir})
    if args.dry_run:
        check_before_building(config, offline_ok=True)
        prepare_plugins(config, RunReport(), print)
        for line in describe_plan(validate(config, offline_ok=True)):
            print(line)
        return 0
    with holding_run(config.outputs.logs, config.run, "mergepipe run"):
        report = run_pipeline(config, config_file=Path(args.config).resolve() if Path(args.config).exists() else None,
                              retry_failed=args.retry_failed)
    print("\n" + budget_table(report))
    report_html = config.outputs.organized_results / REPORT_HTML
    if report_html.is_file():
        print(f"\nreport: {report_html}")
    if not report.ok:
        lines = [f"  {f.stage}: {f.job + ': ' if f.job else ''}{f.message}" for f in report.failures]
        print("\nfailures:\n" + "\n".join(lines))
        raise StageFailed(f"{len(report.failures)} failure(s); see above")
    return 0
