"""Figures from organized tables: files written, experts' band logic, correlation, sweeps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mergepipe.results import plots
from mergepipe.results.tables import Tables, build_summary, organize
from tests.helpers.paths import GOLDEN


@pytest.fixture(scope="module")
def golden_organized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    shutil.copytree(GOLDEN, root, dirs_exist_ok=True)
    organize(root / "harness_results", root / "holmes_results", root / "organized",
             mapping_csv=root / "holmes_mapping.csv")
    return root / "organized"


def synthetic(models: list[dict], tasks: dict[str, bool]) -> Tables:
    """Tables from a hand-made harness table: models = [{model_id, role, method, params, scores}]."""
    rows = []
    for m in models:
        for task, value in m["scores"].items():
            rows.append({"run": "r", "model_id": m["model_id"], "role": m["role"],
                         "merge_method": m.get("method"),
                         "merge_parameters": json.dumps(m["params"]) if m.get("params") else None,
                         "task": task, "group": None, "metric": "acc", "filter": "none",
                         "value": value, "stderr": 0.01, "evaluated_at": "2026-01-01T00:00:00+00:00",
                         "higher_is_better": tasks[task]})
    harness = pd.DataFrame(rows)
    empty = pd.DataFrame(columns=["run", "model_id", "role", "merge_method", "merge_parameters",
                                  "competence", "mean_score"])
    summary, meta = build_summary(harness, empty)
    return Tables(harness, pd.DataFrame(), empty, summary, meta)


def test_make_plots_writes_png_and_svg(golden_organized: Path) -> None:
    written = plots.make_plots(golden_organized)
    names = {p.name for p in written}
    for stem in ("task_performance", "holmes_competences", "holmes_datasets",
                 "correlation_holmes_harness", "merge_outcomes"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    # one merged model only: no parameter sweep to draw
    assert "parameter_sweeps.png" not in names
    for path in written:
        assert path.stat().st_size > 1000
        assert path.parent == golden_organized / "plots"
    assert (golden_organized / "plots" / "task_performance.png").read_bytes()[:4] == b"\x89PNG"


def test_correlation_needs_four_models(golden_organized: Path) -> None:
    tau, n = plots.correlation_table(golden_organized)
    assert list(tau.columns)[:3] == ["tiny", "tiny_mc_a", "tiny_mc_b"]
    assert n == 2  # only two models have both Holmes and harness results
    fig = plots.correlation(golden_organized)
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "n = 2" in texts and "at least 4" in texts
    assert not any(ax.images for ax in fig.axes)  # a note, not a heatmap


def test_kendall_tau_values() -> None:
    models = [{"model_id": f"m{i}", "role": "expert", "scores": {"up": i / 10, "down": 1 - i / 10}}
              for i in range(5)]
    tables = synthetic(models, {"up": True, "down": True})
    tables.summary["holmes:syntax"] = [0.1, 0.2, 0.3, 0.4, 0.5]
    tau, n = plots.correlation_table(tables)
    assert n == 5
    assert tau.loc["syntax", "up"] == pytest.approx(1.0)
    assert tau.loc["syntax", "down"] == pytest.approx(-1.0)
    fig = plots.correlation(tables)
    assert fig.axes[0].images and "n = 5" in fig.axes[0].get_title()


def test_outcomes_better_between_worse_respect_direction() -> None:
    models = [
        {"model_id": "e1", "role": "expert", "scores": {"a": 0.4, "b": 0.4, "c": 0.4, "loss": 2.0}},
        {"model_id": "e2", "role": "expert", "scores": {"a": 0.6, "b": 0.6, "c": 0.6, "loss": 3.0}},
        {"model_id": "m", "role": "merged", "method": "ties", "params": {"density": 0.5},
         "scores": {"a": 0.7, "b": 0.5, "c": 0.3, "loss": 1.5}},
    ]
    tables = synthetic(models, {"a": True, "b": True, "c": True, "loss": False})
    table = plots.outcome_table(tables).set_index("task")
    assert table.loc["a", "outcome"] == "better than both"
    assert table.loc["b", "outcome"] == "between"
    assert table.loc["c", "outcome"] == "worse than both"
    assert table.loc["loss", "outcome"] == "better than both"  # lower is better here
    fig = plots.merge_outcomes(tables)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == plots.OUTCOMES


def test_sweep_detected_only_for_one_varying_numeric_parameter() -> None:
    experts = [{"model_id": f"e{i}", "role": "expert", "scores": {"a": 0.5}} for i in range(2)]
    ties = [{"model_id": f"ties{d}", "role": "merged", "method": "ties",
             "params": {"density": d, "weight": [1.0, 1.0]}, "scores": {"a": d}} for d in (0.8, 0.2, 0.5)]
    dare = [{"model_id": f"dare{i}", "role": "merged", "method": "dare_ties",
             "params": {"density": 0.1 * i, "weight": 0.1 * i}, "scores": {"a": 0.1}} for i in (1, 2)]
    tables = synthetic(experts + ties + dare, {"a": True})
    found = plots.sweeps(tables)
    assert [(m, k) for m, k, _ in found] == [("ties", "density")]
    assert list(found[0][2]["_param"]) == [0.2, 0.5, 0.8]
    fig = plots.parameter_sweeps(tables)
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [0.2, 0.5, 0.8] and list(line.get_ydata()) == [0.2, 0.5, 0.8]


def test_task_performance_draws_expert_band(golden_organized: Path) -> None:
    fig = plots.task_performance(golden_organized)
    copy_ax = next(ax for ax in fig.axes if ax.get_title() == "tiny_copy")
    levels = sorted({round(line.get_ydata()[0], 6) for line in copy_ax.get_lines()
                     if line.get_linestyle() == "--"})
    assert levels == [0.125, 0.75]  # the two experts' scores bound the band
    assert len(copy_ax.patches) >= 4  # one bar per model


def test_empty_holmes_gives_a_note(tmp_path: Path) -> None:
    root = tmp_path / "g"
    shutil.copytree(GOLDEN, root)
    shutil.rmtree(root / "holmes_results")
    result = organize(root / "harness_results", root / "holmes_results", root / "out")
    fig = plots.holmes_competences(result.tables)
    assert "no Holmes results" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
