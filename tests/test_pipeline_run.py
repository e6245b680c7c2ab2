"""``script.sh`` / ``mergepipe run`` end to end on zoo models, plus dry runs of the examples."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import yaml

from mergepipe.cli import main
from tests.helpers.demo import reduced_demo_config, start_script
from tests.helpers.paths import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_validate_and_dry_run(example, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", str(example), "--dry-run"]) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(example.read_text())
    for spec in data["merge"]["methods"]:
        assert (spec if isinstance(spec, str) else spec["name"]) in out
    assert "not available locally" in out  # real Hub models: listed, not fetched here
    evaluates = data.get("evaluate", {}).get("do_harness", True) or data.get("evaluate", {}).get("do_holmes")
    assert ("job(s) on" in out) if evaluates else ("evaluate: off" in out)
    assert "missing on this machine:" in out
    assert not (tmp_path / "merged_models").exists()


def test_dry_run_of_the_llama_pair_lists_what_is_missing_here(tmp_path, capsys, monkeypatch):
    """Models, tinyBenchmarks datasets and the tinyBenchmarks package: listed, not passed over."""
    from mergepipe.evaluate.harness import tinybench

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tinybench, "package_installed", lambda: False)
    assert main(["run", "--config", str(REPO / "examples" / "llama3-8b-instruct-pair.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    missing = out.split("missing on this machine:")[1]
    assert "model meta-llama/Meta-Llama-3-8B-Instruct: not downloaded yet" in missing
    assert "model MaziyarPanahi/Llama-3-8B-Instruct-v0.8: not downloaded yet" in missing
    for repo in ("tinyAI2_arc", "tinyGSM8k", "tinyMMLU", "tinyWinogrande", "tinyHellaswag", "tinyTruthfulQA"):
        assert f"tinyBenchmarks/{repo}" in missing
    assert f"mergepipe datasets fetch tinyBenchmarks --to {tmp_path / 'datasets'}" in missing
    assert "package tinyBenchmarks: the tinyBenchmarks package is not installed" in missing
    assert "./setup.sh --tinybenchmarks" in missing and "tinyBenchmarks_mean" in missing


def test_dry_run_of_the_lora_edition_plans_predictions(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = REPO / "examples" / "mistral-7b-lora-competition.yaml"
    assert main(["run", "--config", str(example), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"predict: answers of the merged model(s) to {tmp_path / 'data' / 'test.csv'}" in out
    assert f"predict: queries file not found: {tmp_path / 'data' / 'test.csv'}" in out.split("missing on this")[1]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.csv").write_text("id,input,eval_type,answer_choices\n0,Hi,generation,\n")
    assert main(["run", "--config", str(example), "--dry-run"]) == 0
    assert "queries file" not in capsys.readouterr().out


@pytest.mark.slow
def test_script_runs_builtin_tasks_from_the_mirror_and_predicts(zoo, tmp_path, monkeypatch):
    """The competition's flow on zoo models, offline: merge -> built-in tasks (BoolQ, tinyBenchmarks,
    GSM8K) read from a local dataset mirror -> predictions file -> organize, report, budget table."""
    from tests.evaluate.test_predict import write_queries
    from tests.helpers.hub_datasets import write_all

    write_all(tmp_path / "datasets", n=3)
    write_queries(tmp_path / "test.csv", 6)
    config = {
        "run": "competition",
        "base_model": "zoo://base",
        "models": ["zoo://inc", "zoo://next"],
        "dtype": "float32",
        "merge": {"methods": ["task_arithmetic"]},
        "evaluate": {"roles": ["merged"], "suites": {"builtin": ["boolq", "tinyBenchmarks", "gsm8k"]},
                     "limit": 3, "num_fewshot": 0, "max_gen_toks": 8, "batch_size": 8},
        "predict": {"queries": "test.csv", "max_new_tokens": 6},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    proc = start_script(tmp_path, "--config", "pipeline.yaml")
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-4000:]
    summary = json.loads((tmp_path / "organized_results" / "run_summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["zoo", "validate", "merge", "evaluate", "predict",
                                                      "organize", "report"]
    assert all(s["status"] == "ok" for s in summary["stages"]), summary["stages"]
    budget = out.split("peak GPU")[-1]  # the budget table printed at the end
    assert all(f"\n{stage} " in budget for stage in ("merge", "evaluate", "predict")) and "\ntotal " in budget
    # Results of the merged model, read from the mirror, the tinyBenchmarks scores labelled as means.
    files = list((tmp_path / "harness_results").glob("task_arithmetic-*/builtin/results_*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())["mergepipe"]
    assert record["tasks"] == ["boolq", "tinyBenchmarks_mean", "gsm8k"]
    assert {v["source"] for v in record["datasets"].values()} == {"mirror"}
    import pandas as pd

    harness = pd.read_csv(tmp_path / "organized_results" / "harness.csv")
    assert {"boolq", "gsm8k", "tinyArc_mean", "tinyTruthfulQA_mean"} <= set(harness["task"])
    assert harness.loc[harness["task"] == "tinyMMLU_mean", "aggregation"].str.startswith("mean of items").all()
    assert "mean of items (not IRT)" in (tmp_path / "organized_results" / "report.md").read_text()
    # The starter kit's output file for the merged model.
    predictions = tmp_path / "output" / "competition" / "task_arithmetic" / "test.csv"
    from tests.evaluate.test_predict import _rows

    rows = _rows(predictions)
    assert list(rows[0]) == ["id", "prediction", "dummy_field"] and [r["id"] for r in rows] == list("012345")

    # Without the mirror, finished evaluations still plan (nothing to load); unfinished ones would not.
    from mergepipe.config import load_config
    from mergepipe.errors import MergepipeError
    from mergepipe.evaluate.plan import plan_evaluation

    (tmp_path / "datasets").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path / "pipeline.yaml")
    plan = plan_evaluation(config)
    assert len(plan.jobs) == 1 and plan.jobs[0].spec.is_finished()
    with pytest.raises(MergepipeError, match="mergepipe datasets fetch boolq tinyBenchmarks gsm8k"):
        plan_evaluation(config, section=config.evaluate.model_copy(update={"limit": 2}))


def test_dry_run_with_an_invalid_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump({"models": ["zoo://next"], "merge": {"methods": ["slerp"]}}))
    assert main(["run", "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: merge.methods[0]: slerp needs 2 expert model(s), got 1"]


def test_script_runs_the_pipeline_end_to_end(demo_run):
    work, code, out = demo_run
    assert code == 0, out[-3000:]
    summary = json.loads((work / "organized_results" / "run_summary.json").read_text())
    # The zoo (a plugin the config uses) is prepared as a stage of its own, before validation.
    assert [s["name"] for s in summary["stages"]] == ["zoo", "validate", "merge", "evaluate", "organize", "report"]
    assert all(s["status"] == "ok" for s in summary["stages"]), summary["stages"]
    assert summary["failures"] == []
    assert sorted(p.name for p in (work / "merged_models" / "e2e").iterdir()) == [
        "linear", "task_arithmetic", "ties-density0.3", "ties-density0.7"]
    # 7 models (base, 2 experts, 4 merges), each with harness and Holmes results
    harness = [p for p in (work / "harness_results").iterdir() if p.is_dir()]
    holmes = [p for p in (work / "holmes_results").iterdir() if p.is_dir()]
    assert len(harness) == 7 and len(holmes) == 7
    assert all(list(p.glob("*/results_*.json")) for p in harness)
    assert (work / "organized_results" / "report.html").is_file()
    assert "report:" in out and "peak RSS" in out and "total" in out


def test_immediate_rerun_skips_everything(demo_run, repo_root):
    work, code, _ = demo_run
    assert code == 0
    records = {p: p.read_text() for p in (work / "merged_models" / "e2e").glob("*/mergepipe_merge.json")}
    proc = start_script(work, "--config", "pipeline.yaml")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert out.count("up to date, skipped") == 4
    assert {p: p.read_text() for p in records} == records
    summary = json.loads((work / "organized_results" / "run_summary.json").read_text())
    evaluate = next(s for s in summary["stages"] if s["name"] == "evaluate")
    assert evaluate["failed_jobs"] == 0


def test_killed_during_evaluation_resumes_without_redoing_merges(zoo, repo_root, tmp_path):
    reduced_demo_config(tmp_path, ["linear", "task_arithmetic"])
    proc = start_script(tmp_path, "--config", "pipeline.yaml")
    logs = tmp_path / "logs"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if logs.is_dir() and any(logs.rglob("*.log")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before evaluation started"
    time.sleep(2)  # let a job get under way
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    records = {p: p.read_text() for p in (tmp_path / "merged_models" / "e2e").glob("*/mergepipe_merge.json")}
    assert len(records) == 2
    rerun = start_script(tmp_path, "--config", "pipeline.yaml")
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out[-3000:]
    assert out.count("up to date, skipped") == 2
    assert {p: p.read_text() for p in records} == records
    assert (tmp_path / "organized_results" / "report.html").is_file()
