"""Per-job overhead: ``eval-harness.sh`` vs the plain ``lm_eval`` CLI on the same model and tasks.

Both run the same tiny model on the same small local tasks with the same settings, as fresh
processes (what a user or the scheduler pays per job), alternating so that load drift on the
machine hits both alike. Prints the medians of N runs and their ratio (goal <= 0.7) and writes
them to benchmarks/results/eval_overhead.json.

    environments/main/bin/python benchmarks/eval_overhead.py [--repeats 5] [--zoo]

``--zoo`` uses the demo zoo's base model and ``zoo_*`` tasks (built on first use) instead of a
tiny random model and two local tasks.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mergepipe.core.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "environments" / "main" / "bin"
sys.path.insert(0, str(REPO))  # the tests' helpers


def setup(work: Path, use_zoo: bool) -> tuple[str, str, list[str]]:
    """(model path, comma-separated tasks, include paths)."""
    if use_zoo:
        from mergepipe import zoo

        zoo.ensure_built()
        model = str(zoo.resolve_reference("zoo://base"))
        include = str(zoo.task_include_path())
        tasks = sorted(p.stem for p in Path(include).glob("zoo_*.yaml"))[:2]
        return model, ",".join(tasks), [include]
    from tests.helpers.lm_eval_tasks import write_tasks
    from tests.helpers.tiny_models import make_random

    model = make_random(work / "model", seed=0)
    tasks = write_tasks(work / "tasks")
    return str(model), "tiny_mc,tiny_gen", [str(tasks)]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stdout[-2000:] + proc.stderr[-2000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (median reported)")
    parser.add_argument("--limit", type=int, default=10, help="documents per task")
    parser.add_argument("--zoo", action="store_true", help="use the demo zoo's model and tasks")
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="mergepipe-bench-") as tmp:
        work = Path(tmp)
        model, tasks, include = setup(work, args.zoo)
        common = ["--seed", "1", "--limit", str(args.limit)]
        runs: dict[str, list[float]] = {"lm_eval_cli": [], "eval_harness_sh": []}
        for i in range(args.repeats):
            for name in runs:
                out = work / f"out-{name}-{i}"
                if name == "lm_eval_cli":
                    cmd = [str(BIN / "lm_eval"), "run", "--model", "hf", "--model_args", f"pretrained={model}",
                           "--tasks", tasks, "--include_path", include[0], "--output_path", str(out),
                           "--log_samples", "--batch_size", "1", "--device", "cpu", *common]
                else:
                    cmd = [str(REPO / "eval-harness.sh"), model, tasks, "--results-dir", str(out),
                           "--batch-size", "1", "--device", "cpu", *common]
                    for path in include:
                        cmd += ["--include-path", path]
                runs[name].append(timed(cmd, env))
                shutil.rmtree(out, ignore_errors=True)
                print(f"run {i + 1}/{args.repeats} {name}: {runs[name][-1]:.2f} s", flush=True)

    med = {name: statistics.median(values) for name, values in runs.items()}
    ratio = med["eval_harness_sh"] / med["lm_eval_cli"]
    result = {
        "benchmark": "eval_overhead",
        "what": "wall seconds per job (fresh process, model load, tiny tasks, results written), median",
        "model": "zoo://base" if args.zoo else "tiny random Llama (35k params)",
        "tasks": tasks,
        "limit": args.limit,
        "repeats": args.repeats,
        "runs_seconds": runs,
        "median_seconds": med,
        "ratio_eval_harness_to_lm_eval": round(ratio, 3),
        "goal": "<= 0.7",
        "meets_goal": ratio <= 0.7,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = REPO / "benchmarks" / "results" / "eval_overhead.json"
    write_json(out, result)  # atomic: never a half-written result
    print(f"median lm_eval CLI {med['lm_eval_cli']:.2f} s, eval-harness.sh {med['eval_harness_sh']:.2f} s, "
          f"ratio {ratio:.2f} (goal <= 0.7) -> {out}")


if __name__ == "__main__":
    main()
