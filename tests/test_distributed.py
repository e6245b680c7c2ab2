"""Runs on a real local Ray cluster (two nodes on 127.0.0.1 with fake GPUs) and runs that share
one output folder: same tables as a local run, one GPU per job, jobs on both nodes, merges as
cluster tasks, a killed job failing alone, a worker with another view of the outputs refused
before any job, and the run and results locks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers.demo import reduced_demo_config, start_script
from tests.helpers.lm_eval_tasks import write_tasks
from tests.helpers.paths import REPO
from tests.helpers.ray_cluster import LocalCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Two nodes, 2 CPUs and 2 fake GPUs each, on 127.0.0.1; stopped at the end."""
    cluster = LocalCluster(tmp_path_factory.mktemp("ray"))
    try:
        cluster.start_head()
        cluster.add_node()
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.stop()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", **extra}


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _job_processes() -> dict[int, str]:
    """pid -> log file of every running 'mergepipe job' process (its stdout is its log)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if b"mergepipe" in cmd and b"job" in cmd:
                found[int(proc.name)] = os.readlink(proc / "fd" / "1")
        except OSError:
            continue
    return found


def test_demo_on_the_cluster_matches_the_local_run(demo_run, ray_cluster, tmp_path: Path) -> None:
    local_work, code, _ = demo_run
    assert code == 0
    # Two of the local demo's merges, under the same names (a results id keeps the folder name).
    methods = ["linear", {"name": "ties", "parameters": {"density": 0.3}, "label": "ties-density0.3"}]
    work = tmp_path / "ray_demo"
    work.mkdir()
    path = reduced_demo_config(work, methods)
    config = yaml.safe_load(path.read_text())
    config["merge"]["executor"] = config["evaluate"]["executor"] = "ray"
    config["cluster"] = {"address": ray_cluster.address}
    path.write_text(yaml.safe_dump(config))

    dry = _run([str(REPO / "script.sh"), "--config", "pipeline.yaml", "--dry-run"], work)
    assert dry.returncode == 0, dry.stderr
    assert f"Ray cluster {ray_cluster.address}: 2 node(s), 4 CPUs, 4 GPUs" in dry.stdout
    assert "on 4 slot(s) (ray-gpu0, ray-gpu1, ray-gpu2, ray-gpu3)" in dry.stdout

    proc = _run([str(REPO / "script.sh"), "--config", "pipeline.yaml"], work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = proc.stdout
    # Merges ran as cluster tasks.
    assert out.count("submitted to the cluster") == 2
    merged_on = set(re.findall(r": done in [\d.]+s on (127\.0\.0\.1:[0-9a-f]{8})", out))
    assert merged_on and all(n.startswith("127.0.0.1:") for n in merged_on)
    # Same scores as the local executor, for every model both runs evaluated.
    ours = pd.read_csv(work / "organized_results" / "summary.csv").set_index("model_id")
    local = pd.read_csv(local_work / "organized_results" / "summary.csv").set_index("model_id")
    assert len(ours) == 5 and set(ours.index) <= set(local.index)
    values = [c for c in ours.columns if c not in ("role", "merge_method", "merge_parameters", "run")]
    pd.testing.assert_frame_equal(ours[values], local.loc[ours.index, values])
    # Every job saw exactly one GPU id, and the jobs ran on both nodes.
    state = json.loads((work / "logs" / "e2e" / "evaluate" / "jobs.json").read_text())["jobs"]
    assert len(state) == 10 and {j["status"] for j in state.values()} == {"done"}
    assert len({j["node"] for j in state.values()}) == 2
    for job in state.values():
        header = Path(job["log"]).read_text().splitlines()[0]
        gpus = re.search(r"CUDA_VISIBLE_DEVICES=(\S*)", header).group(1)
        assert gpus in ("0", "1"), header
    for results in (work / "harness_results").glob("*/zoo/results_*.json"):
        assert json.loads(results.read_text())["mergepipe"]["cuda_visible_devices"] in ("0", "1")


@pytest.fixture
def tiny_project(tmp_path: Path, tiny_models) -> Path:
    """A tiny base and two experts on two small lm-eval tasks (6 evaluation jobs), one merge."""
    tasks = write_tasks(tmp_path / "tasks")
    config = {
        "run": "t", "base_model": str(tiny_models.base), "models": [*map(str, tiny_models.experts[:2])],
        "dtype": "float32", "merge": {"methods": ["linear"]},
        "evaluate": {"suites": {"mc": ["tiny_mc"], "gen": ["tiny_gen"]}, "include_paths": [str(tasks)],
                     "limit": 8, "device": "cpu", "jobs": 2},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_a_killed_job_fails_alone_and_a_rerun_completes_only_it(ray_cluster, tiny_project: Path) -> None:
    args = [str(REPO / "evaluation_only.sh"), "--config", "pipeline.yaml", "--executor", "ray",
            "--ray-address", ray_cluster.address]
    proc = subprocess.Popen(args, cwd=tiny_project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    victim, deadline = None, time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        running = {pid: log for pid, log in _job_processes().items() if str(tiny_project) in log}
        for pid, log in running.items():
            if "__gen" in log and "started" in Path(log).read_text():
                os.kill(pid, signal.SIGKILL)  # the job's own process dies mid-run
                victim = Path(log)
                break
        time.sleep(0.2)
    out = proc.communicate(timeout=600)[0]
    assert victim is not None, out[-3000:]
    assert proc.returncode == 1, out[-3000:]
    state = json.loads((tiny_project / "logs" / "t" / "evaluate" / "jobs.json").read_text())["jobs"]
    statuses = {key: job["status"] for key, job in state.items()}
    killed = victim.stem
    assert statuses.pop(killed) == "failed" and set(statuses.values()) == {"done"}, statuses
    assert "killed by signal 9" in state[killed]["reason"]
    rerun = _run([*args, "--retry-failed"], tiny_project)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    state = json.loads((tiny_project / "logs" / "t" / "evaluate" / "jobs.json").read_text())["jobs"]
    assert state[killed]["status"] == "done"
    assert "1 done, 0 failed, 5 skipped (already finished)" in rerun.stdout


def test_a_worker_that_sees_other_outputs_is_refused_before_any_job(tiny_project: Path, tmp_path_factory) -> None:
    cluster = LocalCluster(tmp_path_factory.mktemp("ray_unshared"))
    try:
        cluster.start_head(num_gpus=0)
        # This node sees an empty folder where the project is: storage that is not shared.
        cluster.add_node(num_gpus=0, hide=tiny_project, name="unshared")
        cluster.wait_for_nodes(2)
        result = _run([str(REPO / "evaluation_only.sh"), "--config", "pipeline.yaml", "--executor", "ray",
                       "--ray-address", cluster.address], tiny_project, timeout=300)
    finally:
        cluster.stop()
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stdout[-2000:] + result.stderr
    assert re.match(rf"error: {re.escape(str(tiny_project))}/\S+ is not shared with node 127\.0\.0\.1:[0-9a-f]{{8}}",
                    err[0]), err[0]
    assert not list((tiny_project / "logs" / "t" / "evaluate").glob("*.log"))  # no job started
    assert not list(tiny_project.glob("harness_results/**/results_*.json"))


def test_a_second_start_of_the_same_run_exits_at_once_naming_the_holder(tiny_project: Path) -> None:
    first = start_script(tiny_project, "--config", "pipeline.yaml")
    lock = tiny_project / "logs" / "t" / ".run.lock"
    deadline = time.monotonic() + 120
    while not lock.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    start = time.monotonic()
    second = _run([str(REPO / "script.sh"), "--config", "pipeline.yaml"], tiny_project, timeout=120)
    assert time.monotonic() - start < 30
    assert second.returncode == 2
    assert re.fullmatch(rf"error: run 't' is in use by mergepipe run \(host \S+, pid {first.pid}, since \S+\); "
                        rf"lock file {re.escape(str(lock))}", second.stderr.strip()), second.stderr
    # Interrupting the holder releases the lock (it does not wait for a stale-lock timeout).
    os.killpg(first.pid, signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode != 0 and not lock.exists()


def test_two_runs_evaluating_one_model_write_its_results_once(tiny_project: Path, tiny_models) -> None:
    base = yaml.safe_load((tiny_project / "pipeline.yaml").read_text())
    for run in ("a", "b"):  # two runs, sharing the results folders and one model
        config = {**base, "run": run, "models": [str(tiny_models.base)],
                  "outputs": {"harness_results": str(tiny_project / "shared_results")}}
        (tiny_project / f"{run}.yaml").write_text(yaml.safe_dump(config))
    procs = [subprocess.Popen([str(REPO / "evaluation_only.sh"), "--config", f"{run}.yaml"], cwd=tiny_project,
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run in ("a", "b")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    model_dir = next((tiny_project / "shared_results").iterdir())
    for suite in ("mc", "gen"):
        assert len(list((model_dir / suite).glob("results_*.json"))) == 1, suite
    # The second run waited for (or found) the first's results and reused them.
    text = "\n".join(outs) + "".join(p.read_text() for p in (tiny_project / "logs").rglob("*.log"))
    assert "finished by another run" in text or "already evaluated with these settings" in text


def test_a_merge_of_merges_runs_its_stages_in_order_on_the_cluster(ray_cluster, tmp_path: Path, tiny_models) -> None:
    experts = [str(p) for p in tiny_models.experts[:3]]
    config = {
        "run": "stages", "base_model": str(tiny_models.base), "models": experts, "dtype": "float32",
        "merge": {"executor": "ray", "methods": [
            {"name": "ties", "label": "final", "inputs": ["first", experts[2]]},  # written out of order
            {"name": "slerp", "label": "first", "inputs": experts[:2]},
        ]},
        "cluster": {"address": ray_cluster.address},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    result = _run([str(REPO / "merge_only.sh"), "--config", "pipeline.yaml"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    out = result.stdout
    # The second stage is submitted only once the first is done, both as cluster tasks.
    assert out.index("first: done in") < out.index("final: submitted to the cluster")
    from mergepipe.core.records import MergeRecord

    record = MergeRecord.read(tmp_path / "merged_models" / "stages" / "final")
    assert record is not None and [s["name"] for s in record.stages] == ["first"]
    again = _run([str(REPO / "merge_only.sh"), "--config", "pipeline.yaml"], tmp_path, timeout=600)
    assert again.returncode == 0 and again.stdout.count("up to date, skipped") == 2
