"""Holmes scoring, the one place: control tasks, selectivity, competences and leaderboard scores.

Used by organize (``holmes.csv``, ``holmes_competences.csv``, the leaderboard) and by the probing
stage's own summary. Input everywhere is the long results table of
:func:`mergepipe.evaluate.holmes.results_file.read_results`: the upstream columns plus
``model_id`` (the ``holmes_results/<model-id>/`` folder) and ``version``.

**The control-task rule.** Selectivity (Hewitt & Liang, 2019) is a probe's score minus the score
of the same probe on a control task, and a control task is one specific task. When a dataset
has results for several control types (upstream Holmes can run RANDOMIZATION, PERMUTATION, ...),
averaging them would subtract a blend that is no control task at all, and picking per seed could
mix types across the seeds of one dataset. So, per model and dataset, exactly one control type
is used: the first of :data:`CONTROL_PREFERENCE` that is present (else the alphabetically first),
for every seed of that dataset. RANDOMIZATION (labels permuted, the control task of Hewitt &
Liang and the one the built-in engine runs) comes first. The other control rows are ignored.

The leaderboard score follows Holmes: per dataset the models of the pool are ranked, ranks are
min-max normalised to [0, 1] and averaged (x100) overall and per competence. It is relative to
the pool: adding or removing a model changes everybody's score.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from mergepipe.errors import MergepipeError
from mergepipe.evaluate.holmes.results_file import NO_CONTROL

log = logging.getLogger(__name__)

MAPPING_COLUMNS = {
    "probing dataset": "probing_dataset",
    "linguistic subfield": "competence",
    "linguistic phenomena": "phenomenon",
    "probe type": "probe_type",
}
COMPETENCES = ("morphology", "syntax", "semantics", "reasoning", "discourse")
CONTROL_PREFERENCE = ("RANDOMIZATION", "PERMUTATION", "RANDOM_WEIGHTS")
OVERALL = "overall"


def dataset_scores(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds. Out: model_id, probing_dataset, control_task_type, score, score_std, n_seeds."""
    if results.empty:
        cols = ["model_id", "probing_dataset", "control_task_type", "score", "score_std", "n_seeds"]
        return pd.DataFrame(columns=cols)
    grouped = results.groupby(["model_id", "probing_dataset", "control_task_type"], as_index=False)["score"]
    out = grouped.agg(score="mean", score_std="std", n_seeds="count")
    out["score_std"] = out["score_std"].fillna(0.0)
    return out.sort_values(["model_id", "probing_dataset", "control_task_type"], ignore_index=True)


def _preference(control_type: str) -> tuple[int, str]:
    rank = CONTROL_PREFERENCE.index(control_type) if control_type in CONTROL_PREFERENCE else len(CONTROL_PREFERENCE)
    return (rank, control_type)


def chosen_controls(rows: pd.DataFrame) -> pd.DataFrame:
    """The one control type used per (model_id, probing_dataset) (see the module's rule).

    In: any frame with model_id, probing_dataset, control_task_type. Out: those three columns,
    one row per (model, dataset) that has at least one control row.
    """
    ctrl = rows[rows["control_task_type"] != NO_CONTROL][["model_id", "probing_dataset", "control_task_type"]]
    ctrl = ctrl.drop_duplicates()
    if ctrl.empty:
        return ctrl.reset_index(drop=True)
    ctrl = ctrl.assign(_rank=ctrl["control_task_type"].map(_preference))
    ctrl = ctrl.sort_values(["model_id", "probing_dataset", "_rank"])
    return ctrl.drop_duplicates(["model_id", "probing_dataset"]).drop(columns="_rank").reset_index(drop=True)


