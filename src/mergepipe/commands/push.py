"""``mergepipe push``: publish the run's merged models to the Hugging Face Hub with a model card."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mergepipe.commands.common import add_config_argument, config_from_args
from mergepipe.errors import ModelError, StageFailed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="publish merged models to the Hugging Face Hub (repository + model card)",
        description=(
            "Write a model card into each merged model of the run (or the given directories) and "
            "upload it to <hub.namespace>/<hub.repo_name>. The token comes only from HF_TOKEN or "
            "'hf auth login', never from a file or a flag. Re-running uploads only what changed, "
            "e.g. the card once evaluation results exist. A log goes to <logs>/<run>/push.log."
        ),
    )
    add_config_argument(parser)
    parser.add_argument(
        "--model-dir", action="append", metavar="DIR", type=Path,
        help="a merged model directory to publish (repeatable; default: every merged model of the run)",
    )
    parser.add_argument("--namespace", metavar="NS",
                        help="Hub user or organisation (overrides hub.namespace)")
    parser.add_argument("--repo-name", metavar="TEMPLATE",
                        help="repository name template with {run} {name} {method} (overrides hub.repo_name)")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=None,
                            help="create new repositories as private (the default)")
    visibility.add_argument("--public", dest="private", action="store_false",
                            help="create new repositories as public")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate settings, token presence and repository names; upload nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.config import HubSection
    from mergepipe.config.options import given, validate_with_flags
    from mergepipe.core.records import MergeRecord, merged_model_dirs
    from mergepipe.publish.push import LOG_FILE, publish_models
    from mergepipe.publish.settings import check_publishing

    config = config_from_args(args)
    hub = validate_with_flags(HubSection, config.hub.model_dump(mode="json"),
                              given(args, ("namespace", "repo_name", "private")), args.config, "hub.")
    run_dir = config.outputs.merged_models / config.run
    dirs = [d.expanduser().resolve() for d in args.model_dir] if args.model_dir else merged_model_dirs(run_dir)
    if not dirs:
        raise ModelError(f"{run_dir}: no merged models to publish; run 'mergepipe merge' first")
    records = {d: MergeRecord.require(d) for d in dirs}
    models = [(records[d].name or d.name, d) for d in dirs]
    settings = check_publishing(config, hub, names=[n for n, _ in models], publishing=True, source=args.config)

    if args.dry_run:
        visibility = "private" if settings.private else "public"
        print(f"run {config.run}: {len(dirs)} model(s) to publish ({visibility} when created)")
        for name, d in models:
            repo_id = settings.repo_id_for(run=config.run, name=name, method=records[d].method)
            print(f"  {name:28s} -> {repo_id}")
        return 0

    outcomes = publish_models(models, settings, run=config.run,
                              merge_config_dir=config.outputs.merge_config / config.run,
                              organized_dir=config.outputs.organized_results,
                              log_file=config.outputs.logs / config.run / LOG_FILE)
    failed = [o for o in outcomes if not o.ok]
    if failed and len(outcomes) == 1:
        raise failed[0].error  # type: ignore[misc]  # the one line the user needs
    for o in failed:
        print(f"error: {o.error}", file=sys.stderr)
    if failed:
        raise StageFailed(f"push failed for {len(failed)} of {len(outcomes)} model(s)")
    return 0
