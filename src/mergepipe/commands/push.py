"""``mergepipe push``: publish the run's merged models to the Hugging Face Hub with a model card."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from mergepipe.commands.common import add_config_argument, config_from_args
from mergepipe.errors import MergepipeError, ModelError, StageFailed

LOG_FILE = "push.log"


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


def _merged_dirs(root: Path) -> list[Path]:
    from mergepipe.model_card import MERGE_RECORD

    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MERGE_RECORD).is_file())


@contextlib.contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """Also write detailed logs (ours and huggingface_hub's) to ``path``; console output unchanged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    touched: list[tuple[logging.Logger, int, list[tuple[logging.Handler, int]]]] = []
    for logger in (logging.getLogger(), logging.getLogger("huggingface_hub"), logging.getLogger("mergepipe")):
        shown = logger.getEffectiveLevel()
        # Pin existing (console) handlers to what they showed before, then open the logger up.
        handlers = [(h, h.level) for h in logger.handlers]
        for h, level in handlers:
            if level == logging.NOTSET:
                h.setLevel(shown)
        touched.append((logger, logger.level, handlers))
        logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        for logger, level, handlers in touched:
            logger.setLevel(level)
            for h, old in handlers:
                h.setLevel(old)


def run(args: argparse.Namespace) -> int:
    from mergepipe.hub import PublishError, push_merged_model, read_merge_record
    from mergepipe.hub_settings import validate_hub_settings
    from mergepipe.model_card import eval_table_from_organized

    config = config_from_args(args)
    hub = dict(config.hub)
    flags = {"namespace": args.namespace, "repo_name": args.repo_name, "private": args.private}
    for key, value in flags.items():
        if value is not None:
            hub[key] = value
    config = config.model_copy(update={"hub": hub})

    run_dir = config.outputs.merged_models / config.run
    dirs = [d.expanduser().resolve() for d in args.model_dir] if args.model_dir else _merged_dirs(run_dir)
    if not dirs:
        raise ModelError(f"{run_dir}: no merged models to publish; run 'mergepipe merge' first")
    records = {d: read_merge_record(d) for d in dirs}
    names = [str(r.get("name") or d.name) for d, r in records.items()]
    settings = validate_hub_settings(config, names=names, publishing=True, source=args.config)

    merge_config_dir = config.outputs.merge_config / config.run
    if args.dry_run:
        visibility = "private" if settings.private else "public"
        print(f"run {config.run}: {len(dirs)} model(s) to publish ({visibility} when created)")
        for d, name in zip(dirs, names, strict=True):
            method = str(records[d].get("method") or "")
            repo_id = settings.repo_id_for(run=config.run, name=name, method=method)
            print(f"  {name:28s} -> {repo_id}")
        return 0

    failures: list[MergepipeError] = []
    with _log_to_file(config.outputs.logs / config.run / LOG_FILE):
        for d, name in zip(dirs, names, strict=True):
            table = eval_table_from_organized(config.outputs.organized_results, config.run, name)
            try:
                result = push_merged_model(
                    d, settings, run=config.run, results_table=table, merge_config_dir=merge_config_dir
                )
            except PublishError as exc:
                logging.getLogger("mergepipe.push").info("failed: %s", exc)  # the CLI prints it
                if len(dirs) == 1:
                    raise
                print(f"error: {exc}", file=sys.stderr)
                failures.append(exc)
                continue
            extra = ", local copy deleted" if result.deleted_local else ""
            print(f"pushed {name} -> {result.url} (commit {result.commit_oid[:12]}{extra})")
    if failures:
        raise StageFailed(f"push failed for {len(failures)} of {len(dirs)} model(s)")
    return 0
