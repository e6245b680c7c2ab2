"""``mergepipe eval-harness MODEL TASKS``: one lm-eval job, in-process (``eval-harness.sh``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value!r}")
    return number


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
    return number


def add_harness_options(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``mergepipe evaluate``; there, an option not given keeps the config's value."""
    parser.add_argument("--batch-size", type=_batch_size, default=None,
                        help="lm-eval batch size: a positive integer or 'auto' (default 1; evaluate: the config's)")
    parser.add_argument("--num-fewshot", type=_non_negative_int, default=None,
                        help="few-shot examples per prompt (default: each task's own)")
    parser.add_argument("--apply-chat-template", action=argparse.BooleanOptionalAction, default=None,
                        help="format prompts with the model's chat template (default off)")
    parser.add_argument("--limit", type=_positive_float, default=None,
                        help="only the first L documents per task (L >= 1) or a fraction (L < 1)")
    parser.add_argument("--backend", choices=["hf", "vllm"], default=None, help="lm-eval backend (default hf)")
    parser.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default=None,
                        help="dtype to load the model in (default auto = as stored)")
    parser.add_argument("--seed", type=int, default=None,
                        help="one seed for lm-eval's python, numpy, torch and few-shot samplers "
                             "(default: lm-eval's 0,1234,1234,1234 here; the pipeline seed in 'evaluate')")
    parser.add_argument("--include-path", action="append", default=None, metavar="DIR",
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
    add_harness_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.evaluate.harness import HarnessSettings, parse_tasks, run_harness
    from mergepipe.scheduler import check_gpu_indices

    if args.gpu is not None:
        check_gpu_indices([args.gpu])
        # Set before torch initialises CUDA: the job then sees that one GPU as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    settings = HarnessSettings(
        batch_size=args.batch_size if args.batch_size is not None else 1,
        num_fewshot=args.num_fewshot,
        apply_chat_template=bool(args.apply_chat_template),
        limit=args.limit,
        backend=args.backend or "hf",
        dtype=args.dtype or "auto",
        seed=args.seed,
    )
    run_harness(
        args.model,
        parse_tasks(args.tasks),
        results_dir=args.results_dir,
        suite=args.suite,
        settings=settings,
        include_paths=args.include_path,
        device=args.device,
        role=args.role,
        run=args.run,
        force=args.force,
        revision=args.revision,
    )
    return 0
