"""The sweep plot on a density x weight grid, the search trajectory, and the search in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mergepipe.config import MethodSpec
from mergepipe.merge.plan import merge_entries
from mergepipe.results import plots
from mergepipe.results.report import write_report
from mergepipe.results.search_table import (
    ComparedModel,
    StudySummary,
    load_trials,
    read_summary,
    write_summary,
    write_trials,
)
from mergepipe.results.tables import write_tables
from tests.results.test_plots import synthetic

GRID = MethodSpec.model_validate({"name": "ties", "sweep": {"density": [0.3, 0.5, 0.7],
                                                            "weight": {"start": 0.5, "stop": 1.0, "step": 0.5}}})


def grid_tables():
    entries = merge_entries([GRID])
    models = [{"model_id": f"{e.name}-0123abcd", "role": "merged", "method": "ties",
               "params": {"density": e.point["density"], "weight": [e.point["weight"]] * 2},
               "scores": {"a": e.point["density"] * e.point["weight"], "b": 1 - e.point["density"]}}
              for e in entries]
    experts = [{"model_id": f"e{i}", "role": "expert", "scores": {"a": 0.5, "b": 0.5}} for i in range(2)]
    return entries, synthetic(experts + models, {"a": True, "b": True})


def test_grid_sweep_of_six_merges_is_drawn_per_parameter_with_a_line_per_other_value():
    entries, tables = grid_tables()
    assert len(entries) == 6
    assert plots.sweeps(tables) == []  # two parameters vary: not a one-parameter sweep
    views = {(m, k): (rows, others) for m, k, rows, others in plots.parameter_views(tables)}
    assert set(views) == {("ties", "density"), ("ties", "weight")}
    fig = plots.parameter_sweeps(tables)
    by_title = {ax.get_title(): ax for ax in fig.axes}
    density = by_title["ties: scores vs density (lines: weight)"]
    lines = [ln for ln in density.get_lines() if ln.get_label().startswith("a (")]
    assert sorted(ln.get_label() for ln in lines) == ["a (weight=0.5)", "a (weight=1)"]
    for line in lines:
        weight = float(line.get_label().split("=")[1].rstrip(")"))
        assert list(line.get_xdata()) == [0.3, 0.5, 0.7]
        assert [round(y, 6) for y in line.get_ydata()] == [round(d * weight, 6) for d in (0.3, 0.5, 0.7)]
    weight_ax = by_title["ties: scores vs weight (lines: density)"]
    assert len([ln for ln in weight_ax.get_lines() if ln.get_label().startswith("b (")]) == 3
    assert sum(len(ln.get_xdata()) for ln in lines) == 6  # every merge of the grid is shown


def search_results(out: Path) -> Path:
    """A small organized folder with one search study (trials and summary) written by their owner."""
    _, tables = grid_tables()
    write_tables(tables, out)
    rows = [{"trial": i, "state": "complete" if i != 2 else "failed", "method": m,
             "parameters": json.dumps({"density": d, "weight": 1.0}), "name": f"t{i:03d}-{m}",
             "objective": None if i == 2 else o, "tune:a": o}
            for i, (m, d, o) in enumerate([("ties", 0.3, 0.4), ("dare_ties", 0.5, 0.6), ("ties", 0.9, 0.0),
                                           ("ties", 0.7, 0.7), ("dare_ties", 0.2, 0.5)])]
    write_trials(out, "s-search", rows)
    compared = [ComparedModel(label="t003-ties", role="best", tune={"a": 0.7}, tune_objective=0.7,
                              report={"c": 0.55}, report_mean=0.55),
                ComparedModel(label="default-ties", role="default", tune={"a": 0.5}, tune_objective=0.5,
                              report={"c": 0.5}, report_mean=0.5),
                ComparedModel(label="zoo://inc", role="expert", tune={"a": 0.3}, tune_objective=0.3,
                              report={"c": 0.2}, report_mean=0.2)]
    write_summary(out, StudySummary(study="s-search", sampler="tpe", objective="mean of a", tune=["a"],
                                    report=["c"], trials_done=5, trials_failed=1, wall_seconds=1.0,
                                    compared=compared))
    return out


def test_trials_table_keeps_other_studies_and_summary_round_trips(tmp_path):
    out = search_results(tmp_path / "organized")
    write_trials(out, "other", [{"trial": 0, "state": "complete", "method": "ties", "objective": 0.1}])
    write_trials(out, "s-search", [{"trial": 0, "state": "complete", "method": "ties", "objective": 0.9}])
    trials = load_trials(out)
    assert sorted(trials["study"]) == ["other", "s-search"]
    assert read_summary(out).studies["s-search"].compared[0].report_mean == 0.55


def test_search_trajectory_and_parameter_view_and_report_section(tmp_path):
    out = search_results(tmp_path / "organized")
    from mergepipe.results.tables import load_tables

    tables = load_tables(out)
    fig = plots.search_trajectory(tables)
    trajectory, bars = fig.axes[:2]
    best_line = next(ln for ln in trajectory.get_lines() if ln.get_label() == "best so far")
    assert list(best_line.get_ydata()) == [0.4, 0.6, 0.7, 0.7]  # cumulative best over complete trials
    assert [t.get_text().split("\n")[0] for t in bars.get_xticklabels()] == ["t003-ties", "default-ties", "zoo://inc"]
    views = plots.search_views(tables)
    assert [(s, k) for s, k, _ in views] == [("s-search", "density")]  # weight never varied
    assert sorted(views[0][2]["_param"]) == [0.2, 0.3, 0.5, 0.7]  # the failed trial is left out
    html, md = write_report(out)
    text = html.read_text()
    assert "<h2>Search s-search</h2>" in text and "alt='search_trajectory'" in text
    assert "report (mean)" in md.read_text() and "0.550" in md.read_text()


def test_no_search_no_trajectory(tmp_path):
    _, tables = grid_tables()
    write_tables(tables, tmp_path)
    from mergepipe.results.tables import load_tables

    assert plots.search_trajectory(load_tables(tmp_path)) is None
    assert isinstance(load_trials(tmp_path), pd.DataFrame) and load_trials(tmp_path).empty
