"""Raw results -> tidy tables in ``organized_results/``.

Writes (each atomically):

- ``harness.csv``: one row per (model, task, metric, filter) from lm-eval result files;
- ``holmes.csv``: one row per (model, probing dataset, seed) with control score and selectivity;
- ``holmes_competences.csv``: per model and competence, raw mean score and pool-relative rank score;
- ``summary.csv``: the wide leaderboard, one row per model, one column per task (its primary
  metric, see ``summary_metrics.csv``) and per Holmes competence (``holmes:<competence>``);
- ``organize_notes.json``: files found, files skipped (with reason) and superseded results.

Plots, the report and the notebooks read these files back with :func:`load_tables`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergepipe.core.atomic import write_json, write_text
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.holmes.results_file import recorded_data_dirs
from mergepipe.results.harness_table import HARNESS_COLUMNS, ROLE_ORDER, Issue, read_harness_dir
from mergepipe.results.holmes_scoring import find_mapping, load_mapping, resolve_mapping_csv
from mergepipe.results.holmes_table import COMPETENCE_COLUMNS, HOLMES_COLUMNS, competence_table, read_holmes_dir

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

HARNESS_CSV = "harness.csv"
HOLMES_CSV = "holmes.csv"
COMPETENCES_CSV = "holmes_competences.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_METRICS_CSV = "summary_metrics.csv"
NOTES_JSON = "organize_notes.json"
HOLMES_PREFIX = "holmes:"
LABEL_COLUMNS = ["model_id", "role", "merge_method", "merge_parameters", "run"]
# Which metric represents a task in the leaderboard, in order of preference.
PRIMARY_METRICS = ["acc", "acc_norm", "exact_match", "f1", "mcc", "bleu", "rougeL",
                   "word_perplexity", "perplexity"]
PRIMARY_FILTERS = ["none", "strict-match", "strip"]


_ID_HASH = re.compile(r"-[0-9a-f]{8}$")


def display_name(model_id: str) -> str:
    """A results id without its content hash: ``ties-density0.3-1a2b3c4d`` -> ``ties-density0.3``."""
    return _ID_HASH.sub("", str(model_id))


@dataclass
class Tables:
    """The organized tables (as written to / read from ``organized_results/``)."""

    harness: pd.DataFrame
    holmes: pd.DataFrame
    competences: pd.DataFrame
    summary: pd.DataFrame
    summary_metrics: pd.DataFrame
    notes: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    @property
    def models(self) -> list[str]:
        return list(self.summary["model_id"]) if not self.summary.empty else []

    @property
    def tasks(self) -> list[str]:
        return list(self.summary_metrics["column"]) if not self.summary_metrics.empty else []


@dataclass
class OrganizeResult:
    tables: Tables
    issues: list[Issue]
    written: list[Path]
    harness_files: int
    holmes_files: int

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.kind != "superseded"]

    def describe(self, out_dir: Path) -> str:
        """What organize did, for the terminal: counts, the leaderboard's first columns, superseded files."""
        tables = self.tables
        lines = [f"organized {self.harness_files} lm-eval file(s) and {self.holmes_files} Holmes file(s): "
                 f"{len(tables.summary)} models, {len(tables.harness)} harness rows, "
                 f"{len(tables.holmes)} Holmes rows -> {out_dir}"]
        if not tables.summary.empty:
            lines.append(leaderboard_text(tables.summary))
        superseded = [i for i in self.issues if i.kind == "superseded"]
        if superseded:
            lines.append(f"{len(superseded)} older result(s) superseded by newer ones (see {NOTES_JSON})")
        return "\n".join(lines)


def leaderboard_text(summary: pd.DataFrame, max_columns: int = 8) -> str:
    """The first columns of the leaderboard, for the terminal (summary.csv has them all)."""
    values = [c for c in summary.columns if c not in LABEL_COLUMNS]
    shown = summary[["model_id", "role", *values[:max_columns]]]
    more = f"\n(+{len(values) - max_columns} more columns in {SUMMARY_CSV})" if len(values) > max_columns else ""
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-") + more


