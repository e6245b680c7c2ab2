"""A model's Holmes results: ``holmes_results/<model-id>/results_<version>.csv`` and its run record.

The CSV has upstream Holmes' own columns (:data:`RESULT_COLUMNS`), so results of the built-in
engine and of an upstream checkout are read the same way: one row per dataset, control task type
and seed. ``control_task_type`` NONE marks the probe's own score; every other value is a control
task (upstream Holmes calls the label-permutation control RANDOMIZATION; its PERMUTATION control
shuffles words instead). How several control types combine is decided in one place:
:mod:`mergepipe.results.holmes_scoring`.

``run_<version>.json`` beside it records how the results were made, including the data folder
(``data_dir``), where the dataset -> competence mapping is found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mergepipe.errors import MergepipeError

RESULT_COLUMNS = [
    "probing_dataset", "model_name", "encoding", "control_task_type",
    "sample_size", "seed", "num_hidden_layers", "score",
]
NO_CONTROL = "NONE"
# The built-in engine's control task: labels permuted over the dataset (upstream's name for it).
CONTROL_TYPE = "RANDOMIZATION"


def results_path(model_dir: Path, version: str) -> Path:
    return Path(model_dir) / f"results_{version}.csv"


def run_record_path(model_dir: Path, version: str) -> Path:
    return Path(model_dir) / f"run_{version}.json"


def result_files(holmes_results: Path) -> list[Path]:
    """Every ``<holmes_results>/<model-id>/results_*.csv`` (hidden folders and files skipped)."""
    root = Path(holmes_results)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*/results_*.csv")
                  if p.is_file() and not p.name.startswith(".") and not p.parent.name.startswith("."))


def read_results_csv(path: Path, model_id: str | None = None) -> pd.DataFrame:
    """One results CSV; the unnamed index column that upstream's ``to_csv`` adds is dropped."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MergepipeError(f"{path}: not a readable Holmes results CSV ({exc})") from None
    frame = frame.loc[:, [c for c in frame.columns if not str(c).startswith("Unnamed")]]
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise MergepipeError(f"{path}: not a Holmes results CSV, missing column(s) {', '.join(missing)}")
    frame = frame[RESULT_COLUMNS].copy()
    frame["control_task_type"] = frame["control_task_type"].fillna(NO_CONTROL).astype(str).str.upper()
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    frame["model_id"] = model_id if model_id is not None else frame["model_name"].astype(str)
    frame["version"] = path.stem.removeprefix("results_")
    return frame


def read_results(holmes_results: Path) -> pd.DataFrame:
    """Every model's results stacked (columns: RESULT_COLUMNS + model_id, version)."""
    frames = [read_results_csv(csv, csv.parent.name) for csv in result_files(holmes_results)]
    if not frames:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, "model_id", "version"])
    return pd.concat(frames, ignore_index=True)


def read_run_records(model_dir: Path) -> list[dict[str, Any]]:
    """The ``run_<version>.json`` records of one model's results folder (unreadable ones skipped)."""
    out = []
    for path in sorted(Path(model_dir).glob("run_*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def recorded_data_dirs(holmes_results: Path) -> list[Path]:
    """The data folders the results under ``holmes_results`` were made from (existing ones)."""
    found: list[Path] = []
    root = Path(holmes_results)
    if not root.is_dir():
        return found
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for record in read_run_records(model_dir):
            data_dir = record.get("data_dir")
            if isinstance(data_dir, str) and Path(data_dir).is_dir() and Path(data_dir) not in found:
                found.append(Path(data_dir))
    return found
