"""The Ray executor on a two-node local cluster, against the local executor, on the same jobs.

Sixteen tiny models of the same size, one lm-eval suite each (16 real, equal CPU jobs), run by
the scheduler (1) on a two-node Ray cluster on 127.0.0.1 whose nodes advertise 2 fake GPUs
each (4 slots), and (2) by the local executor on 4 CPU slots, in the same run.

Reported per executor: makespan / ideal, where ideal = (sum of the jobs' own wall times) / 4
(goal for Ray <= 1.15), and the executor's own overhead per job (median): submit -> the job
process starts (its first log stamp) and the job process ends -> the scheduler notices. The
job processes' own run time (interpreter start, lm-eval) is the same on both executors.
Writes benchmarks/results/ray_executor.json.

    environments/main/bin/python benchmarks/ray_executor.py [--jobs 16] [--limit 8]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mergepipe.core.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' helpers
SLOTS = 4
_STAMP = re.compile(r"^=== job \S+ (started|ended) ([\d.]+)$", re.M)


def _measure(summary: Any) -> dict[str, Any]:
    seconds = [r.seconds for r in summary.results if r.seconds is not None]
    starts, ends = [], []
    for r in summary.results:
        stamps = dict(_STAMP.findall(Path(r.log).read_text(encoding="utf-8")))
        starts.append(float(stamps["started"]) - r.submitted_at)
        ends.append(r.noticed_at - float(stamps["ended"]))
    ideal = sum(seconds) / SLOTS
    return {
        "jobs": len(seconds), "ok": summary.ok, "makespan_seconds": round(summary.wall_seconds, 2),
        "ideal_seconds": round(ideal, 2), "makespan_over_ideal": round(summary.wall_seconds / ideal, 3),
        "median_job_seconds": round(statistics.median(seconds), 2),
        "median_submit_to_start_seconds": round(statistics.median(starts), 3),
        "median_end_to_noticed_seconds": round(statistics.median(ends), 3),
        "nodes": sorted({r.node for r in summary.results if r.node}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16, help="number of equal jobs")
    parser.add_argument("--limit", type=int, default=8, help="documents per task")
    args = parser.parse_args()

    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"})
    from mergepipe.config import build_config
    from mergepipe.evaluate.scheduler import Progress
    from mergepipe.evaluate.stage import evaluate_config
    from tests.helpers.lm_eval_tasks import write_tasks
    from tests.helpers.ray_cluster import LocalCluster
    from tests.helpers.tiny_models import make_random

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mergepipe-bench-") as tmp:
        root = Path(tmp)
        tasks = write_tasks(root / "tasks")
        models = [str(make_random(root / f"m{i}", seed=i)) for i in range(args.jobs)]
        cluster = LocalCluster(root / "ray")
        try:
            cluster.start_head()
            cluster.add_node()
            cluster.wait_for_nodes(2)
            for executor in ("ray", "local"):
                config = build_config({
                    "run": f"bench-{executor}", "models": models,
                    "outputs": {"harness_results": str(root / executor / "results"), "logs": str(root / executor)},
                    "evaluate": {"suites": {"mc": ["tiny_mc"]}, "include_paths": [str(tasks)], "limit": args.limit,
                                 "device": "auto" if executor == "ray" else "cpu", "jobs": SLOTS,
                                 "executor": executor},
                    "cluster": {"address": cluster.address},
                }).resolve_paths(root)
                print(f"== {executor} executor", flush=True)
                start = time.perf_counter()
                summary = evaluate_config(config, progress=Progress(args.jobs, io.StringIO(), tty=False))
                results[executor] = {**_measure(summary), "stage_seconds": round(time.perf_counter() - start, 2)}
                print(results[executor], flush=True)
        finally:
            cluster.stop()

    load = os.getloadavg()
    out = {
        "benchmark": "ray_executor", "slots": SLOTS, "limit": args.limit,
        "cluster": "2 Ray nodes on 127.0.0.1, 2 CPUs + 2 fake GPUs each", **results,
        "goal_makespan_over_ideal": 1.15, "meets_goal": results["ray"]["makespan_over_ideal"] <= 1.15,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m_5m_15m_after": [round(v, 2) for v in load]},
    }
    path = REPO / "benchmarks" / "results" / "ray_executor.json"
    write_json(path, out)
    print(f"ray: makespan / ideal = {results['ray']['makespan_over_ideal']} (goal <= 1.15), overhead per job: "
          f"submit->start {results['ray']['median_submit_to_start_seconds']} s, end->noticed "
          f"{results['ray']['median_end_to_noticed_seconds']} s; local: makespan / ideal = "
          f"{results['local']['makespan_over_ideal']}, submit->start "
          f"{results['local']['median_submit_to_start_seconds']} s -> {path}")


if __name__ == "__main__":
    main()
