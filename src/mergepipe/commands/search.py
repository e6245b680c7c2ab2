"""``mergepipe search``: parameter search over merge methods, tuned and reported on separate tasks."""

from __future__ import annotations

import argparse

from mergepipe.commands.common import add_config_argument, add_model_overrides, config_from_args
from mergepipe.config import SearchSection
from mergepipe.config.options import add_model_options, given, validate_with_flags

SEARCH_FLAGS = ("trials", "parallel", "sampler", "name", "keep_models")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search merge parameters (Optuna) on the tune tasks; report on held-out tasks",
        description=(
            "Propose candidates with Optuna (section 'search:'), merge each and evaluate it on the tune "
            "tasks over the evaluation slots, and learn from the scores; then evaluate the report tasks, "
            "which the search never saw, for the best candidate, each method's defaults and the experts, "
            "and print them side by side. The study is stored in <outputs.search>/<name>/study.db: "
            "re-running resumes, without repeating finished candidates. See docs/search.md."
        ),
    )
    add_config_argument(parser)
    add_model_overrides(parser)
    add_model_options(parser.add_argument_group("search (override the config's search: section)"),
                      SearchSection, SEARCH_FLAGS)
    parser.add_argument("--jobs", metavar="N", help="CPU evaluation slots (default: config evaluate.jobs)")
    parser.add_argument("--dry-run", action="store_true", help="check everything and print the plan; run nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.pipeline import RunReport, prepare_plugins
    from mergepipe.search.run import describe_search, run_search

    config = config_from_args(args, {"evaluate.jobs": args.jobs})
    flags = given(args, SEARCH_FLAGS)
    if flags:
        section = validate_with_flags(SearchSection, config.search.model_dump(), flags, args.config, "search.")
        config = config.model_copy(update={"search": section})
    prepare_plugins(config, RunReport(), print)
    if args.dry_run:
        for line in describe_search(config):
            print(line)
        return 0
    run_search(config)
    return 0
