"""``mergepipe merge``: merge the experts with every configured method."""

from __future__ import annotations

import argparse

from mergepipe.commands.common import (
    add_cluster_options,
    add_config_argument,
    add_model_overrides,
    config_from_args,
)
from mergepipe.errors import StageFailed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="merge the experts with each configured method (mergekit, in-process)",
        description=(
            "Validate the config, check that the models fit together and that there is disk space, "
            "then merge with each method. Finished merges whose config is unchanged are skipped. "
            "Outputs: merged_models/<run>/<name>/ and merge_config/<run>/<name>.yaml."
        ),
    )
    add_config_argument(parser)
    add_model_overrides(parser)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"],
                        help="where merge math runs (default: config merge.device, auto = cuda when visible)")
    parser.add_argument("--cuda", dest="device", action="store_const", const="cuda",
                        help="merge on the GPU (same as --device cuda)")
    parser.add_argument("--force", action="store_true", help="merge again even when up to date")
    add_cluster_options(parser, "merges")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; merge nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.core.locks import holding_run
    from mergepipe.merge.run import prepare, run_merges

    config = config_from_args(args, {"merge.executor": args.executor, "cluster.address": args.ray_address})
    if args.device:
        config = config.model_copy(update={"merge": config.merge.model_copy(update={"device": args.device})})
    plans, per_merge = prepare(config)
    if args.dry_run:
        print(f"run {config.run}: {len(plans)} merge(s), about {per_merge / 2**20:.1f} MiB each")
        for plan in plans:
            state = "up to date" if plan.is_complete() else "to merge"
            note = plan.note()
            print(f"  {plan.name:28s} {plan.method.name:18s} {state:10s} -> {plan.output_dir}"
                  + (f"  ({note})" if note else ""))
        return 0
    with holding_run(config.outputs.logs, config.run, "mergepipe merge"):
        outcomes = run_merges(config, plans, force=args.force)
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(o.status == "merged" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    print(f"merge: {done} merged, {skipped} up to date, {len(failed)} failed")
    if failed:
        raise StageFailed("merge failed for: " + ", ".join(f"{o.name} ({o.error})" for o in failed))
    return 0
