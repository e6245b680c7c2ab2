"""``mergepipe datasets fetch|check TASKS``: the local dataset mirror for built-in lm-eval tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

from mergepipe.errors import MergepipeError, StageFailed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="the local dataset mirror: fetch the datasets of lm-eval tasks, check what is present",
        description=(
            "Built-in lm-eval tasks load their data from the Hugging Face Hub. 'fetch' downloads, on a "
            "connected machine, exactly the dataset repositories the named tasks (groups and tags "
            "included) need into <DIR>/<dataset_path>/; copy that folder to an air-gapped machine and "
            "evaluation reads from it (evaluate.datasets_dir, --datasets-dir or MERGEPIPE_DATASETS_DIR; "
            "default ./datasets). 'check' says what is present and what is missing. See docs/datasets.md."
        ),
    )
    sub = parser.add_subparsers(dest="datasets_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _help(parser))

    fetch = sub.add_parser("fetch", help="download the dataset repositories of TASKS into the mirror")
    fetch.add_argument("tasks", metavar="TASKS", nargs="+", help="lm-eval task, group or tag names")
    fetch.add_argument("--to", type=Path, default=None, metavar="DIR",
                       help="the mirror folder (default: $MERGEPIPE_DATASETS_DIR, else ./datasets)")
    fetch.add_argument("--force", action="store_true", help="download again what the mirror already has")
    fetch.add_argument("--include-path", action="append", default=None, metavar="DIR", type=Path,
                       help="extra folder of lm-eval task YAMLs (repeatable)")
    fetch.set_defaults(func=cmd_fetch)

    check = sub.add_parser("check", help="say which datasets of TASKS are present and which are missing")
    check.add_argument("tasks", metavar="TASKS", nargs="+", help="lm-eval task, group or tag names")
    check.add_argument("--datasets-dir", type=Path, default=None, metavar="DIR",
                       help="the mirror folder (default: $MERGEPIPE_DATASETS_DIR, else ./datasets)")
    check.add_argument("--include-path", action="append", default=None, metavar="DIR", type=Path,
                       help="extra folder of lm-eval task YAMLs (repeatable)")
    check.set_defaults(func=cmd_check)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_fetch(args: argparse.Namespace) -> int:
    from mergepipe.evaluate.harness.dataset_mirror import default_dir, fetch
    from mergepipe.evaluate.harness.preflight import hub_datasets_of
    from mergepipe.evaluate.harness.tasks import include_paths_for, parse_tasks

    tasks = parse_tasks(args.tasks)
    to = (args.to or default_dir()).expanduser().resolve()
    repos, other = hub_datasets_of(tasks, include_paths_for(args.include_path))
    for line in other:
        print(f"skip     {line}")
    if not repos:
        raise MergepipeError(f"{', '.join(tasks)}: no Hub dataset to fetch")
    print(f"fetching {len(repos)} dataset repositor{'y' if len(repos) == 1 else 'ies'} of {', '.join(tasks)} "
          f"into {to}", flush=True)
    outcomes = fetch(repos, to, force=args.force, say=lambda m: print(m, flush=True))
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} present in {to}; copy the folder to the machine "
          "that evaluates and point evaluate.datasets_dir (or MERGEPIPE_DATASETS_DIR) at it")
    if failed:
        raise StageFailed(f"{len(failed)} dataset(s) could not be fetched: "
                          + "; ".join(f"{o.repo_id}: {o.detail}" for o in failed))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from mergepipe.evaluate.harness.dataset_mirror import default_dir
    from mergepipe.evaluate.harness.preflight import check_tasks, fetch_command
    from mergepipe.evaluate.harness.tasks import include_paths_for, parse_tasks

    tasks = parse_tasks(args.tasks)
    mirror = (args.datasets_dir or default_dir()).expanduser().resolve()
    check = check_tasks(tasks, include_paths_for(args.include_path), datasets_dir=mirror)
    leaves = check.resolution.datasets()
    rows = []
    for located in check.datasets:
        names = sorted({leaf.task for leaf in leaves.get(located.ref, [])})
        state = "present" if located.present else ("on Hub" if located.where == "hub" else "MISSING")
        rows.append((state, located.ref.label(), located.where, ", ".join(names), located.detail))
    width = max((len(r[1]) for r in rows), default=7)
    print(f"dataset mirror: {mirror}")
    for state, label, where, names, detail in rows:
        print(f"{state:8s} {label:{width}s}  {where:7s} {detail}  [{names}]")
    for note in check.notes():
        print(f"note: {note}")
    for problem in check.problems:
        if problem.kind != "dataset":
            print(f"MISSING  {problem.line()}")
    missing = [r for r in rows if r[0] != "present"]
    print(f"{len(rows) - len(missing)} of {len(rows)} dataset(s) present without the network")
    if missing:
        print(f"to fetch the missing ones on a connected machine: {fetch_command(tasks, mirror)}")
    if missing or any(p.kind != "dataset" for p in check.problems):
        raise StageFailed(f"{len(missing)} dataset(s) not present locally"
                          + (", and missing packages" if any(p.kind != "dataset" for p in check.problems) else ""))
    return 0
