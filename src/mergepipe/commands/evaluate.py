"""``mergepipe evaluate``: every model x suite of the config as jobs over GPU / CPU slots
(``evaluation_only.sh``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mergepipe.commands.eval_harness import add_harness_options
from mergepipe.config import DEFAULT_CONFIG, EvaluateSection
from mergepipe.config.evaluate import HARNESS_FIELDS
from mergepipe.config.options import add_model_options, given
from mergepipe.evaluate.harness.dataset_mirror import ENV_VAR as DATASETS_ENV

# The evaluate-section fields that also are flags (besides the lm-eval settings).
STAGE_FIELDS = ("roles", "jobs", "gpus", "device", "executor", "datasets_dir")
SWITCHES = ("do_harness", "do_holmes")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate models on the configured suites (lm-eval harness, Holmes) over GPU/CPU slots",
        description=(
            "Evaluate the config's models (base / experts / merged, per evaluate.roles) or --models on "
            "the configured suites. Each model x suite is one job in its own subprocess with its own log "
            "(logs/<run>/evaluate/<model-id>__<suite>.log), one job per GPU at a time (or --jobs CPU "
            "slots). Finished jobs are skipped; a failed job does not stop the others. A flag left out "
            "keeps the config's value."
        ),
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help="pipeline config (default: %(default)s; optional when --models is given)")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="evaluate these models (dir, Hub id, zoo://NAME, adapter) instead of the config's")
    parser.add_argument("--suites", nargs="+", metavar="SUITE",
                        help="only these suites (names from evaluate.suites, or 'holmes')")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run only the jobs that failed (or were interrupted) in the previous run")
    parser.add_argument("--run", default=None, help="run name (default: the config's)")
    stage = parser.add_argument_group("stage settings (evaluate section)")
    add_model_options(stage, EvaluateSection, STAGE_FIELDS)
    for field, word in (("do_harness", "harness"), ("do_holmes", "holmes")):
        stage.add_argument(f"--do-{word}", dest=field, action="store_true", default=None,
                           help=EvaluateSection.model_fields[field].description)
        stage.add_argument(f"--no-{word}", dest=field, action="store_false", help=f"skip the {word} suites")
    stage.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                       help="Ray cluster address for --executor ray (overrides cluster.address; default: "
                       "RAY_ADDRESS, else a local Ray instance)")
    add_harness_options(parser)
    parser.set_defaults(func=run)


def section_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``evaluate:`` fields given as flags."""
    out = given(args, (*STAGE_FIELDS, *SWITCHES, *HARNESS_FIELDS))
    if "datasets_dir" not in out and os.environ.get(DATASETS_ENV):
        out["datasets_dir"] = os.environ[DATASETS_ENV]  # the environment wins over the file, a flag over both
    if args.include_path:
        out["include_paths"] = [str(p) for p in args.include_path]
    return out


def run(args: argparse.Namespace) -> int:
    from mergepipe.config import build_config, load_config
    from mergepipe.config.options import validate_with_flags
    from mergepipe.core.locks import holding_run
    from mergepipe.errors import ConfigError
    from mergepipe.evaluate.stage import evaluate_config

    path = Path(args.config)
    if path.is_file():
        config = load_config(path, {"run": args.run} if args.run else None)
    elif args.models and args.config == DEFAULT_CONFIG:
        data: dict[str, Any] = {"models": list(args.models)}
        if args.run:
            data["run"] = args.run
        config = build_config(data, "flags").resolve_paths(Path.cwd())
    else:
        raise ConfigError(f"config file not found: {path}")
    flags = section_overrides(args)
    section = validate_with_flags(EvaluateSection, config.evaluate.model_dump(mode="json"), flags,
                                  str(path), "evaluate.")
    section = config.model_copy(update={"evaluate": section}).resolve_paths(Path.cwd()).evaluate
    if args.ray_address:
        config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"address": args.ray_address})})
    with holding_run(config.outputs.logs, config.run, "mergepipe evaluate"):
        evaluate_config(config, models=args.models, suites=args.suites, section=section,
                        retry_failed=args.retry_failed)
    return 0
