"""Scheduler efficiency: makespan of 8 equal lm-eval jobs on 2 slots vs the ideal.

Eight tiny models of the same size, one suite each (8 real ``eval-harness`` subprocess jobs),
run by the scheduler on 2 CPU slots. The ideal makespan is (sum of the jobs' own wall times) /
slots; the ratio makespan / ideal shows what the queue itself costs (polling, launching, idle
slots). Goal <= 1.15. Writes benchmarks/results/scheduler_efficiency.json.

    environments/main/bin/python benchmarks/scheduler_efficiency.py [--jobs 8] [--slots 2]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from mergepipe.core.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' helpers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="number of equal jobs")
    parser.add_argument("--slots", type=int, default=2, help="CPU slots")
    parser.add_argument("--limit", type=int, default=8, help="documents per task")
    args = parser.parse_args()

    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    from mergepipe.config import build_config
    from mergepipe.evaluate.scheduler import Progress
    from mergepipe.evaluate.stage import evaluate_config
    from tests.helpers.lm_eval_tasks import write_tasks
    from tests.helpers.tiny_models import make_random

    with tempfile.TemporaryDirectory(prefix="mergepipe-bench-") as tmp:
        root = Path(tmp)
        tasks = write_tasks(root / "tasks")
        models = [str(make_random(root / f"m{i}", seed=i)) for i in range(args.jobs)]
        config = build_config({
            "run": "bench", "models": models,
            "evaluate": {"suites": {"mc": ["tiny_mc"]}, "include_paths": [str(tasks)], "limit": args.limit,
                         "device": "cpu", "jobs": args.slots},
        }).resolve_paths(root)
        summary = evaluate_config(config, progress=Progress(args.jobs, io.StringIO(), tty=False))

    job_seconds = [r.seconds for r in summary.results if r.seconds is not None]
    assert len(job_seconds) == args.jobs and summary.ok, summary.table()
    ideal = sum(job_seconds) / args.slots
    ratio = summary.wall_seconds / ideal
    result = {
        "benchmark": "scheduler_efficiency",
        "jobs": args.jobs,
        "slots": args.slots,
        "job_seconds": [round(s, 3) for s in job_seconds],
        "makespan_seconds": round(summary.wall_seconds, 3),
        "ideal_seconds": round(ideal, 3),
        "ratio_makespan_to_ideal": round(ratio, 3),
        "goal": "<= 1.15",
        "meets_goal": ratio <= 1.15,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = REPO / "benchmarks" / "results" / "scheduler_efficiency.json"
    write_json(out, result)  # atomic: never a half-written result
    print(f"makespan {summary.wall_seconds:.2f} s, ideal {ideal:.2f} s, ratio {ratio:.3f} (goal <= 1.15) -> {out}")


if __name__ == "__main__":
    main()
