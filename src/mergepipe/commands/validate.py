"""``mergepipe validate``: check a config completely without doing any work."""

from __future__ import annotations

import argparse

from mergepipe.commands.common import add_config_argument, add_model_overrides, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate the config, models and merge plan; change nothing",
        description="Run every check the pipeline runs before merging (config fields, methods and "
        "their parameters, model paths, architectures, vocabularies, disk space) and report.",
    )
    add_config_argument(parser)
    add_model_overrides(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.merge import prepare

    config = config_from_args(args)
    plans, _ = prepare(config)
    print(f"{args.config}: valid; {len(plans)} merge(s): " + ", ".join(p.name for p in plans))
    return 0
