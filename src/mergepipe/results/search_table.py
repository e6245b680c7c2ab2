"""A search's results in ``organized_results/``: name, schema, writer and reader, in one place.

- ``search_trials.csv``: one row per candidate of every study (``study``, ``trial``, ``state``,
  ``method``, ``parameters`` as JSON, ``name`` of its merge, ``model_id``, ``objective``, ``second``
  objective, ``seconds`` of its merge and evaluation, and one ``tune:<task>`` column per tune task).
  A study's writer replaces only that study's rows.
- ``search_summary.json`` (:class:`SearchSummary`): per study, the tune and report scores of the best
  candidate, each method at its default parameters and the experts, side by side.

Written by ``mergepipe search``; read by the plots, the report and the notebooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergepipe.core.atomic import write_json, write_text

if TYPE_CHECKING:
    import pandas as pd

TRIALS_CSV = "search_trials.csv"
SUMMARY_JSON = "search_summary.json"
TUNE_PREFIX = "tune:"
TRIAL_COLUMNS = ["study", "trial", "state", "method", "parameters", "name", "model_id", "objective", "second",
                 "seconds"]


class ComparedModel(BaseModel):
    """One row of the tune-vs-report comparison."""

    model_config = ConfigDict(extra="allow")

    label: str
    role: str  # best | default | expert | base
    method: str | None = None
    parameters: dict[str, Any] | None = None
    model_id: str | None = None
    trial: int | None = None
    tune: dict[str, float] = Field(default_factory=dict)
    tune_objective: float | None = None
    report: dict[str, float] = Field(default_factory=dict)
    report_mean: float | None = None


class StudySummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    study: str
    sampler: str
    objective: str  # e.g. "mean of zoo_inc, zoo_next"
    second_objective: str = "none"
    tune: list[str]
    report: list[str]
    trials_done: int
    trials_failed: int
    wall_seconds: float
    compared: list[ComparedModel]
    pareto: list[int] = Field(default_factory=list)


class SearchSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    studies: dict[str, StudySummary] = Field(default_factory=dict)


def write_trials(out_dir: Path, study: str, rows: list[dict[str, Any]]) -> Path:
    """Replace ``study``'s rows of ``search_trials.csv`` with ``rows``."""
    import pandas as pd

    out_dir = Path(out_dir)
    old = load_trials(out_dir)
    new = pd.DataFrame([{**{c: None for c in TRIAL_COLUMNS}, **r, "study": study} for r in rows])
    if not old.empty:
        old = old[old["study"].astype(str) != study]
    frames = [f for f in (old, new) if not f.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TRIAL_COLUMNS)
    columns = TRIAL_COLUMNS + sorted(c for c in frame.columns if c not in TRIAL_COLUMNS)
    path = out_dir / TRIALS_CSV
    write_text(path, frame.reindex(columns=columns).to_csv(index=False))
    return path


def load_trials(out_dir: Path | str) -> pd.DataFrame:
    """Every study's trials (an empty frame with the columns when there is no search)."""
    import pandas as pd

    path = Path(out_dir) / TRIALS_CSV
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=TRIAL_COLUMNS)
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=TRIAL_COLUMNS)


def trial_parameters(value: Any) -> dict[str, Any]:
    """A trials row's parameters (stored as JSON)."""
    if isinstance(value, str) and value:
        try:
            data = json.loads(value)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def write_summary(out_dir: Path, study: StudySummary) -> Path:
    """Add (or replace) one study in ``search_summary.json``."""
    summary = read_summary(out_dir) or SearchSummary()
    summary.studies[study.study] = study
    path = Path(out_dir) / SUMMARY_JSON
    write_json(path, summary.model_dump(mode="json"))
    return path


def read_summary(out_dir: Path | str) -> SearchSummary | None:
    path = Path(out_dir) / SUMMARY_JSON
    try:
        return SearchSummary.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None


def comparison_rows(study: StudySummary) -> tuple[list[str], list[list[str]]]:
    """The tune-vs-report table of a study: headers and formatted cells (best first, then the
    defaults, then the experts)."""
    def fmt(value: float | None) -> str:
        return "–" if value is None or value != value else f"{value:.3f}"

    headers = ["model", "role", f"tune ({study.objective.split(' of ')[0]})", *study.tune,
               "report (mean)", *study.report]
    rows = []
    for m in study.compared:
        rows.append([m.label, m.role, fmt(m.tune_objective), *[fmt(m.tune.get(t)) for t in study.tune],
                     fmt(m.report_mean), *[fmt(m.report.get(t)) for t in study.report]])
    return headers, rows


def comparison_text(study: StudySummary) -> str:
    """The comparison as aligned plain text, for the terminal."""
    headers, rows = comparison_rows(study)
    table = [headers, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
