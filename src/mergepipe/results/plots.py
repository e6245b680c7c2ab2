"""Figures from the organized tables (matplotlib, Agg): PNG + SVG into ``organized_results/plots/``.

Every function takes the organized results folder (or already loaded :class:`Tables`) and
returns the matplotlib Figure, so notebooks can show it and :func:`make_plots` can save it.
Nothing here knows model or task names: they come from the tables.

- :func:`task_performance`: one panel per task, one bar per model coloured by role, the band
  between the experts' scores shaded (a merge above / inside / below it is visible at once);
- :func:`holmes_competences`: Holmes mean score (and pool-relative score) per competence;
- :func:`holmes_datasets`: per probing dataset, score, control score and selectivity;
- :func:`correlation`: Kendall tau, Holmes competences vs harness tasks, across models;
- :func:`merge_outcomes`: per merged model, tasks where it beats both experts / lies between /
  is worse than both;
- :func:`parameter_sweeps`: scores vs the parameters a set of merges of one method varies (a
  one-parameter sweep, each parameter of a grid, each searched parameter of a search);
- :func:`search_trajectory`: a search's objective per trial with the best so far, and the tune
  vs report scores of the best candidate, the defaults and the experts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergepipe.results.tables import HOLMES_PREFIX, Tables, display_name, load_tables

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

PLOTS_DIR = "plots"
FORMATS = ("png", "svg")
ROLE_COLORS = {"base": "#7f7f7f", "expert": "#1f77b4", "merged": "#2ca02c", "unknown": "#bcbd22"}
OUTCOME_COLORS = {"better than both": "#2ca02c", "between": "#ffbf00", "worse than both": "#d62728"}
OUTCOMES = list(OUTCOME_COLORS)
MIN_MODELS_FOR_CORRELATION = 4


def _tables(results: Path | str | Tables) -> Tables:
    return results if isinstance(results, Tables) else load_tables(results)


def _pyplot() -> Any:
    import sys

    import matplotlib

    # Files only, no display: Agg, unless a notebook (inline backend) or the caller chose one.
    if "ipykernel" not in sys.modules and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "mergepipe"  # reproducible SVG ids
    return plt


def _note_figure(title: str, message: str) -> Figure:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.2))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11)
    return fig


def harness_tasks(tables: Tables) -> pd.DataFrame:
    """The summary's harness columns (task, metric, filter, higher_is_better)."""
    meta = tables.summary_metrics
    if meta.empty:
        return meta
    return meta[~meta["column"].astype(str).str.startswith(HOLMES_PREFIX)].reset_index(drop=True)


def _label(metric: Any, filt: Any) -> str:
    if isinstance(filt, str) and filt and filt != "none":
        return f"{metric} ({filt})"
    return str(metric)


