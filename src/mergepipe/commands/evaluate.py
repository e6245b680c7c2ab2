"""``mergepipe evaluate``: every model x suite of the config as jobs over GPU / CPU slots
(``evaluation_only.sh``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mergepipe.commands.eval_harness import add_harness_options


def _gpu_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU indices like 0,1,3, got {value!r}") from None


def _jobs(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {value!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate models on the configured suites (lm-eval harness, Holmes) over GPU/CPU slots",
        description=(
            "Evaluate the config's models (base / experts / merged, per evaluate.roles) or --models on "
            "the configured suites. Each model x suite is one job in its own subprocess with its own log "
            "(logs/<run>/evaluate/<model-id>__<suite>.log), one job per GPU at a time (or --jobs CPU "
            "slots). Finished jobs are skipped; a failed job does not stop the others."
        ),
    )
    parser.add_argument("--config", default="pipeline.yaml", metavar="FILE",
                        help="pipeline config (default: %(default)s; optional when --models is given)")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="evaluate these models (dir, Hub id, zoo://NAME, adapter) instead of the config's")
    parser.add_argument("--suites", nargs="+", metavar="SUITE",
                        help="only these suites (names from evaluate.suites, or 'holmes')")
    parser.add_argument("--roles", nargs="+", choices=["base", "experts", "merged"], default=None,
                        help="which of the config's models to evaluate (default: evaluate.roles)")
    parser.add_argument("--jobs", type=_jobs, default=None,
                        help="parallel jobs when running on CPU (default: evaluate.jobs)")
    parser.add_argument("--gpus", type=_gpu_list, default=None, metavar="0,1,...",
                        help="GPU indices to use as slots (default: every visible GPU)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                        help="auto = GPU slots when a GPU is visible, else CPU slots")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run only the jobs that failed (or were interrupted) in the previous run")
    parser.add_argument("--do-harness", dest="do_harness", action="store_true", default=None,
                        help="run the lm-eval harness suites (default: evaluate.do_harness)")
    parser.add_argument("--no-harness", dest="do_harness", action="store_false", help="skip the harness suites")
    parser.add_argument("--do-holmes", dest="do_holmes", action="store_true", default=None,
                        help="run Holmes probing (default: evaluate.do_holmes)")
    parser.add_argument("--no-holmes", dest="do_holmes", action="store_false", help="skip Holmes probing")
    parser.add_argument("--run", default=None, help="run name (default: the config's)")
    add_harness_options(parser)
    parser.set_defaults(func=run)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "batch_size": args.batch_size, "num_fewshot": args.num_fewshot,
        "apply_chat_template": args.apply_chat_template, "limit": args.limit, "backend": args.backend,
        "dtype": args.dtype, "seed": args.seed, "roles": args.roles,
    }
    if args.include_path:
        out["include_paths"] = list(args.include_path)
    return {k: v for k, v in out.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    from mergepipe.config import load_config
    from mergepipe.errors import ConfigError
    from mergepipe.evaluate.stage import config_for_models, evaluate_config

    path = Path(args.config)
    if path.is_file():
        config = load_config(path, {"run": args.run} if args.run else None)
    elif args.models and args.config == "pipeline.yaml":
        config = config_for_models(args.models)
        if args.run:
            config = config.model_copy(update={"run": args.run})
    else:
        raise ConfigError(f"config file not found: {path}")
    evaluate_config(
        config,
        models=args.models,
        suites=args.suites,
        do_harness=args.do_harness,
        do_holmes=args.do_holmes,
        jobs=args.jobs,
        device=args.device,
        gpus=args.gpus,
        retry_failed=args.retry_failed,
        overrides=overrides_from(args),
    )
    return 0