def organize(harness_dir: Path | str, holmes_dir: Path | str, out_dir: Path | str,
             mapping_csv: Path | str | None = None,
             mapping_search: list[Path] | None = None) -> OrganizeResult:
    """Read both results folders and write the tidy tables into ``out_dir``.

    Raises MergepipeError only when no usable result was found at all; bad files are skipped
    and reported in the returned issues (and ``organize_notes.json``).
    """

    harness_dir, holmes_dir, out_dir = Path(harness_dir), Path(holmes_dir), Path(out_dir)
    issues: list[Issue] = []
    for name, folder in (("harness results", harness_dir), ("Holmes results", holmes_dir)):
        if not folder.is_dir():
            issues.append(Issue("empty", str(folder), f"{name} folder {folder} does not exist"))

    rows, harness_issues, n_harness = read_harness_dir(harness_dir)
    issues += harness_issues
    harness = _harness_frame(rows)

    mapping = None
    # The mapping: as given, else shipped with the results, with the configured data folder, or
    # with the data folders the results record they were made from.
    mapping_path = resolve_mapping_csv(Path(mapping_csv) if mapping_csv else None, None) or find_mapping(
        [holmes_dir, *(mapping_search or []), *recorded_data_dirs(holmes_dir)])
    if mapping_path is not None:
        mapping = load_mapping(mapping_path)
    holmes, holmes_raw, holmes_issues, n_holmes = read_holmes_dir(holmes_dir, mapping)
    issues += holmes_issues
    if not holmes.empty and mapping is None:
        issues.append(Issue("no-mapping", str(holmes_dir),
                            "no Holmes mapping CSV found (set holmes.mapping_csv): competences unknown"))

    for folder, count, pattern in ((harness_dir, n_harness, "lm-eval results_*.json"),
                                   (holmes_dir, n_holmes, "Holmes results_*.csv")):
        if folder.is_dir() and count == 0:
            issues.append(Issue("empty", str(folder), f"{folder} has no {pattern}"))

    if harness.empty and holmes.empty:
        def where(folder: Path, count: int, pattern: str) -> str:
            if not folder.is_dir():
                return f"{folder} does not exist"
            return f"{folder} has {'no' if not count else f'{count} unusable'} {pattern}"

        skipped = [i for i in issues if i.kind in ("unreadable", "layout")]
        detail = f"; {len(skipped)} file(s) skipped, first: {skipped[0].message}" if skipped else ""
        raise MergepipeError(
            f"no results found: {where(harness_dir, n_harness, 'lm-eval results_*.json')}, "
            f"{where(holmes_dir, n_holmes, 'Holmes results_*.csv')}{detail}"
        )
    competences = competence_table(holmes, holmes_raw)
    summary, summary_metrics = build_summary(harness, competences)
    tables = Tables(harness, holmes, competences, summary, summary_metrics, out_dir=out_dir)
    tables.notes = {
        "harness_dir": str(harness_dir),
        "holmes_dir": str(holmes_dir),
        "mapping_csv": str(mapping_path) if mapping_path else None,
        "harness_files": n_harness,
        "holmes_files": n_holmes,
        "issues": [{"kind": i.kind, "path": i.path, "message": i.message} for i in issues],
    }
    written = write_tables(tables, out_dir)
    for issue in issues:
        log.debug(issue.message)
    return OrganizeResult(tables, issues, written, n_harness, n_holmes)