def _higher_better(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() != "false"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return bool(value)


# -- 1. absolute performance per task --------------------------------------------------------

def task_performance(results: Path | str | Tables) -> Figure:
    plt = _pyplot()
    from matplotlib.patches import Patch

    tables = _tables(results)
    tasks = harness_tasks(tables)
    summary = tables.summary
    if tasks.empty or summary.empty:
        return _note_figure("Harness scores per task", "no lm-eval results to plot")
    harness = tables.harness
    n = len(tasks)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    n_models = len(summary)
    width = max(4.0, 0.45 * n_models + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.6 * rows), squeeze=False)
    experts = summary[summary["role"] == "expert"]
    labels = summary["model_id"].astype(str).tolist()
    colors = [ROLE_COLORS.get(str(r), ROLE_COLORS["unknown"]) for r in summary["role"]]
    for ax, (_, task) in zip(axes.flat, tasks.iterrows(), strict=False):
        values = summary[task["column"]].astype(float).to_numpy()
        sel = harness[(harness["task"] == task["task"]) & (harness["metric"] == task["metric"])
                      & (harness["filter"].astype(str) == str(task["filter"]))]
        err = (sel.sort_values("evaluated_at").drop_duplicates("model_id", keep="last")
               .set_index("model_id")["stderr"].reindex(labels).astype(float).to_numpy())
        x = range(len(labels))
        bars = ax.bar(x, values, color=colors, yerr=err, capsize=2, error_kw={"elinewidth": 0.8})
        ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.2f}" for v in values],
                     fontsize=7, padding=1)
        expert_values = experts[task["column"]].dropna().astype(float)
        if len(expert_values):
            lo, hi = expert_values.min(), expert_values.max()
            if hi > lo:
                ax.axhspan(lo, hi, color=ROLE_COLORS["expert"], alpha=0.15, zorder=0)
            for level in {lo, hi}:
                ax.axhline(level, color=ROLE_COLORS["expert"], lw=0.8, ls="--", zorder=0)
        finite = [v for v in values if not math.isnan(v)]
        tops = [v + (0.0 if math.isnan(e) else e) for v, e in zip(values, err, strict=True)]
        top = max([*(t for t in tops if not math.isnan(t)), 0.0])
        ax.set_ylim(min([*finite, 0.0]) * 1.15, top * 1.15 if top > 0 else 1.0)
        kind = " (group)" if str(task.get("is_group")).lower() == "true" else ""
        ax.set_title(f"{task['task']}{kind}", fontsize=10)
        ax.set_ylabel(_label(task["metric"], task["filter"]), fontsize=9)
        ax.set_xticks(list(x), labels, rotation=40, ha="right", fontsize=8)
        for i, v in enumerate(values):
            if math.isnan(v):
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#555")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    roles = [r for r in ROLE_COLORS if r in set(summary["role"].astype(str))]
    handles = [Patch(color=ROLE_COLORS[r], label=r) for r in roles]
    handles.append(Patch(color=ROLE_COLORS["expert"], alpha=0.15, label="experts' range"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Harness scores per task", y=1.04)
    fig.tight_layout()
    return fig


# -- 2. Holmes per competence ----------------------------------------------------------------

def holmes_competences(results: Path | str | Tables) -> Figure:
    plt = _pyplot()
    tables = _tables(results)
    comp = tables.competences
    if comp.empty:
        return _note_figure("Holmes scores per competence", "no Holmes results to plot")
    models = [m for m in tables.models if m in set(comp["model_id"])]
    competences = list(dict.fromkeys(comp["competence"].astype(str)))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.2 * len(competences) * 2 + 3), 4.2))
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    width = 0.8 / max(1, len(models))
    for ax, column, ylabel in ((axes[0], "mean_score", "mean probe score"),
                               (axes[1], "rank_score", "pool-relative score (0-100)")):
        for i, model in enumerate(models):
            part = comp[comp["model_id"] == model].set_index("competence")[column]
            values = [float(part.get(c, math.nan)) for c in competences]
            role = str(comp.loc[comp["model_id"] == model, "role"].iloc[0])
            ax.bar([j + (i - (len(models) - 1) / 2) * width for j in range(len(competences))],
                   values, width=width, color=cmap(i % cmap.N), label=f"{model} ({role})",
                   hatch="//" if role == "merged" else None, edgecolor="white", linewidth=0.3)
        ax.set_xticks(range(len(competences)), competences, rotation=20)
        ax.set_ylabel(ylabel)
    axes[0].set_title("Raw mean per competence")
    axes[1].set_title("Holmes leaderboard score (relative to these models)")
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    fig.tight_layout()
    return fig


def holmes_datasets(results: Path | str | Tables) -> Figure:
    """Per probing dataset: mean score over seeds (with the control task's score) per model."""
    plt = _pyplot()
    tables = _tables(results)
    holmes = tables.holmes
    if holmes.empty:
        return _note_figure("Holmes scores per dataset", "no Holmes results to plot")
    per = (holmes.groupby(["competence", "probing_dataset", "model_id"], dropna=False)
           [["score", "control_score", "selectivity"]].mean().reset_index())
    datasets = per[["competence", "probing_dataset"]].drop_duplicates().sort_values(
        ["competence", "probing_dataset"])
    names = [f"{d} ({c})" for c, d in datasets.itertuples(index=False)]
    models = [m for m in tables.models if m in set(per["model_id"])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 2.2), sharey=True)
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    ys = range(len(names))
    for i, model in enumerate(models):
        part = per[per["model_id"] == model].set_index("probing_dataset").reindex(
            datasets["probing_dataset"])
        offset = (i - (len(models) - 1) / 2) * 0.8 / max(1, len(models))
        axes[0].scatter(part["score"], [y + offset for y in ys], color=cmap(i % cmap.N), s=18,
                        label=model)
        axes[0].scatter(part["control_score"], [y + offset for y in ys], color=cmap(i % cmap.N),
                        s=18, marker="x", alpha=0.6)
        axes[1].barh([y + offset for y in ys], part["selectivity"], height=0.8 / max(1, len(models)),
                     color=cmap(i % cmap.N))
    axes[0].set_yticks(list(ys), names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("score (dots) / control-task score (x)")
    axes[1].set_xlabel("selectivity = score - control score")
    axes[1].axvline(0, color="#333", lw=0.8)
    axes[0].set_title("Probe score per dataset")
    axes[1].set_title("Selectivity")
    axes[0].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.06), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


