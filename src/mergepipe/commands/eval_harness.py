"""``mergepipe eval-harness MODEL TASKS``: one lm-eval job, in-process (``eval-harness.sh``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mergepipe.config import HarnessSettings
from mergepipe.config.evaluate import HARNESS_FIELDS
from mergepipe.config.options import add_model_options, given, validate_with_flags
from mergepipe.evaluate.harness.dataset_mirror import ENV_VAR


def add_harness_options(parser: argparse.ArgumentParser) -> None:
    """The score-affecting settings, generated from :class:`HarnessSettings` (also used by ``evaluate``,
    where a flag left out keeps the config's value)."""
    group = parser.add_argument_group("lm-eval settings (recorded with every result)")
    add_model_options(group, HarnessSettings, HARNESS_FIELDS)
    group.add_argument("--include-path", action="append", default=None, metavar="DIR", type=Path,
                       help="extra folder of lm-eval task YAMLs (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-harness",
        help="evaluate one model on lm-eval tasks (one job, in-process)",
        description=(
            "Run lm-evaluation-harness on one model and write harness_results/<model-id>/<suite>/ "
            "in lm-eval's own file layout (results_<timestamp>.json, samples_<task>_<timestamp>.jsonl). "
            "A result with the same settings is reused unless --force."
        ),
    )
    parser.add_argument("model", metavar="MODEL",
                        help="local model dir, Hub id (org/name), zoo://NAME, or a LoRA adapter dir")
    parser.add_argument("tasks", metavar="TASKS", nargs="+",
                        help="lm-eval task, group or tag names (space or comma separated)")
    parser.add_argument("--suite", default=None,
                        help="results sub-folder name (default: the task names joined by '+')")
    parser.add_argument("--results-dir", type=Path, default=Path("harness_results"),
                        help="where results go (default ./harness_results)")
    parser.add_argument("--gpu", type=int, default=None, metavar="N",
                        help="run on GPU N (sets CUDA_VISIBLE_DEVICES=N); default: GPU 0 if any, else CPU")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto = cuda when a GPU is visible, else cpu")
    parser.add_argument("--revision", default=None, help="Hub revision of MODEL (branch, tag or commit)")
    parser.add_argument("--role", choices=["base", "expert", "merged"], default=None,
                        help="role recorded in model_info.json (default: merged if MODEL has a merge record)")
    parser.add_argument("--run", default=None, help="run name recorded in model_info.json")
    parser.add_argument("--force", action="store_true", help="re-run even if results with these settings exist")
    parser.add_argument("--datasets-dir", type=Path, default=None, metavar="DIR",
                        help=f"local dataset mirror (default: ${ENV_VAR}, else ./datasets); "
                             "see 'mergepipe datasets'")
    add_harness_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.core.devices import check_gpu_indices
    from mergepipe.evaluate.harness.dataset_mirror import default_dir
    from mergepipe.evaluate.harness.run import run_harness
    from mergepipe.evaluate.harness.tasks import parse_tasks

    settings = validate_with_flags(HarnessSettings, {}, given(args, HARNESS_FIELDS))
    if args.gpu is not None:
        check_gpu_indices([args.gpu])
        # Set before torch initialises CUDA: the job then sees that one GPU as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    run_harness(args.model, parse_tasks(args.tasks), results_dir=args.results_dir, suite=args.suite,
                settings=settings, include_paths=args.include_path, device=args.device, role=args.role,
                run=args.run, force=args.force, revision=args.revision,
                datasets_dir=args.datasets_dir or default_dir())
    return 0
