"""``mergepipe plot``: figures (PNG + SVG) from the organized tables."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from mergepipe.commands.organize import add_results_arguments

    parser = subparsers.add_parser(
        "plot",
        help="draw the figures from organized_results/ into organized_results/plots/",
        description="Draw per-task scores (with the experts' band), Holmes competences, the "
        "Kendall tau heatmap, merged-vs-experts outcomes and parameter sweeps as PNG and SVG. "
        "Runs 'organize' first unless --no-organize is given.",
    )
    add_results_arguments(parser)
    parser.add_argument("--no-organize", action="store_true",
                        help="use the tables already in --out instead of re-reading the results")
    parser.add_argument("--format", dest="formats", action="append", choices=["png", "svg", "pdf"],
                        help="file format (repeatable; default: png and svg)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.commands.organize import result_dirs, run_organize
    from mergepipe.results.plots import FORMATS, make_plots

    dirs = result_dirs(args)
    if not args.no_organize:
        run_organize(dirs)
    written = make_plots(dirs.out, formats=tuple(args.formats or FORMATS))
    print(f"wrote {len(written)} figure file(s) to {dirs.out / 'plots'}")
    return 0