def only_chosen_controls(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` keeping the probe rows and, per model and dataset, the rows of the chosen control type."""
    chosen = chosen_controls(rows).assign(_keep=True)
    marked = rows.merge(chosen, on=["model_id", "probing_dataset", "control_task_type"], how="left")
    keep = (rows["control_task_type"] == NO_CONTROL).to_numpy() | marked["_keep"].fillna(False).to_numpy(dtype=bool)
    return rows[keep]


def selectivity(per_dataset: pd.DataFrame) -> pd.DataFrame:
    """Score minus control score (the chosen control type). Out: model_id, probing_dataset, score,
    control_task_type, control_score, selectivity; the control columns are NaN where none ran.
    """
    main = per_dataset[per_dataset["control_task_type"] == NO_CONTROL][["model_id", "probing_dataset", "score"]]
    ctrl = only_chosen_controls(per_dataset)
    ctrl = (ctrl[ctrl["control_task_type"] != NO_CONTROL][["model_id", "probing_dataset", "control_task_type", "score"]]
            .rename(columns={"score": "control_score"}))
    out = main.merge(ctrl, on=["model_id", "probing_dataset"], how="left")
    out["selectivity"] = out["score"] - out["control_score"]
    return out.reset_index(drop=True)


def load_mapping(path: Path) -> pd.DataFrame:
    """The dataset -> competence mapping from a CSV with the upstream leaderboard's column names.

    Out: probing_dataset, competence, phenomenon, probe_type (values stripped; competence lower-case).
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MergepipeError(f"{path}: not a readable Holmes mapping CSV ({exc})") from None
    needed = ["probing dataset", "linguistic subfield"]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise MergepipeError(f"{path}: mapping CSV lacks column(s) {', '.join(repr(c) for c in missing)}")
    out = pd.DataFrame({new: raw[old].str.strip() if old in raw.columns else ""
                        for old, new in MAPPING_COLUMNS.items()})
    out["competence"] = out["competence"].str.lower()
    return out.drop_duplicates("probing_dataset").reset_index(drop=True)


def find_mapping(candidates: Iterable[Path | None]) -> Path | None:
    """The first mapping CSV among ``candidates``: a CSV file itself, or one shipped with a data
    folder (``mapping.csv``, else a ``*holmes*.csv`` leaderboard, else ``../mapping.csv``)."""
    for cand in candidates:
        if cand is None:
            continue
        cand = Path(cand)
        if cand.is_file():
            return cand
        if not cand.is_dir():
            continue
        for found in [cand / "mapping.csv", *sorted(cand.glob("*holmes*.csv")), cand.parent / "mapping.csv"]:
            if found.is_file():
                return found
    return None


def resolve_mapping_csv(mapping_csv: Path | None, data_dir: Path | None) -> Path | None:
    """The mapping to use: ``mapping_csv`` (holmes.mapping_csv) if set, which must exist, else one
    shipped with ``data_dir``; None when there is none (per-competence tables are then skipped)."""
    if mapping_csv is not None:
        if not Path(mapping_csv).is_file():
            raise MergepipeError(f"holmes.mapping_csv: file not found: {mapping_csv}")
        return Path(mapping_csv)
    return find_mapping([data_dir]) if data_dir is not None else None


def _with_competence(frame: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
    merged = frame.merge(mapping[["probing_dataset", "competence"]], on="probing_dataset", how="left")
    unmapped = sorted(merged.loc[merged["competence"].isna(), "probing_dataset"].unique())
    if unmapped:
        log.warning("no competence for %d dataset(s): %s", len(unmapped), ", ".join(unmapped[:5]))
    return merged.dropna(subset=["competence"])


def competence_scores(per_dataset: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
    """Mean raw score (and control score, selectivity) per competence.

    In: :func:`dataset_scores` output. Out: model_id, competence, score, control_score,
    selectivity, n_datasets.
    """
    sel = _with_competence(selectivity(per_dataset), mapping)
    if sel.empty:
        return pd.DataFrame(columns=["model_id", "competence", "score", "control_score", "selectivity", "n_datasets"])
    out = sel.groupby(["model_id", "competence"], as_index=False).agg(
        score=("score", "mean"), control_score=("control_score", "mean"),
        selectivity=("selectivity", "mean"), n_datasets=("probing_dataset", "nunique"),
    )
    return out.sort_values(["model_id", "competence"], ignore_index=True)


def normalised_ranks(per_dataset: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the pool's models ranked by score, min-max normalised to [0, 1] (1 = best).

    Ties share their average rank; a dataset where all models tie (or a pool of one) gives 0.5.
    Out: model_id, probing_dataset, score, norm_rank.
    """
    main = per_dataset[per_dataset["control_task_type"] == NO_CONTROL][["model_id", "probing_dataset", "score"]].copy()
    main = main.dropna(subset=["score"])
    ranks = main.groupby("probing_dataset")["score"].rank(method="average", ascending=True)
    lo = ranks.groupby(main["probing_dataset"]).transform("min")
    hi = ranks.groupby(main["probing_dataset"]).transform("max")
    span = hi - lo
    main["norm_rank"] = ((ranks - lo) / span.where(span > 0)).fillna(0.5)
    return main.reset_index(drop=True)


def leaderboard_scores(per_dataset: pd.DataFrame, mapping: pd.DataFrame | None = None) -> pd.DataFrame:
    """Holmes' leaderboard score (0-100, relative to the pool) overall and per competence.

    In: :func:`dataset_scores` output (all models of the pool). Out: model_id, competence
    ('overall' or a competence), holmes_score, n_datasets.
    """
    ranked = normalised_ranks(per_dataset)
    if ranked.empty:
        return pd.DataFrame(columns=["model_id", "competence", "holmes_score", "n_datasets"])
    parts = [ranked.assign(competence=OVERALL)]
    if mapping is not None:
        parts.append(_with_competence(ranked, mapping))
    both = pd.concat(parts, ignore_index=True)
    out = both.groupby(["model_id", "competence"], as_index=False).agg(
        holmes_score=("norm_rank", "mean"), n_datasets=("probing_dataset", "nunique"),
    )
    out["holmes_score"] = out["holmes_score"] * 100.0
    return out.sort_values(["model_id", "competence"], ignore_index=True)
