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
    assert "job(s) on" in out
    assert not (tmp_path / "merged_models").exists()


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
