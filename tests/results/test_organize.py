"""organize: hand-written lm-eval / Holmes result files -> exactly the expected tidy rows."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mergepipe.errors import MergepipeError
from mergepipe.results.tables import load_tables, organize
from tests.helpers.paths import GOLDEN, REPO


@pytest.fixture()
def golden(tmp_path: Path) -> Path:
    """A copy of the golden results whose modification times contradict their contents."""
    dest = tmp_path / "results"
    shutil.copytree(GOLDEN, dest)
    # File mtimes must not matter: make the file that is older inside the newest on disk.
    older = dest / "harness_results/golden-ties/tiny/results_2026-01-03T09-00-00.000000.json"
    newer = dest / "harness_results/golden-ties/tiny/results_2026-01-02T09-00-00.000000.json"
    os.utime(newer, (1_000_000_000, 1_000_000_000))
    os.utime(older, (2_000_000_000, 2_000_000_000))
    return dest


def run(root: Path, out: Path | None = None):
    return organize(root / "harness_results", root / "holmes_results", out or root / "organized",
                    mapping_csv=root / "holmes_mapping.csv")


def test_golden_harness_rows(golden: Path) -> None:
    result = run(golden)
    got = pd.read_csv(golden / "organized" / "harness.csv")
    expected = pd.read_csv(GOLDEN / "expected_harness.csv")
    got = got[expected.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    # the two org/name models share lm-eval's model_name but stay apart
    assert {"orgA__llama-tiny", "orgB__llama-tiny"} <= set(got["model_id"])
    superseded = [i for i in result.issues if i.kind == "superseded"]
    assert len(superseded) == 1
    assert "results_2026-01-03T09-00-00" in superseded[0].path
    assert "tiny_copy" in superseded[0].message
    notes = json.loads((golden / "organized" / "organize_notes.json").read_text())
    assert [i["kind"] for i in notes["issues"]] == ["superseded"]


def test_golden_group_score_is_lm_evals_not_recomputed(golden: Path) -> None:
    summary = run(golden).tables.summary.set_index("model_id")
    # orgA: subtasks 0.5 (n=10) and 0.25 (n=30); lm-eval's group value is kept as written.
    assert summary.loc["orgA__llama-tiny", "tiny"] == 0.3125
    assert summary.loc["golden-ties", "tiny"] == 0.4  # not mean(0.7, 0.3) = 0.5
    assert summary.loc["golden-ties", "tiny_copy"] == 0.5  # the newer run


def test_golden_holmes_and_competences(golden: Path) -> None:
    tables = run(golden).tables
    holmes = pd.read_csv(golden / "organized" / "holmes.csv")
    assert len(holmes) == 8  # control rows are folded into their probe row
    row = holmes[(holmes.model_id == "orgA__llama-tiny") & (holmes.probing_dataset == "blimp-drop_argument")
                 & (holmes.seed == 1)].iloc[0]
    assert (row.score, row.control_score, row.competence) == (0.8, 0.5, "syntax")
    assert row.selectivity == pytest.approx(0.3)
    assert row.phenomenon == "argument structure"
    inch = holmes[holmes.probing_dataset == "blimp-inchoative"]
    assert inch["control_score"].isna().all() and inch["selectivity"].isna().all()
    # "determiner noun agreement " has a trailing space upstream: stripped
    assert "determiner noun agreement" in set(holmes["phenomenon"])

    comp = tables.competences.set_index(["model_id", "competence"])
    assert comp.loc[("orgA__llama-tiny", "syntax"), "mean_score"] == pytest.approx(0.55)
    assert comp.loc[("golden-ties", "syntax"), "mean_score"] == pytest.approx(0.6)
    # drop_argument: tie (0.5 each); inchoative: ties wins -> 0.75 vs 0.25
    assert comp.loc[("golden-ties", "syntax"), "rank_score"] == pytest.approx(75)
    assert comp.loc[("orgA__llama-tiny", "syntax"), "rank_score"] == pytest.approx(25)
    assert comp.loc[("orgA__llama-tiny", "morphology"), "rank_score"] == 100
    on_disk = pd.read_csv(golden / "organized" / "holmes_competences.csv")
    assert {"mean_score", "rank_score", "n_datasets"} <= set(on_disk.columns)


def test_summary_missing_metric_is_nan_not_string(golden: Path) -> None:
    run(golden)
    summary = pd.read_csv(golden / "organized" / "summary.csv")
    assert list(summary["model_id"]) == ["orgA__llama-tiny", "orgB__llama-tiny", "orgC__copy-expert",
                                         "golden-ties"]
    # experts have no Holmes results: empty cells, read back as float NaN
    assert summary["holmes:syntax"].dtype == float
    assert math.isnan(summary.set_index("model_id").loc["orgB__llama-tiny", "holmes:syntax"])
    harness = pd.read_csv(golden / "organized" / "harness.csv")
    assert harness["stderr"].dtype == float and harness["value"].dtype == float
    loaded = load_tables(golden / "organized")
    assert loaded.models == list(summary["model_id"])
    assert loaded.tasks[:3] == ["tiny", "tiny_mc_a", "tiny_mc_b"]


def test_truncated_json_is_reported_and_rest_organized(golden: Path) -> None:
    bad = golden / "harness_results/orgC__copy-expert/tiny/results_2026-01-05T00-00-00.000000.json"
    text = (golden / "harness_results/orgA__llama-tiny/tiny/results_2026-01-01T10-00-00.000000.json").read_text()
    bad.write_text(text[: len(text) // 2])
    result = run(golden)
    unreadable = [i for i in result.issues if i.kind == "unreadable"]
    assert len(unreadable) == 1 and str(bad) in unreadable[0].message
    assert "truncated" in unreadable[0].message
    assert len(result.tables.harness) == 24


def test_other_lm_eval_layout_is_named(golden: Path) -> None:
    old = golden / "harness_results/orgA__llama-tiny/old/results_2023-01-01T00-00-00.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"results": {"arc_easy": {"acc": 0.5, "acc_stderr": 0.01}},
                               "versions": {"arc_easy": 0}, "config": {"model": "hf-causal"}}))
    result = run(golden)
    layout = [i for i in result.issues if i.kind == "layout"]
    assert len(layout) == 1 and str(old) in layout[0].message
    assert ">= 0.4" in layout[0].message
    assert "arc_easy" not in set(result.tables.harness["task"])


def test_missing_dirs_fail_with_clear_message(tmp_path: Path) -> None:
    with pytest.raises(MergepipeError, match="no results found"):
        organize(tmp_path / "nope", tmp_path / "nada", tmp_path / "out")
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_only_holmes_present_is_fine(golden: Path) -> None:
    shutil.rmtree(golden / "harness_results")
    result = run(golden)
    assert result.tables.harness.empty and len(result.tables.holmes) == 8
    assert any(i.kind == "empty" and "harness_results" in i.path for i in result.issues)
    assert "holmes:syntax" in result.tables.summary.columns


def test_empty_harness_dir_only_broken_files_fails(tmp_path: Path) -> None:
    broken = tmp_path / "h" / "m" / "s" / "results_x.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{")
    with pytest.raises(MergepipeError, match="1 file\\(s\\) skipped"):
        organize(tmp_path / "h", tmp_path / "nothing", tmp_path / "out")


def test_missing_model_info_gives_unknown_role(golden: Path) -> None:
    (golden / "harness_results/orgC__copy-expert/model_info.json").unlink()
    result = run(golden)
    roles = result.tables.harness.drop_duplicates("model_id").set_index("model_id")["role"]
    assert roles["orgC__copy-expert"] == "unknown"
    assert any(i.kind == "no-model-info" for i in result.issues)


def test_cli_and_legacy_entry_point(golden: Path, capsys: pytest.CaptureFixture) -> None:
    import subprocess
    import sys

    from mergepipe.cli import main

    bad = golden / "harness_results/orgA__llama-tiny/tiny/results_2026-02-01T00-00-00.json"
    bad.write_text('{"results": {"x": ')
    code = main(["organize", "--harness-dir", str(golden / "harness_results"), "--holmes-dir",
                 str(golden / "holmes_results"), "--mapping-csv", str(golden / "holmes_mapping.csv"),
                 "--out", str(golden / "cli_out")])
    captured = capsys.readouterr()
    assert code == 0
    assert "4 models" in captured.out and "1 older result(s) superseded" in captured.out
    assert f"warning: {bad}: truncated or invalid JSON" in captured.err
    assert main(["organize", "--harness-dir", str(golden / "none"), "--holmes-dir",
                 str(golden / "none2"), "--out", str(golden / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err

    script = REPO / "Plotting" / "organize_harness.py"
    proc = subprocess.run([sys.executable, str(script), "--harness-dir", str(golden / "harness_results"),
                           "--holmes-dir", str(golden / "holmes_results"), "--out", str(golden / "legacy")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (golden / "legacy" / "summary.csv").is_file()


def test_config_file_names_the_folders(golden: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mergepipe.cli import main

    config = golden / "pipeline.yaml"
    config.write_text("run: golden\noutputs:\n  harness_results: harness_results\n"
                      "  holmes_results: holmes_results\n  organized_results: tables\n"
                      "holmes:\n  mapping_csv: holmes_mapping.csv\n")
    monkeypatch.chdir(golden)  # relative outputs resolve from the current directory
    assert main(["organize", "--config", str(config)]) == 0
    comp = pd.read_csv(golden / "tables" / "holmes_competences.csv")
    assert "syntax" in set(comp["competence"])
    assert main(["organize", "--config", str(golden / "missing.yaml")]) == 2


def test_empty_holmes_dir_is_reported(golden: Path) -> None:
    shutil.rmtree(golden / "holmes_results")
    (golden / "holmes_results").mkdir()
    result = run(golden)
    assert any(i.kind == "empty" and "has no Holmes results_*.csv" in i.message for i in result.issues)
    assert len(result.tables.harness) == 24


def test_in_progress_writes_are_ignored(golden: Path) -> None:
    src = golden / "harness_results/orgA__llama-tiny/tiny/results_2026-01-01T10-00-00.000000.json"
    staging = golden / "harness_results/orgA__llama-tiny/.tiny.tmp-123/x"
    staging.mkdir(parents=True)
    data = json.loads(src.read_text())
    data["date"] += 10_000  # newer: would win if it were read
    data["results"]["tiny_copy"]["exact_match,strip"] = 1.0
    (staging / "results_2026-01-09T00-00-00.json").write_text(json.dumps(data))
    summary = run(golden).tables.summary.set_index("model_id")
    assert summary.loc["orgA__llama-tiny", "tiny_copy"] == 0.0