# -- 3. Kendall tau ---------------------------------------------------------------------------

def correlation_table(results: Path | str | Tables) -> tuple[pd.DataFrame, int]:
    """Kendall tau of Holmes competence scores vs harness task scores across models, and n."""
    import pandas as pd
    from scipy.stats import kendalltau

    tables = _tables(results)
    summary = tables.summary
    comp_cols = [c for c in summary.columns if str(c).startswith(HOLMES_PREFIX)]
    task_cols = list(harness_tasks(tables)["column"]) if not tables.summary_metrics.empty else []
    both = summary.dropna(subset=comp_cols + task_cols, how="any") if comp_cols and task_cols else summary.iloc[:0]
    n = len(both)
    tau = pd.DataFrame(index=[c.removeprefix(HOLMES_PREFIX) for c in comp_cols], columns=task_cols,
                       dtype=float)
    if n >= 2:
        for comp in comp_cols:
            for task in task_cols:
                x, y = both[comp].astype(float), both[task].astype(float)
                if x.nunique() > 1 and y.nunique() > 1:
                    tau.loc[comp.removeprefix(HOLMES_PREFIX), task] = kendalltau(x, y).statistic
    return tau, n


def correlation(results: Path | str | Tables) -> Figure:
    plt = _pyplot()
    tau, n = correlation_table(results)
    title = "Kendall tau: Holmes competences vs harness tasks"
    if tau.empty:
        return _note_figure(title, "needs both Holmes and harness results for the same models")
    if n < MIN_MODELS_FOR_CORRELATION:
        return _note_figure(title, f"n = {n} model(s) with both Holmes and harness results: at "
                            f"least {MIN_MODELS_FOR_CORRELATION} are needed for a rank correlation")
    fig, ax = plt.subplots(figsize=(1.1 * len(tau.columns) + 3, 0.6 * len(tau.index) + 2))
    image = ax.imshow(tau.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(tau.columns)), tau.columns, rotation=40, ha="right")
    ax.set_yticks(range(len(tau.index)), tau.index)
    for i in range(len(tau.index)):
        for j in range(len(tau.columns)):
            v = tau.iat[i, j]
            ax.text(j, i, "n/a" if math.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    fontsize=8, color="white" if not math.isnan(v) and abs(v) > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="Kendall tau")
    ax.set_title(f"{title}\n(n = {n} models)", fontsize=10)
    fig.tight_layout()
    return fig


# -- 4. merged vs experts ---------------------------------------------------------------------

def outcome_table(results: Path | str | Tables) -> pd.DataFrame:
    """One row per (merged model, task): its score, the experts' range and the outcome.

    Experts (and the base) are those of the merged model's run (all of them if the run has none).
    'better than both' = beyond the best expert in the metric's good direction. Only tasks that
    at least one expert does better than the base count: on a task no expert improved, "beating
    the experts" says nothing about the merge (without a base score every task counts).
    """
    import pandas as pd

    tables = _tables(results)
    summary = tables.summary
    cols = ["model_id", "merge_method", "merge_parameters", "run", "task", "value", "expert_min",
            "expert_max", "n_experts", "outcome"]
    tasks = harness_tasks(tables)
    if summary.empty or tasks.empty:
        return pd.DataFrame(columns=cols)
    merged = summary[summary["role"] == "merged"]

    def of_run(role: str, run: Any) -> pd.DataFrame:
        everyone = summary[summary["role"] == role]
        mine = everyone[everyone["run"] == run]
        return mine if not mine.empty else everyone

    rows = []
    for _, model in merged.iterrows():
        experts, bases = of_run("expert", model["run"]), of_run("base", model["run"])
        for _, task in tasks.iterrows():
            value = float(model[task["column"]])
            ev = experts[task["column"]].dropna().astype(float)
            if math.isnan(value) or ev.empty:
                continue
            lo, hi = ev.min(), ev.max()
            good = _higher_better(task["higher_is_better"])
            base = bases[task["column"]].dropna().astype(float)
            if not base.empty and not ((hi > base.max()) if good else (lo < base.min())):
                continue  # no expert is better than the base here
            if (value > hi) if good else (value < lo):
                outcome = "better than both"
            elif (value < lo) if good else (value > hi):
                outcome = "worse than both"
            else:
                outcome = "between"
            rows.append({"model_id": model["model_id"], "merge_method": model["merge_method"],
                         "merge_parameters": model["merge_parameters"], "run": model["run"],
                         "task": task["column"], "value": value, "expert_min": lo,
                         "expert_max": hi, "n_experts": len(ev), "outcome": outcome})
    return pd.DataFrame(rows, columns=cols)


