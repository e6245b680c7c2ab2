"""A real search on the zoo, end to end on CPU: 8 candidates over dare_ties / ties, killed midway and
resumed without repeating finished candidates; the best candidate's held-out score is printed next
to the defaults'."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

TRIALS = 8
SPACE = {"density": {"low": 0.2, "high": 1.0}, "weight": {"low": 0.5, "high": 1.5}}


def zoo_search_config(work: Path, trials: int = TRIALS) -> Path:
    config = {
        "run": "zs", "base_model": "zoo://base", "models": ["zoo://inc", "zoo://next"], "dtype": "float32",
        "merge": {"methods": ["task_arithmetic"]},
        "evaluate": {"limit": 20, "batch_size": 32, "jobs": 2},
        "search": {"methods": [{"name": "dare_ties", "space": SPACE}, {"name": "ties", "space": SPACE}],
                   "tune": ["zoo_inc", "zoo_next"], "report": ["zoo_inc_mc", "zoo_next_mc"],
                   "trials": trials, "seed": 3},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(work: Path) -> subprocess.Popen:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "mergepipe", "search", "--config", "pipeline.yaml"], cwd=work,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def complete_trials(work: Path) -> pd.DataFrame:
    path = work / "organized_results" / "search_trials.csv"
    if not path.is_file():
        return pd.DataFrame(columns=["trial", "state"])
    trials = pd.read_csv(path)
    return trials[trials["state"] == "complete"]


@pytest.mark.slow
def test_zoo_search_runs_resumes_after_a_kill_and_reports_held_out_scores(tmp_path, zoo):
    work = tmp_path
    zoo_search_config(work)
    first = start(work)
    deadline = time.monotonic() + 900
    while len(complete_trials(work)) < 4:  # two rounds of two candidates
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = complete_trials(work).set_index("trial")
    results_before = {p: p.stat().st_mtime for p in (work / "harness_results").glob("t*/tune/results_*.json")}

    second = start(work)
    out, _ = second.communicate(timeout=1500)
    assert second.returncode == 0, out[-4000:]
    assert f"resuming, {len(before)} of {TRIALS} candidate(s) finished" in out
    after = complete_trials(work).set_index("trial")
    assert len(after) == TRIALS
    # finished candidates were neither proposed nor evaluated again
    for number in before.index:
        assert f"   trial {number} " not in out
        assert after.loc[number, "objective"] == before.loc[number, "objective"]
    for path, mtime in results_before.items():
        assert path.stat().st_mtime == mtime
    assert len(list((work / "harness_results").glob("t*/tune/results_*.json"))) == TRIALS
    assert set(after["method"]) <= {"dare_ties", "ties"}
    # the honest result: report tasks for the best, the defaults and the experts, side by side
    result = next(line for line in out.splitlines() if line.startswith("report tasks (zoo_inc_mc, zoo_next_mc)"))
    assert "best t" in result and "default-dare_ties" in result and "default-ties" in result
    from mergepipe.results.search_table import read_summary

    study = read_summary(work / "organized_results").studies["zs-search"]
    roles = [m.role for m in study.compared]
    assert roles == ["best", "default", "default", "expert", "expert"]
    assert all(set(m.report) == {"zoo_inc_mc", "zoo_next_mc"} for m in study.compared)
    best = study.compared[0]
    assert best.tune_objective == after["objective"].max()
    # keep_models: best -- only the best candidate's weights are left
    kept = [p.name for p in (work / "merged_models" / "zs-search").iterdir() if p.name.startswith("t")]
    assert kept == [best.label]
    html = (work / "organized_results" / "report.html").read_text()
    assert "<h2>Search zs-search</h2>" in html and "alt='search_trajectory'" in html
