"""Holmes probing results -> tidy rows per (model, dataset, seed) and per-competence scores.

Reads ``holmes_results/<model-id>/results_<version>.csv`` (upstream Holmes columns
``probing_dataset,model_name,encoding,control_task_type,sample_size,seed,num_hidden_layers,score``).
Rows with ``control_task_type`` NONE are the probe scores; the matching row of the dataset's one
control type (same seed and encoding; the rule is :mod:`mergepipe.results.holmes_scoring`'s)
gives the control score, and selectivity = score - control score.

Competences come from a mapping CSV in the upstream leaderboard layout (``probing dataset``,
``linguistic subfield``, ``linguistic phenomena``, ``probe type``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from mergepipe.core.records import MODEL_INFO, ModelInfo
from mergepipe.evaluate.holmes.results_file import NO_CONTROL, RESULT_COLUMNS, result_files
from mergepipe.results.harness_table import ROLE_ORDER, Issue, model_labels
from mergepipe.results.holmes_scoring import only_chosen_controls

if TYPE_CHECKING:
    import pandas as pd

HOLMES_COLUMNS = [
    "run", "model_id", "role", "merge_method", "merge_parameters", "probing_dataset",
    "competence", "phenomenon", "probe_type", "seed", "encoding", "sample_size",
    "num_hidden_layers", "score", "control_task_type", "control_score", "selectivity",
    "holmes_version", "source_file",
]
COMPETENCE_COLUMNS = ["run", "model_id", "role", "merge_method", "merge_parameters",
                      "competence", "n_datasets", "mean_score", "mean_control_score",
                      "mean_selectivity", "rank_score"]
UNKNOWN = "unknown"
_VERSION = re.compile(r"^results_(.*)\.csv$")


def _version_key(path: Path) -> tuple[float, str]:
    return (path.stat().st_mtime, path.name)


def read_holmes_dir(holmes_dir: Path, mapping: pd.DataFrame | None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, list[Issue], int]:
    """Tidy probe rows (one per model, dataset, seed, encoding), the long table as read
    (probe and control rows, for aggregation), issues, files found."""
    import pandas as pd

    holmes_dir = Path(holmes_dir)
    files = result_files(holmes_dir)
    issues: list[Issue] = []
    frames = []
    for path in files:
        try:
            raw = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
            issues.append(Issue("unreadable", str(path), f"{path}: not a readable CSV ({exc}); skipped"))
            continue
        missing = [c for c in ("probing_dataset", "control_task_type", "seed", "score")
                   if c not in raw.columns]
        if missing:
            issues.append(Issue("layout", str(path), f"{path}: unsupported layout, missing column(s) "
                                f"{', '.join(missing)}; skipped"))
            continue
        if raw.empty:
            issues.append(Issue("empty", str(path), f"{path}: no rows"))
            continue
        model_id = path.parent.name
        raw = raw.copy()
        raw["model_id"] = model_id
        raw["holmes_version"] = (_VERSION.match(path.name) or [None, None])[1]
        raw["source_file"] = str(path.relative_to(holmes_dir))
        frames.append((path, raw))
    if not frames:
        return pd.DataFrame(columns=HOLMES_COLUMNS), pd.DataFrame(), issues, len(files)

    # Several result files of one model (Holmes CSVs carry no timestamp): the most recently
    # written file wins per (dataset, seed, encoding, control task).
    ordered = sorted(frames, key=lambda item: _version_key(item[0]))
    allrows = pd.concat([f for _, f in ordered], ignore_index=True)
    for col in RESULT_COLUMNS:
        if col not in allrows.columns:
            allrows[col] = pd.NA
    allrows["control_task_type"] = allrows["control_task_type"].fillna(NO_CONTROL).astype(str).str.upper()
    allrows["encoding"] = allrows["encoding"].fillna("").astype(str)
    allrows["score"] = pd.to_numeric(allrows["score"], errors="coerce")
    allrows["seed"] = pd.to_numeric(allrows["seed"], errors="coerce")
    key = ["model_id", "probing_dataset", "seed", "encoding", "control_task_type"]
    allrows = allrows.drop_duplicates(key, keep="last")

    probes = allrows[allrows["control_task_type"] == NO_CONTROL].drop(columns="control_task_type")
    # One control type per model and dataset, the same for every seed (the rule of holmes_scoring).
    controls = only_chosen_controls(allrows)
    controls = controls[controls["control_task_type"] != NO_CONTROL]
    controls = controls[["model_id", "probing_dataset", "seed", "encoding", "control_task_type", "score"]]
    tidy = probes.merge(controls.rename(columns={"score": "control_score"}),
                        on=["model_id", "probing_dataset", "seed", "encoding"], how="left")
    tidy["selectivity"] = tidy["score"] - tidy["control_score"]

    if mapping is not None and not mapping.empty:
        tidy = tidy.merge(mapping, on="probing_dataset", how="left")
    for col in ("competence", "phenomenon", "probe_type"):
        if col not in tidy.columns:
            tidy[col] = pd.NA
    tidy["competence"] = tidy["competence"].fillna(UNKNOWN)

    label_rows = []
    for model_id in tidy["model_id"].unique():
        info = ModelInfo.read(holmes_dir / model_id)
        if info is None:
            issues.append(Issue("no-model-info", str(holmes_dir / model_id / MODEL_INFO),
                                f"{holmes_dir / model_id / MODEL_INFO} missing: role unknown"))
        label_rows.append({"model_id": model_id, **model_labels(info)})
    tidy = tidy.merge(pd.DataFrame(label_rows), on="model_id", how="left")
    for col in ("score", "control_score", "selectivity"):
        tidy[col] = pd.to_numeric(tidy[col], errors="coerce").astype(float)
    for col in ("sample_size", "num_hidden_layers", "seed"):
        tidy[col] = pd.to_numeric(tidy[col], errors="coerce").round().astype("Int64")
    tidy = tidy[HOLMES_COLUMNS]
    return tidy.reset_index(drop=True), allrows, issues, len(files)


# -- aggregation -----------------------------------------------------------------------------

def competence_table(holmes: pd.DataFrame, raw: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model and competence: raw mean score, selectivity and Holmes' pool-relative score.

    The maths is the probing stage's (:mod:`mergepipe.results.holmes_scoring`): scores are
    averaged over seeds per dataset, then over the datasets of a competence; ``rank_score`` is
    Holmes' leaderboard score (0-100): per dataset the pool's models are ranked, ranks min-max
    normalised and averaged. It is relative to the pool. Competence ``overall`` covers all
    datasets. Datasets missing from the mapping count as competence ``unknown``.
    """
    import pandas as pd

    from mergepipe.results import holmes_scoring as agg

    if holmes.empty:
        return pd.DataFrame(columns=COMPETENCE_COLUMNS)
    if raw is None:  # only probe rows: no control scores
        raw = holmes.assign(control_task_type="NONE")
    mapping = holmes[["probing_dataset", "competence"]].drop_duplicates("probing_dataset")
    per_ds = agg.dataset_scores(raw[["model_id", "probing_dataset", "control_task_type", "score"]])
    comp = agg.competence_scores(per_ds, mapping)
    board = agg.leaderboard_scores(per_ds, mapping)
    overall = agg.selectivity(per_ds).groupby("model_id", as_index=False).agg(
        score=("score", "mean"), control_score=("control_score", "mean"),
        selectivity=("selectivity", "mean"), n_datasets=("probing_dataset", "nunique")).assign(competence=agg.OVERALL)
    comp = pd.concat([comp, overall], ignore_index=True)
    comp = comp.merge(board[["model_id", "competence", "holmes_score"]],
                      on=["model_id", "competence"], how="left")
    comp = comp.rename(columns={"score": "mean_score", "selectivity": "mean_selectivity",
                                "control_score": "mean_control_score",
                                "holmes_score": "rank_score"})
    labels = ["run", "model_id", "role", "merge_method", "merge_parameters"]
    comp = comp.merge(holmes[labels].drop_duplicates("model_id"), on="model_id", how="left")
    comp["n_datasets"] = comp["n_datasets"].astype(int)
    comp["_role"] = comp["role"].map(ROLE_ORDER).fillna(len(ROLE_ORDER))
    comp["_overall"] = comp["competence"] == agg.OVERALL
    comp = comp.sort_values(["_role", "model_id", "_overall", "competence"]).reset_index(drop=True)
    return comp[COMPETENCE_COLUMNS]