def merge_outcomes(results: Path | str | Tables) -> Figure:
    plt = _pyplot()
    table = outcome_table(results)
    title = "Merged model vs experts, on the tasks an expert improved over the base"
    if table.empty:
        return _note_figure(title, "needs merged models and experts evaluated on the same tasks")
    counts = table.groupby(["model_id", "outcome"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=OUTCOMES, fill_value=0)
    methods = table.drop_duplicates("model_id").set_index("model_id")["merge_method"]
    labels = [f"{methods.get(m) or '?'}: {display_name(m)}" for m in counts.index]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(counts) + 1.8))
    left = [0] * len(counts)
    for outcome in OUTCOMES:
        vals = counts[outcome].tolist()
        ax.barh(labels, vals, left=left, color=OUTCOME_COLORS[outcome], label=outcome)
        for i, (start, v) in enumerate(zip(left, vals, strict=True)):
            if v:
                ax.text(start + v / 2, i, str(v), ha="center", va="center", fontsize=8)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of tasks")
    ax.invert_yaxis()
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


# -- 5. parameter sweeps ----------------------------------------------------------------------

def _scalar(value: Any) -> float | None:
    if isinstance(value, list) and value and all(v == value[0] for v in value):
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def sweeps(results: Path | str | Tables) -> list[tuple[str, str, pd.DataFrame]]:
    """(method, parameter, rows of the summary with a ``_param`` column) for every method whose
    merged models differ in exactly one numeric parameter (at least 2 values)."""
    tables = _tables(results)
    summary = tables.summary
    found = []
    if summary.empty:
        return found
    merged = summary[summary["role"] == "merged"]
    for method, part in merged.groupby("merge_method"):
        params = [json.loads(p) if isinstance(p, str) and p else {} for p in part["merge_parameters"]]
        keys = sorted({k for p in params for k in p})
        varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]
        if len(varying) != 1:
            continue
        key = varying[0]
        values = [_scalar(p.get(key)) for p in params]
        if any(v is None for v in values) or len(set(values)) < 2:
            continue
        found.append((str(method), key, part.assign(_param=values).sort_values("_param")))
    return found


def parameter_views(results: Path | str | Tables) -> list[tuple[str, str, pd.DataFrame, list[str]]]:
    """Merges of one method (and run) that differ in two or more numeric parameters, such as a
    sweep grid: (method, parameter, rows with ``_param`` and ``_group``, the other parameters), one
    per varying parameter. ``_group`` names the other parameters' values, so the points of one grid
    line share it. Merges of a search study are shown from its trials instead (see
    :func:`search_views`)."""
    tables = _tables(results)
    summary = tables.summary
    found: list[tuple[str, str, pd.DataFrame, list[str]]] = []
    if summary.empty:
        return found
    studies = set(_trials(tables)["study"].astype(str))
    merged = summary[(summary["role"] == "merged") & ~summary["run"].astype(str).isin(studies)]
    for (_run, method), part in merged.groupby([merged["run"].astype(str), "merge_method"]):
        params = [json.loads(p) if isinstance(p, str) and p else {} for p in part["merge_parameters"]]
        keys = sorted({k for p in params for k in p})
        varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]
        if len(varying) < 2:
            continue
        numeric = {k: [_scalar(p.get(k)) for p in params] for k in varying}
        usable = [k for k in varying if all(v is not None for v in numeric[k])]
        for key in usable:
            others = [k for k in varying if k != key]
            groups = [", ".join(f"{k}={_text(p.get(k))}" for k in others) for p in params]
            rows = part.assign(_param=numeric[key], _group=groups).sort_values(["_group", "_param"])
            found.append((str(method), key, rows, others))
    return found


