"""The ``mergepipe`` command: one subcommand per pipeline stage.

Subcommands live in :mod:`mergepipe.commands` (one module each) and are imported lazily, so
``mergepipe --help`` stays fast and a stage's heavy imports (torch, mergekit, lm-eval) are paid
only by the stage that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from mergepipe import __version__
from mergepipe.errors import MergepipeError

# Order is the order shown in --help.
COMMAND_MODULES = [
    "mergepipe.commands.run",
    "mergepipe.commands.merge",
    "mergepipe.commands.search",
    "mergepipe.commands.evaluate",
    "mergepipe.commands.eval_harness",
    "mergepipe.commands.datasets",
    "mergepipe.commands.predict",
    "mergepipe.commands.job",
    "mergepipe.commands.methods",
    "mergepipe.commands.probe",
    "mergepipe.commands.push",
    "mergepipe.commands.organize",
    "mergepipe.commands.plot",
    "mergepipe.commands.report",
    "mergepipe.commands.validate",
    "mergepipe.commands.zoo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mergepipe",
        description=(
            "Merge fine-tuned LLMs with mergekit, evaluate them with lm-evaluation-harness and "
            "Holmes-style probing, and organise the results. Run 'mergepipe COMMAND --help' for "
            "the options of each stage."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mergepipe {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug logs)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _interrupt_on_sigterm()
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MergepipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a cluster pre-emption, `kill`) unwinds like Ctrl-C: locks are released and
    temporaries removed on the way out, instead of the process dying where it stands."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    raise SystemExit(main())
