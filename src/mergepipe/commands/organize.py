"""``mergepipe organize``: raw harness / Holmes results -> tidy tables in organized_results/."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mergepipe.config import DEFAULT_CONFIG

if TYPE_CHECKING:
    import pandas as pd


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
    mapping_search: list[Path] = []
    mapping_csv = getattr(args, "mapping_csv", None)
    holmes = config.holmes or {}
    if mapping_csv is None and holmes.get("mapping_csv"):
        mapping_csv = Path(holmes["mapping_csv"])
        if not mapping_csv.is_absolute():  # relative paths: from the current directory, like outputs
            mapping_csv = Path.cwd() / mapping_csv
    if holmes.get("data_dir"):
        data_dir = Path(holmes["data_dir"])
        mapping_search.append(data_dir if data_dir.is_absolute() else Path.cwd() / data_dir)
    outputs = config.outputs
    return ResultDirs(
        harness=getattr(args, "harness_dir", None) or outputs.harness_results,
        holmes=getattr(args, "holmes_dir", None) or outputs.holmes_results,
        out=args.out or outputs.organized_results,
        mapping_csv=mapping_csv,
        mapping_search=mapping_search,
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
    from mergepipe.organize import organize

    result = organize(dirs.harness, dirs.holmes, dirs.out, mapping_csv=dirs.mapping_csv,
                      mapping_search=dirs.mapping_search)
    tables = result.tables
    warnings = [i for i in result.issues if i.kind != "superseded"]
    superseded = [i for i in result.issues if i.kind == "superseded"]
    print(f"organized {result.harness_files} lm-eval file(s) and {result.holmes_files} Holmes file(s): "
          f"{len(tables.summary)} models, {len(tables.harness)} harness rows, "
          f"{len(tables.holmes)} Holmes rows -> {dirs.out}")
    if not tables.summary.empty:
        print(leaderboard_text(tables.summary))
    if superseded:
        print(f"{len(superseded)} older result(s) superseded by newer ones (see organize_notes.json)")
    for issue in warnings:
        print(f"warning: {issue.message}", file=sys.stderr)
    return 0


def leaderboard_text(summary: pd.DataFrame, max_columns: int = 8) -> str:
    """The first columns of the leaderboard, for the terminal (summary.csv has them all)."""
    from mergepipe.organize import LABEL_COLUMNS

    values = [c for c in summary.columns if c not in LABEL_COLUMNS]
    shown = summary[["model_id", "role", *values[:max_columns]]]
    more = f"\n(+{len(values) - max_columns} more columns in summary.csv)" if len(values) > max_columns else ""
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-") + more


def run(args: argparse.Namespace) -> int:
    return run_organize(result_dirs(args))