def _text(value: Any) -> str:
    scalar = _scalar(value)
    return f"{scalar:g}" if scalar is not None else json.dumps(value)


def _trials(tables: Tables) -> pd.DataFrame:
    """The search trials beside the tables (none when the tables were not read from a folder)."""
    import pandas as pd

    from mergepipe.results.search_table import TRIAL_COLUMNS, load_trials

    return load_trials(tables.out_dir) if tables.out_dir is not None else pd.DataFrame(columns=TRIAL_COLUMNS)


def search_views(results: Path | str | Tables) -> list[tuple[str, str, pd.DataFrame]]:
    """Per search study and searched parameter: the scored trials with ``_param`` (the value) and
    ``objective``; a per-expert parameter shows its mean over the experts."""
    from mergepipe.results.search_table import trial_parameters

    tables = _tables(results)
    trials = _trials(tables)
    found: list[tuple[str, str, pd.DataFrame]] = []
    if trials.empty:
        return found
    done = trials[trials["state"] == "complete"]
    for study, part in done.groupby(done["study"].astype(str)):
        params = [trial_parameters(p) for p in part["parameters"]]
        keys = sorted({k for p in params for k in p})
        for key in keys:
            values = []
            for p in params:
                v = p.get(key)
                if isinstance(v, list) and v and all(_scalar(x) is not None for x in v):
                    v = sum(float(x) for x in v) / len(v)
                values.append(_scalar(v))
            rows = part.assign(_param=values).dropna(subset=["_param"])
            if rows["_param"].nunique() >= 2:
                found.append((study, key, rows.sort_values("_param")))
    return found


