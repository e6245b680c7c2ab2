"""``mergepipe report``: report.html (self-contained) and report.md from the organized results."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from mergepipe.commands.organize import add_results_arguments

    parser = subparsers.add_parser(
        "report",
        help="write organized_results/report.html and report.md",
        description="Organize the results, draw the figures and write a static report: the "
        "leaderboard with the best value per column marked, the figures, the run's config, "
        "per-stage timings and failures (from run_summary.json when 'mergepipe run' wrote one). "
        "The HTML embeds everything and opens offline.",
    )
    add_results_arguments(parser)
    parser.add_argument("--no-organize", action="store_true",
                        help="use the tables and figures already in --out as they are")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.commands.organize import result_dirs, run_organize
    from mergepipe.results.plots import make_plots
    from mergepipe.results.report import write_report

    dirs = result_dirs(args)
    if not args.no_organize:
        run_organize(dirs)
        make_plots(dirs.out)
    html_path, md_path = write_report(dirs.out, config_path=dirs.config_file)
    print(f"report: {html_path}\n        {md_path}")
    return 0
