"""The scheduler: jobs over slots, logs, failure isolation, --retry-failed, resume, bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mergepipe.config import EvaluateSection, load_config, validate_model
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.jobs import HarnessJobSpec, ProbeJobSpec, read_spec
from mergepipe.evaluate.plan import plan_evaluation
from mergepipe.evaluate.scheduler import Job, Progress, Slot, SpecJob, make_slots, run_jobs
from mergepipe.evaluate.stage import evaluate_config
from tests.helpers.lm_eval_tasks import write_tasks
from tests.helpers.paths import REPO

# -- the queue itself, with small real subprocess jobs -----------------------------------------


class ScriptJob(Job):
    """A job that runs a short Python snippet and writes ``<out>/<name>.done`` when it succeeds."""

    kind = "script"

    def __init__(self, name: str, out: Path, code: str) -> None:
        super().__init__(name, "s", name)
        self.out, self.code = out, code

    def command(self, slot: Slot, log_dir: Path) -> list[str]:
        return [sys.executable, "-c", self.code, str(self.out / f"{self.model_id}.done"), slot.name]

    def is_finished(self) -> bool:
        return (self.out / f"{self.model_id}.done").is_file()


SLEEP_AND_RECORD = (
    "import json, os, sys, time; start = time.time(); time.sleep(0.6); "
    "open(sys.argv[1], 'w').write(json.dumps({'start': start, 'end': time.time(), 'slot': sys.argv[2], "
    "'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), 'omp': os.environ.get('OMP_NUM_THREADS')})); "
    "print('job', sys.argv[2])"
)
CRASH = "import sys; print('about to crash'); raise SystemExit('corrupt weights file')"


def test_jobs_share_two_slots_and_a_crash_does_not_stop_the_others(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    jobs: list[Job] = [ScriptJob(f"m{i}", out, SLEEP_AND_RECORD) for i in range(4)]
    jobs.insert(1, ScriptJob("broken", out, CRASH))
    slots = make_slots("cpu", jobs=2)
    stream = io.StringIO()
    summary = run_jobs(jobs, slots, tmp_path / "logs", progress=Progress(len(jobs), stream, tty=False))

    status = {r.model_id: r.status for r in summary.results}
    assert status == {"m0": "done", "broken": "failed", "m1": "done", "m2": "done", "m3": "done"}
    assert not summary.ok and len(summary.failed) == 1
    assert "corrupt weights file" in summary.failed[0].reason
    # At most two jobs at a time, each on its own slot, CPU slots hide GPUs.
    spans = [json.loads((out / f"m{i}.done").read_text()) for i in range(4)]
    for t in [s["start"] + 0.05 for s in spans]:
        assert sum(s["start"] <= t <= s["end"] for s in spans) <= 2
    assert {s["slot"] for s in spans} == {"cpu0", "cpu1"}
    assert all(s["cuda"] == "" and s["omp"] for s in spans)
    # One log per job holding its own output; progress lines and a summary table.
    for i in range(4):
        assert "job cpu" in (tmp_path / "logs" / f"m{i}__s.log").read_text()
    assert "about to crash" in (tmp_path / "logs" / "broken__s.log").read_text()
    text = stream.getvalue()
    assert "FAILED broken__s" in text and "queued" in text and "running" in text
    table = summary.table()
    assert "broken" in table and "failed" in table and "4 done, 1 failed" in table

    # --retry-failed runs only the failed job; a plain re-run skips everything finished.
    jobs[1] = ScriptJob("broken", out, SLEEP_AND_RECORD)  # "fixed"
    again = run_jobs(jobs, slots, tmp_path / "logs", retry_failed=True,
                     progress=Progress(len(jobs), io.StringIO(), tty=False))
    assert {r.model_id: r.status for r in again.results} == {
        "m0": "skipped", "broken": "done", "m1": "skipped", "m2": "skipped", "m3": "skipped"}
    third = run_jobs(jobs, slots, tmp_path / "logs", progress=Progress(len(jobs), io.StringIO(), tty=False))
    assert {r.status for r in third.results} == {"skipped"} and third.ok


def test_tty_progress_refreshes_one_status_line() -> None:
    stream = io.StringIO()
    progress = Progress(3, stream, tty=True)
    progress.counts.update(queued=2, running=1)
    progress.refresh()
    progress.event("start a on cpu0")
    progress.close()
    text = stream.getvalue()
    assert "\r\033[K" in text and "start a on cpu0\n" in text and "queued 2 running 1" in text


def test_slots_and_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    gpu = make_slots("auto", jobs=1)
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"], s.device) for s in gpu] == [
        ("gpu3", "3", "cuda"), ("gpu5", "5", "cuda")]
    assert [s.name for s in make_slots("auto", gpus=[5])] == ["gpu5"]
    with pytest.raises(MergepipeError, match=r"^GPU 7 does not exist \(visible GPUs: 3, 5\)$"):
        make_slots("auto", gpus=[7])
    assert [s.name for s in make_slots("cpu", jobs=3)] == ["cpu0", "cpu1", "cpu2"]
    with pytest.raises(MergepipeError, match=r"^--jobs must be at least 1, got 0$"):
        make_slots("cpu", jobs=0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert [s.device for s in make_slots("auto", jobs=2)] == ["cpu", "cpu"]
    with pytest.raises(MergepipeError, match="no GPU is visible"):
        make_slots("cuda")


# -- the evaluation stage end to end: real lm-eval jobs on tiny models --------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Path:
    """A pipeline folder: a base and an expert with corrupt weights, two one-task suites (4 jobs)."""
    root = tmp_path_factory.mktemp("project")
    tasks = write_tasks(root / "tasks")
    broken = root / "broken_expert"
    shutil.copytree(tiny_models.experts[1], broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)  # a crash inside the job, not in pre-flight
    config = {
        "run": "t",
        "base_model": str(tiny_models.base),
        "models": [str(broken)],
        "evaluate": {"suites": {"mc": ["tiny_mc"], "gen": ["tiny_gen"]}, "include_paths": [str(tasks)],
                     "limit": 6, "device": "cpu", "jobs": 2},
    }
    (root / "pipeline.yaml").write_text(yaml.safe_dump(config))
    return root


def _config(project: Path, **evaluate):
    """The project's config, with ``evaluate`` settings changed as the command line would change them."""
    config = load_config(project / "pipeline.yaml", root=project)
    if evaluate:
        section = validate_model(EvaluateSection, {**config.evaluate.model_dump(mode="json"), **evaluate},
                                 "flags", "evaluate.")
        config = config.model_copy(update={"evaluate": section})
    return config


