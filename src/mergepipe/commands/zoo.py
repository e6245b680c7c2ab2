"""``mergepipe zoo``: build the demo zoo, list its models, print its lm-eval include path."""

from __future__ import annotations

import argparse
import json

from mergepipe.errors import MergepipeError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "zoo",
        help="the built-in demo zoo (tiny base + skill experts, tasks, probing sets)",
        description=(
            "Build and inspect the demo zoo: a tiny Llama base model and experts fine-tuned on "
            "distinct synthetic skills, with lm-eval tasks and Holmes-format probing sets. It is "
            "built offline, deterministically, and cached (MERGEPIPE_ZOO_DIR overrides where)."
        ),
    )
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _help(parser))

    build = sub.add_parser("build", help="build (or reuse) the zoo and print per-model build times")
    build.add_argument("--experts", type=int, default=None, help="number of experts (default 4, max 8)")
    build.add_argument("--seed", type=int, default=None, help="build seed (default 0, or MERGEPIPE_ZOO_SEED)")
    build.add_argument("--force", action="store_true", help="delete the cached build and rebuild it")
    build.set_defaults(func=cmd_build)

    listing = sub.add_parser("list", help="list the zoo models (builds the zoo if needed)")
    listing.add_argument("--json", action="store_true", help="print machine-readable JSON")
    listing.set_defaults(func=cmd_list)

    tasks = sub.add_parser("tasks", help="print the lm-eval include path of the zoo tasks")
    tasks.set_defaults(func=cmd_tasks)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _experts(value: int | None) -> int:
    from mergepipe.zoo.recipe import DEFAULT_EXPERTS
    from mergepipe.zoo.skills import MAX_EXPERTS

    n = DEFAULT_EXPERTS if value is None else value
    if not 1 <= n <= MAX_EXPERTS:
        raise MergepipeError(f"--experts must be between 1 and {MAX_EXPERTS}, got {n}")
    return n


def cmd_build(args: argparse.Namespace) -> int:
    import time

    from mergepipe import zoo

    start = time.perf_counter()
    manifest = zoo.ensure_built(experts=_experts(args.experts), seed=args.seed, force=args.force)
    wall = time.perf_counter() - start
    print(f"zoo: {manifest.root}")
    for m in manifest.models:
        print(f"  {m.reference:<18} {m.kind:<6} built in {m.build_seconds:7.1f}s  peak RSS {m.peak_rss_mib:6.0f} MiB")
    print(f"  tasks:   {manifest.task_include_path} (group '{manifest.task_group}')")
    print(f"  probing: {manifest.probing_data_dir}")
    print(f"done in {wall:.1f}s")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from mergepipe import zoo

    manifest = zoo.ensure_built()
    rows = [
        {"name": m.reference, "path": m.path, "kind": m.kind, "skill": m.skill, "tasks": m.tasks}
        for m in manifest.models
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:<18} {r['kind']:<6} {r['skill'] or '-':<7} {r['path']}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from mergepipe import zoo

    print(zoo.task_include_path())
    return 0
