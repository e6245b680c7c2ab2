"""``mergepipe organize``: raw harness / Holmes results -> tidy tables in organized_results/."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from mergepipe.config import DEFAULT_CONFIG


@dataclass(frozen=True)
class ResultDirs:
    harness: Path
    holmes: Path
    out: Path
    mapping_csv: Path | None
    mapping_search: list[Path]
    config_file: Path | None


def add_results_arguments(parser: argparse.ArgumentParser, inputs: bool = True) -> None:
    """``--config`` and the folder overrides shared by organize, plot and report."""
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, metavar="FILE",
        help="pipeline config whose 'outputs' section names the folders (default: %(default)s; "
        "the default folders are used when the file does not exist)",
    )
    if inputs:
        parser.add_argument("--harness-dir", type=Path, metavar="DIR",
                            help="lm-eval results (default: outputs.harness_results)")
        parser.add_argument("--holmes-dir", type=Path, metavar="DIR",
                            help="Holmes results (default: outputs.holmes_results)")
        parser.add_argument(
            "--mapping-csv", type=Path, metavar="FILE",
            help="CSV mapping probing datasets to competences (upstream leaderboard columns); "
            "default: holmes.mapping_csv, else one found in the Holmes results or data folder",
        )
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="organized results folder (default: outputs.organized_results)")


def result_dirs(args: argparse.Namespace) -> ResultDirs:
    from mergepipe.config import PipelineConfig, load_config

    path = Path(args.config)
    if path.is_file():
        config = load_config(path)
        config_file: Path | None = path.resolve()
    elif args.config != DEFAULT_CONFIG:
        from mergepipe.errors import ConfigError

        raise ConfigError(f"config file not found: {path}")
    else:
        config = PipelineConfig().resolve_paths(Path.cwd())
        config_file = None
    holmes = config.holmes  # paths already resolved by the config's one rule
    mapping_csv = getattr(args, "mapping_csv", None) or holmes.mapping_csv
    outputs = config.outputs
    return ResultDirs(
        harness=getattr(args, "harness_dir", None) or outputs.harness_results,
        holmes=getattr(args, "holmes_dir", None) or outputs.holmes_results,
        out=args.out or outputs.organized_results,
        mapping_csv=mapping_csv,
        mapping_search=[holmes.data_dir] if holmes.data_dir else [],
        config_file=config_file,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "organize",
        help="turn harness and Holmes results into tidy tables (organized_results/)",
        description="Read harness_results/ (lm-eval result files) and holmes_results/ (Holmes "
        "results CSVs) and write harness.csv, holmes.csv, holmes_competences.csv, summary.csv. "
        "When several results exist for the same model, task and settings, the newest (by the "
        "timestamp inside the file) wins. Unreadable files are reported and skipped.",
    )
    add_results_arguments(parser)
    parser.set_defaults(func=run)


def run_organize(dirs: ResultDirs) -> int:
    from mergepipe.results.tables import organize

    result = organize(dirs.harness, dirs.holmes, dirs.out, mapping_csv=dirs.mapping_csv,
                      mapping_search=dirs.mapping_search)
    print(result.describe(dirs.out))
    for issue in result.warnings:
        print(f"warning: {issue.message}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_organize(result_dirs(args))