def _run(project: Path, **kwargs):
    config = _config(project)
    return evaluate_config(config, raise_on_failure=False,
                           progress=Progress(4, io.StringIO(), tty=False), **kwargs)


def _statuses(summary) -> dict[tuple[str, str], str]:
    return {(r.reference.rsplit("/", 1)[-1], r.suite): r.status for r in summary.results}


@pytest.mark.slow
def test_evaluate_stage_failure_retry_resume(project: Path, tiny_models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    first = _run(project)
    assert _statuses(first) == {
        ("base", "mc"): "done", ("base", "gen"): "done",
        ("broken_expert", "mc"): "failed", ("broken_expert", "gen"): "failed"}
    logs = project / "logs" / "t" / "evaluate"
    for r in first.results:
        log = Path(r.log)
        assert log.parent == logs and log.name == f"{r.model_id}__{r.suite}.log" and log.is_file()
        assert r.model_id in log.read_text()
        assert r.slot in ("cpu0", "cpu1")
    results = project / "harness_results"
    done = [r for r in first.results if r.status == "done"]
    for r in done:
        assert len(list((results / r.model_id / r.suite).glob("results_*.json"))) == 1
        info = json.loads((results / r.model_id / "model_info.json").read_text())
        assert info["role"] == ("base" if "base" in r.reference else "expert")
    failed = [r for r in first.results if r.status == "failed"]
    assert all(not (results / r.model_id / r.suite).exists() or
               not list((results / r.model_id / r.suite).glob("results_*.json")) for r in failed)

    # Repair the weights; --retry-failed re-runs exactly the two failed jobs.
    shutil.copy(tiny_models.experts[1] / "model.safetensors", project / "broken_expert" / "model.safetensors")
    retry = _run(project, retry_failed=True)
    assert {k: v for k, v in _statuses(retry).items() if v != "skipped"} == {
        ("broken_expert", "mc"): "done", ("broken_expert", "gen"): "done"}

    # A second plain run skips every finished job.
    again = _run(project)
    assert set(_statuses(again).values()) == {"skipped"} and again.ok

    # A changed setting (limit) is a different job: nothing is reused for it.
    plan = plan_evaluation(_config(project, limit=3), suites=["mc"])
    assert len(plan.jobs) == 2 and not any(j.is_finished() for j in plan.jobs)


@pytest.mark.slow
def test_job_killed_midway_is_rerun_not_skipped(project: Path, tiny_models) -> None:
    """Stop evaluation_only.sh while its job is evaluating: nothing looks finished, the next run redoes it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [str(REPO / "evaluation_only.sh"), "--config", str(project / "pipeline.yaml"), "--models",
            str(tiny_models.experts[2]), "--suites", "gen", "--limit", "12", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    plan = plan_evaluation(_config(project, limit=12), models=[str(tiny_models.experts[2])], suites=["gen"])
    (job,) = plan.jobs
    assert isinstance(job.spec, HarnessJobSpec)
    log = plan.log_dir / f"{job.key}.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and "evaluating " in log.read_text()):
        time.sleep(0.2)
    assert "evaluating " in log.read_text()
    os.killpg(proc.pid, signal.SIGTERM)  # like a Ctrl-C / a cluster pre-emption of the whole run
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, output
    assert not job.is_finished()
    model_dir = job.spec.results_dir / job.model_id
    assert not list(model_dir.glob("*/results_*.json"))

    rerun = evaluate_config(_config(project, limit=12), models=[str(tiny_models.experts[2])],
                            suites=["gen"], raise_on_failure=False, progress=Progress(1, io.StringIO(), tty=False))
    assert [r.status for r in rerun.results] == ["done"]
    assert job.is_finished()
    assert not [p for p in model_dir.iterdir() if ".tmp-" in p.name]  # leftovers cleaned up


def test_bad_input_fails_before_any_job(project: Path, tmp_path: Path) -> None:
    config = _config(project)
    with pytest.raises(MergepipeError, match=r"unknown lm-eval task 'tiny_gne' \(did you mean tiny_gen"):
        plan_evaluation(_config(project, suites={"x": ["tiny_gne"]}))
    with pytest.raises(MergepipeError, match="model path not found: /nope"):
        plan_evaluation(config, models=["/nope"])
    with pytest.raises(MergepipeError, match=r"evaluate\.jobs: Input should be greater than or equal to 1"):
        _config(project, jobs=0)
    with pytest.raises(MergepipeError, match="unknown suite 'mcq'"):
        plan_evaluation(config, suites=["mcq"])
    with pytest.raises(MergepipeError, match=r"unknown key 'evaluate.batchsize' \(did you mean 'evaluate.batch_size'"):
        _config(project, batchsize=2)
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad_out = config.model_copy(update={"outputs": config.outputs.model_copy(
        update={"harness_results": blocker / "results"})})
    with pytest.raises(MergepipeError, match=r"results dir: .* is not writable"):
        plan_evaluation(bad_out)


def test_evaluate_cli_exit_codes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mergepipe.cli import main

    assert main(["evaluate", "--config", str(project / "pipeline.yaml"), "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --jobs: Input should be greater than or equal to 1"
    assert main(["evaluate", "--config", str(project / "missing.yaml")]) == 2


def test_jobs_are_specs_run_by_the_real_cli(project: Path, tiny_models, tmp_path: Path) -> None:
    """Each job is a validated spec written beside its log; its command is 'mergepipe job SPEC'."""
    from mergepipe.cli import build_parser

    config = _config(project, batch_size=4, num_fewshot=2, apply_chat_template=True, do_holmes=True)
    config = config.model_copy(update={"holmes": config.holmes.model_copy(update={"seeds": 2, "data_dir": tmp_path})})
    plan = plan_evaluation(config, models=[str(tiny_models.base)], suites=["mc", "holmes"])
    kinds = {j.kind: j for j in plan.jobs}
    assert set(kinds) == {"harness", "holmes"} and all(isinstance(j, SpecJob) for j in plan.jobs)
    slot = Slot("gpu1", {"CUDA_VISIBLE_DEVICES": "1"}, "cuda")
    parser = build_parser()
    logs = tmp_path / "logs"
    logs.mkdir()
    command = kinds["harness"].command(slot, logs)
    args = parser.parse_args(command[3:])
    assert args.command == "job" and Path(args.spec) == logs / f"{kinds['harness'].key}.job.json"
    harness = read_spec(Path(args.spec))
    assert isinstance(harness, HarnessJobSpec) and harness == kinds["harness"].spec_for(slot)
    s = harness.settings
    assert (harness.suite, harness.device, s.batch_size, s.num_fewshot, s.apply_chat_template, s.limit) == (
        "mc", "cuda", 4, 2, True, 6.0)
    assert s.seed == config.seed  # unset in the section: the pipeline seed
    probe = read_spec(Path(parser.parse_args(kinds["holmes"].command(slot, logs)[3:]).spec))
    assert isinstance(probe, ProbeJobSpec) and probe.suite == "holmes"
    assert (probe.holmes.seeds, probe.data_dir, probe.results_dir, probe.model.role) == (
        2, tmp_path, config.outputs.holmes_results, "base")
    assert not kinds["holmes"].is_finished()
    bad = logs / "bad.job.json"
    bad.write_text(json.dumps({**json.loads(Path(args.spec).read_text()), "tasks": "tiny_mc"}))
    with pytest.raises(MergepipeError, match=r"bad\.job\.json: harness\.tasks: Input should be a valid (list|array)"):
        read_spec(bad)


def test_a_command_that_cannot_start_fails_only_its_job(tmp_path: Path) -> None:
    class MissingBinary(ScriptJob):
        def command(self, slot: Slot, log_dir: Path) -> list[str]:
            return [str(tmp_path / "no-such-binary")]

    jobs: list[Job] = [MissingBinary("gone", tmp_path, ""), ScriptJob("ok", tmp_path, SLEEP_AND_RECORD)]
    summary = run_jobs(jobs, make_slots("cpu", jobs=1), tmp_path / "logs",
                       progress=Progress(2, io.StringIO(), tty=False))
    assert [(r.model_id, r.status) for r in summary.results] == [("gone", "failed"), ("ok", "done")]
    assert "could not start" in summary.results[0].reason
