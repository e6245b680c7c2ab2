"""Turn Holmes results CSVs (either engine) into per-dataset, per-competence and leaderboard scores.

Input everywhere is the long results table of :func:`read_results`: the upstream columns
``probing_dataset, model_name, encoding, control_task_type, sample_size, seed,
num_hidden_layers, score`` plus ``model_id`` (the ``holmes_results/<model-id>/`` folder) and
``version`` (from ``results_<version>.csv``).

The leaderboard score follows Holmes: per dataset the models of the pool are ranked, ranks are
min-max normalised to [0, 1] and averaged (x100) overall and per competence. It is relative to
the pool: adding or removing a model changes everybody's score.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mergepipe.errors import MergepipeError

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "probing_dataset", "model_name", "encoding", "control_task_type",
    "sample_size", "seed", "num_hidden_layers", "score",
]
NO_CONTROL = "NONE"
MAPPING_COLUMNS = {
    "probing dataset": "probing_dataset",
    "linguistic subfield": "competence",
    "linguistic phenomena": "phenomenon",
    "probe type": "probe_type",
}
COMPETENCES = ("morphology", "syntax", "semantics", "reasoning", "discourse")
OVERALL = "overall"


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
    """Every ``<holmes_results>/<model-id>/results_*.csv`` stacked (columns: RESULT_COLUMNS + model_id, version)."""
    frames = [
        read_results_csv(csv, csv.parent.name)
        for csv in sorted(Path(holmes_results).glob("*/results_*.csv"))
        if not csv.name.startswith(".")
    ]
    if not frames:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, "model_id", "version"])
    return pd.concat(frames, ignore_index=True)


def dataset_scores(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds. Out: model_id, probing_dataset, control_task_type, score, score_std, n_seeds."""
    if results.empty:
        cols = ["model_id", "probing_dataset", "control_task_type", "score", "score_std", "n_seeds"]
        return pd.DataFrame(columns=cols)
    grouped = results.groupby(["model_id", "probing_dataset", "control_task_type"], as_index=False)["score"]
    out = grouped.agg(score="mean", score_std="std", n_seeds="count")
    out["score_std"] = out["score_std"].fillna(0.0)
    return out.sort_values(["model_id", "probing_dataset", "control_task_type"], ignore_index=True)


def selectivity(per_dataset: pd.DataFrame) -> pd.DataFrame:
    """Score minus control score. Out: model_id, probing_dataset, score, control_score, selectivity.

    ``control_score``/``selectivity`` are NaN where no control task ran.
    """
    main = per_dataset[per_dataset["control_task_type"] == NO_CONTROL][["model_id", "probing_dataset", "score"]]
    ctrl = (per_dataset[per_dataset["control_task_type"] != NO_CONTROL]
            .groupby(["model_id", "probing_dataset"], as_index=False)["score"].mean()
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


def find_mapping(data_dir: Path) -> Path | None:
    """A mapping CSV shipped with a data folder: ``mapping.csv``, else a ``*holmes*.csv`` leaderboard."""
    for candidate in [data_dir / "mapping.csv", *sorted(data_dir.glob("*holmes*.csv")),
                      data_dir.parent / "mapping.csv"]:
        if candidate.is_file():
            return candidate
    return None


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


def resolve_mapping_csv(mapping_csv: Path | None, data_dir: Path | None) -> Path | None:
    """The mapping to use: ``holmes.mapping_csv`` if set, else one shipped in the data folder.

    ``data_dir`` None means the demo zoo's probing sets. Returns None when there is no mapping
    (per-competence tables are then skipped; per-dataset ones still work).
    """
    if mapping_csv is not None:
        if not Path(mapping_csv).is_file():
            raise MergepipeError(f"holmes.mapping_csv: file not found: {mapping_csv}")
        return Path(mapping_csv)
    if data_dir is None:
        try:
            from mergepipe import zoo

            data_dir = Path(zoo.probing_data_dir())
        except (ImportError, AttributeError):
            return None
    return find_mapping(Path(data_dir)) if Path(data_dir).is_dir() else None