def parameter_sweeps(results: Path | str | Tables) -> Figure | None:
    """Scores vs merge parameters: one panel per one-parameter sweep (a line per score column), per
    parameter of a multi-parameter sweep (a line per value of the other parameters), and per
    searched parameter of a search (the tune objective of every candidate, by method); None when
    nothing varies."""
    plt = _pyplot()
    tables = _tables(results)
    found = sweeps(tables)
    views = parameter_views(tables)
    searched = search_views(tables)
    n = len(found) + len(views) + len(searched)
    if not n:
        return None
    tasks = harness_tasks(tables)
    comp_cols = [c for c in tables.summary.columns if str(c).startswith(HOLMES_PREFIX)]
    columns = list(tasks["column"]) + comp_cols
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(6 * cols, 4 * math.ceil(n / cols)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    flat = list(axes.flat)
    for ax, (method, key, part) in zip(flat, found, strict=False):
        for i, column in enumerate(columns):
            ys = part[column].astype(float)
            if ys.isna().all():
                continue
            ax.plot(part["_param"], ys, marker="o", color=cmap(i % 10), label=column,
                    ls="--" if column.startswith(HOLMES_PREFIX) else "-")
        ax.set_xlabel(key)
        ax.set_ylabel("score")
        ax.set_title(f"{method}: scores vs {key}")
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    markers = "osD^vP*X"
    for ax, (method, key, part, others) in zip(flat[len(found):], views, strict=False):
        groups = list(dict.fromkeys(part["_group"]))
        for i, column in enumerate(columns):
            if part[column].astype(float).isna().all():
                continue
            for g, group in enumerate(groups):
                rows = part[part["_group"] == group]
                ax.plot(rows["_param"], rows[column].astype(float), marker=markers[g % len(markers)],
                        color=cmap(i % 10), ls="-" if g == 0 else (0, (4, 1 + g)),
                        label=f"{column} ({group})")
        ax.set_xlabel(key)
        ax.set_ylabel("score")
        ax.set_title(f"{method}: scores vs {key} (lines: {', '.join(others)})", fontsize=10)
        ax.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax, (study, key, part) in zip(flat[len(found) + len(views):], searched, strict=False):
        for i, (method, rows) in enumerate(part.groupby(part["method"].astype(str))):
            ax.scatter(rows["_param"], rows["objective"].astype(float), color=cmap(i % 10), label=method, s=22)
        ax.set_xlabel(key)
        ax.set_ylabel("tune objective")
        ax.set_title(f"search {study}: objective vs {key}", fontsize=10)
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def search_trajectory(results: Path | str | Tables) -> Figure | None:
    """Per search study: the tune objective of each candidate in trial order with the best so far,
    the defaults' tune objective for reference; and the tune vs report scores of the best candidate,
    the defaults and the experts side by side. None when no search was run."""
    from mergepipe.results.search_table import read_summary

    plt = _pyplot()
    tables = _tables(results)
    trials = _trials(tables)
    if trials.empty:
        return None
    summary = read_summary(tables.out_dir) if tables.out_dir is not None else None
    studies = list(dict.fromkeys(trials["study"].astype(str)))
    fig, axes = plt.subplots(len(studies), 2, figsize=(13, 4 * len(studies)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for (ax, bars), study in zip(axes, studies, strict=True):
        part = trials[trials["study"].astype(str) == study].sort_values("trial")
        done = part[part["state"] == "complete"]
        methods = list(dict.fromkeys(done["method"].astype(str)))
        for i, method in enumerate(methods):
            rows = done[done["method"].astype(str) == method]
            ax.scatter(rows["trial"], rows["objective"].astype(float), color=cmap(i % 10), label=method, s=24, zorder=3)
        failed = part[part["state"] != "complete"]
        if not failed.empty:
            low = float(done["objective"].min()) if not done.empty else 0.0
            ax.scatter(failed["trial"], [low] * len(failed), marker="x", color="#d62728", label="failed", zorder=3)
        if not done.empty:
            ax.step(done["trial"], done["objective"].astype(float).cummax(), where="post", color="#333",
                    lw=1.2, label="best so far")
        compared = summary.studies.get(study) if summary else None
        if compared is not None:
            for m in compared.compared:
                if m.role == "default" and m.tune_objective is not None:
                    ax.axhline(m.tune_objective, ls="--", lw=0.9, color="#7f7f7f")
                    ax.text(ax.get_xlim()[0], m.tune_objective, f" {m.label}", fontsize=7, va="bottom",
                            color="#555")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel("tune objective")
        ax.set_title(f"search {study}: trajectory", fontsize=10)
        ax.legend(fontsize=7, frameon=False, loc="lower right")
        if compared is None:
            bars.axis("off")
            continue
        labels = [m.label for m in compared.compared]
        x = range(len(labels))
        tune = [math.nan if m.tune_objective is None else m.tune_objective for m in compared.compared]
        report = [math.nan if m.report_mean is None else m.report_mean for m in compared.compared]
        bars.bar([i - 0.2 for i in x], tune, width=0.4, label="tune objective (searched on)", color="#9ecae1")
        bars.bar([i + 0.2 for i in x], report, width=0.4, label="report mean (held out)", color="#3182bd")
        bars.set_xticks(list(x), [f"{m.label}\n({m.role})" for m in compared.compared], fontsize=7,
                        rotation=20, ha="right")
        bars.set_ylabel("score")
        bars.set_title("tune vs report: best, defaults, experts", fontsize=10)
        bars.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


# -- all of them ------------------------------------------------------------------------------

def save(fig: Figure, plots_dir: Path, name: str, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    from mergepipe.core.atomic import temp_sibling

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = plots_dir / f"{name}.{fmt}"
        tmp = temp_sibling(path)
        meta = {"Date": None} if fmt == "svg" else {}
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=meta)
        tmp.replace(path)
        written.append(path)
    return written


PLOT_FUNCTIONS = {
    "task_performance": task_performance,
    "holmes_competences": holmes_competences,
    "holmes_datasets": holmes_datasets,
    "correlation_holmes_harness": correlation,
    "merge_outcomes": merge_outcomes,
    "parameter_sweeps": parameter_sweeps,
    "search_trajectory": search_trajectory,
}


def make_plots(results_dir: Path | str | Tables, plots_dir: Path | str | None = None,
               formats: tuple[str, ...] = FORMATS, only: list[str] | None = None) -> list[Path]:
    """Draw every figure from ``results_dir`` (organized_results) into ``plots_dir``
    (default ``<results_dir>/plots``). Returns the files written."""
    plt = _pyplot()
    tables = _tables(results_dir)
    base = tables.out_dir if isinstance(results_dir, Tables) else Path(results_dir)
    if plots_dir is None and base is None:
        raise ValueError("plots_dir is needed when the tables were not read from a folder")
    target = Path(plots_dir) if plots_dir else Path(base) / PLOTS_DIR
    written: list[Path] = []
    for name, func in PLOT_FUNCTIONS.items():
        if only and name not in only:
            continue
        fig = func(tables)
        if fig is None:
            continue
        written += save(fig, target, name, formats)
        plt.close(fig)
    return written
