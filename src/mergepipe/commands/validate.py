"""``mergepipe validate``: check a config completely without doing any work."""

from __future__ import annotations

import argparse

from mergepipe.commands.common import add_config_argument, add_model_overrides, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate the config, models and merge plan; change nothing",
        description="Run every check the pipeline runs before its first merge (config fields of every "
        "section, methods and their parameters, model paths, architectures, vocabularies, disk space, "
        "Hub names and token when publishing) and report.",
    )
    add_config_argument(parser)
    add_model_overrides(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.pipeline import validate

    config = config_from_args(args)
    checked = validate(config)
    print(f"{args.config}: valid; {len(checked.plans)} merge(s): " + ", ".join(p.name for p in checked.plans))
    return 0
