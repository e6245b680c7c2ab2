"""A candidate's scores: one number per task from its finished lm-eval results, and the objective.

The metric of a task is ``search.metric`` when set, else the one the leaderboard shows for it
(the organize stage's order of preference: acc, acc_norm, exact_match, ...; filter none, strict-match,
strip). A lower-is-better metric enters the objective negated, so the objective is always maximised.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mergepipe.config import HarnessSettings, SearchSection
from mergepipe.evaluate.harness.results import find_finished, settings_hash
from mergepipe.results.tables import PRIMARY_FILTERS, PRIMARY_METRICS


def _rank(key: str) -> tuple[int, int, str]:
    metric, _, filt = key.partition(",")
    m = PRIMARY_METRICS.index(metric) if metric in PRIMARY_METRICS else len(PRIMARY_METRICS)
    f = PRIMARY_FILTERS.index(filt) if filt in PRIMARY_FILTERS else len(PRIMARY_FILTERS)
    return (m, f, key)


def pick_metric(metrics: dict[str, Any], wanted: str | None) -> str | None:
    """The ``metric,filter`` key representing a task (``wanted`` if given and present)."""
    keys = [k for k in metrics if "," in k and not k.partition(",")[0].endswith("_stderr")
            and isinstance(metrics[k], (int, float)) and not isinstance(metrics[k], bool)]
    if wanted is not None:
        return wanted if wanted in keys else None
    return min(keys, key=_rank) if keys else None


def task_scores(results_dir: Path, model_id: str, suite: str, tasks: list[str], settings: HarnessSettings,
                metric: str | None) -> dict[str, float] | None:
    """Per task, the score of a finished job (``None`` when the job has no complete results).

    A task without the metric scores NaN (the objective is then NaN: the candidate fails)."""
    found = find_finished(results_dir / model_id / suite, settings_hash(model_id, tasks, settings))
    if found is None:
        return None
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    results = data.get("results") or {}
    better = data.get("higher_is_better") or {}
    out: dict[str, float] = {}
    for task in tasks:
        metrics = results.get(task) or {}
        key = pick_metric(metrics, metric)
        if key is None:
            out[task] = math.nan
            continue
        value = float(metrics[key])
        higher = (better.get(task) or {}).get(key.partition(",")[0], True)
        out[task] = value if higher is not False else -value
    return out


def objective(scores: dict[str, float], section: SearchSection) -> float:
    """The configured aggregate of the tune tasks' scores (NaN if any is missing)."""
    values = [scores.get(t, math.nan) for t in section.tune]
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    if section.aggregate == "min":
        return min(values)
    weights = [float((section.weights or {}).get(t, 1.0)) for t in section.tune]
    total = sum(weights)
    if section.aggregate == "geometric_mean":
        if any(v <= 0 for v in values):
            return 0.0
        return math.exp(sum(w * math.log(v) for w, v in zip(weights, values, strict=True)) / total)
    return sum(w * v for w, v in zip(weights, values, strict=True)) / total


def aggregate(scores: dict[str, float], tasks: list[str]) -> float:
    """The plain mean over ``tasks`` (how the report tasks are summarised)."""
    values = [scores.get(t, math.nan) for t in tasks]
    return sum(values) / len(values) if values else math.nan