def _harness_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=[*HARNESS_COLUMNS, "higher_is_better", "_ts"])
    frame = frame.drop(columns="_ts")
    for col in ("value", "stderr", "limit"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    for col in ("n_samples", "num_fewshot"):  # counts: integers, empty when unknown
        frame[col] = pd.to_numeric(frame[col], errors="coerce").round().astype("Int64")
    if frame.empty:
        return frame
    frame["_role"] = frame["role"].map(ROLE_ORDER)
    frame = frame.sort_values(["_role", "model_id", "task", "metric", "filter", "evaluated_at"])
    return frame.drop(columns="_role").reset_index(drop=True)


def primary_metrics(harness: pd.DataFrame) -> pd.DataFrame:
    """The (metric, filter) representing each task in the leaderboard and plots.

    Columns: column (= task), task, group, metric, filter, higher_is_better, is_group.
    Groups come first, followed by their subtasks, then standalone tasks.
    """
    import pandas as pd

    cols = ["column", "task", "group", "metric", "filter", "aggregation", "higher_is_better", "is_group"]
    if harness.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for task, part in harness.groupby("task", sort=False):
        present = part[["metric", "filter"]].drop_duplicates().values.tolist()

        def rank(pair: list[str]) -> tuple[int, int, str, str]:
            metric, filt = pair
            m = PRIMARY_METRICS.index(metric) if metric in PRIMARY_METRICS else len(PRIMARY_METRICS)
            f = PRIMARY_FILTERS.index(filt) if filt in PRIMARY_FILTERS else len(PRIMARY_FILTERS)
            return (m, f, metric, filt)

        metric, filt = min(present, key=rank)
        sel = part[(part["metric"] == metric) & (part["filter"] == filt)]
        group = sel["group"].dropna().iloc[0] if sel["group"].notna().any() else None
        hib = sel["higher_is_better"].dropna()
        agg = sel["aggregation"].dropna() if "aggregation" in sel else sel.iloc[0:0]
        out.append({"column": task, "task": task, "group": group, "metric": metric, "filter": filt,
                    "aggregation": str(agg.iloc[0]) if len(agg) else None,
                    "higher_is_better": bool(hib.iloc[0]) if len(hib) else
                    "perplexity" not in metric,
                    "is_group": group == task})
    frame = pd.DataFrame(out, columns=cols)
    frame["_g"] = frame["group"].fillna(frame["task"])
    frame["_standalone"] = frame["group"].isna()
    frame = frame.sort_values(["_standalone", "_g", "is_group", "task"],
                              ascending=[True, True, False, True])
    return frame.drop(columns=["_g", "_standalone"]).reset_index(drop=True)


def build_summary(harness: pd.DataFrame, competences: pd.DataFrame
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The wide leaderboard (models x tasks and competences) and its column descriptions."""
    import pandas as pd

    metrics = primary_metrics(harness)
    labels = pd.concat([harness[LABEL_COLUMNS] if not harness.empty else None,
                        competences[LABEL_COLUMNS] if not competences.empty else None])
    labels = labels.drop_duplicates("model_id") if labels is not None and not labels.empty else \
        pd.DataFrame(columns=LABEL_COLUMNS)
    wide = labels.copy()
    if not metrics.empty:
        chosen = harness.merge(metrics[["task", "metric", "filter"]], on=["task", "metric", "filter"])
        # Several settings for one (model, task): the newest evaluation represents it.
        chosen = chosen.sort_values("evaluated_at").drop_duplicates(["model_id", "task"], keep="last")
        values = chosen.pivot(index="model_id", columns="task", values="value")
        wide = wide.merge(values.reindex(columns=list(metrics["task"])).reset_index(),
                          on="model_id", how="left")
    comp_cols: list[str] = []
    if not competences.empty:
        comp = competences.pivot(index="model_id", columns="competence", values="mean_score")
        order = [c for c in ("morphology", "syntax", "semantics", "reasoning", "discourse")
                 if c in comp.columns] + sorted(c for c in comp.columns if c not in
                                                ("morphology", "syntax", "semantics", "reasoning", "discourse"))
        comp = comp[order]
        comp_cols = [f"{HOLMES_PREFIX}{c}" for c in order]
        comp.columns = comp_cols
        wide = wide.merge(comp.reset_index(), on="model_id", how="left")
    wide["_role"] = wide["role"].map(ROLE_ORDER).fillna(len(ROLE_ORDER))
    wide = wide.sort_values(["_role", "model_id"]).drop(columns="_role").reset_index(drop=True)
    value_cols = [c for c in wide.columns if c not in LABEL_COLUMNS]
    for col in value_cols:
        wide[col] = pd.to_numeric(wide[col], errors="coerce").astype(float)
    holmes_meta = pd.DataFrame({
        "column": comp_cols, "task": comp_cols, "group": None, "metric": "mean_score",
        "filter": None, "higher_is_better": True, "is_group": False,
    })
    described = pd.concat([metrics, holmes_meta], ignore_index=True) if comp_cols else metrics
    return wide, described


def write_tables(tables: Tables, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in ((HARNESS_CSV, tables.harness), (HOLMES_CSV, tables.holmes),
                        (COMPETENCES_CSV, tables.competences), (SUMMARY_CSV, tables.summary),
                        (SUMMARY_METRICS_CSV, tables.summary_metrics)):
        path = out_dir / name
        write_text(path, frame.to_csv(index=False))
        written.append(path)
    write_json(out_dir / NOTES_JSON, tables.notes)
    written.append(out_dir / NOTES_JSON)
    return written


def load_tables(out_dir: Path | str) -> Tables:
    """Read the organized tables back (what plots, report and notebooks use)."""
    import pandas as pd

    out_dir = Path(out_dir)
    if not (out_dir / SUMMARY_CSV).is_file():
        raise MergepipeError(f"{out_dir / SUMMARY_CSV} not found; run 'mergepipe organize' first")

    def read(name: str, columns: list[str]) -> pd.DataFrame:
        path = out_dir / name
        if not path.is_file() or path.stat().st_size == 0:
            return pd.DataFrame(columns=columns)
        try:
            return pd.read_csv(path, keep_default_na=True)
        except pd.errors.EmptyDataError:
            return pd.DataFrame(columns=columns)

    notes: dict[str, Any] = {}
    if (out_dir / NOTES_JSON).is_file():
        notes = json.loads((out_dir / NOTES_JSON).read_text(encoding="utf-8"))
    return Tables(
        harness=read(HARNESS_CSV, [*HARNESS_COLUMNS, "higher_is_better"]),
        holmes=read(HOLMES_CSV, HOLMES_COLUMNS),
        competences=read(COMPETENCES_CSV, COMPETENCE_COLUMNS),
        summary=read(SUMMARY_CSV, LABEL_COLUMNS),
        summary_metrics=read(SUMMARY_METRICS_CSV, ["column", "task", "group", "metric", "filter", "aggregation",
                                                   "higher_is_better", "is_group"]),
        notes=notes,
        out_dir=out_dir,
    )
