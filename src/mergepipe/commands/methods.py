"""``mergepipe methods``: the merge-method catalogue."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list every merge method with its constraints and default parameters",
        description="List the merge methods mergekit (and mergepipe) provide, with the number of "
        "expert models each takes, whether it needs a base model, and its parameters.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("name", nargs="?", help="show only this method")
    parser.set_defaults(func=run)


def _fmt(value: object) -> str:
    return "required" if value is None else str(value)


def run(args: argparse.Namespace) -> int:
    from mergepipe.merge.catalogue import catalogue, get_method

    methods = [get_method(args.name)] if args.name else list(catalogue().values())
    if args.json:
        print(json.dumps([m.as_dict() for m in methods], indent=2, default=str))
        return 0
    print(f"{'method':18s} {'base':6s} {'experts':8s} description")
    for m in methods:
        print(f"{m.name:18s} {'yes' if m.needs_base else 'no':6s} {m.experts_text():8s} {m.description}")
        params = ", ".join(f"{p.name}={_fmt(p.default)}{' (per model)' if p.per_model else ''}"
                           for p in m.parameters)
        if params:
            print(f"{'':34s}parameters: {params}")
    return 0
