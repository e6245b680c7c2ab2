"""Organize + plots + report speed on a demo run's results. Goal: <= 20 s for all three.

Times ``mergepipe report`` (organize, every figure as PNG + SVG, report.html/.md) as a user
runs it: a fresh process, imports included. Results: the given folders (e.g. a finished demo
run's harness_results/ and holmes_results/), else real tiny results made on the spot by
tests/results_factory.py (real lm-eval runs on tiny models). Writes
``benchmarks/results/organize_speed.json``.

    environments/main/bin/python benchmarks/organize_speed.py [--harness-dir D --holmes-dir D]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mergepipe.core.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 20.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness-dir", type=Path, help="lm-eval results (default: made on the spot)")
    parser.add_argument("--holmes-dir", type=Path, help="Holmes results (default: made on the spot)")
    parser.add_argument("--mapping-csv", type=Path, help="Holmes dataset -> competence mapping")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.harness_dir is None or args.holmes_dir is None:
            sys.path.insert(0, str(ROOT))  # the tests' helpers
            from tests.helpers.results_factory import build_demo_results

            print("making tiny demo results (real lm-eval runs) ...", flush=True)
            demo = build_demo_results(Path(tmp) / "demo", ROOT.parent / "shared" / "fixtures")
            args.harness_dir, args.holmes_dir = demo.harness_dir, demo.holmes_dir
            args.mapping_csv = args.mapping_csv or demo.mapping_csv
        out = Path(tmp) / "organized_results"
        cmd = [str(Path(sys.executable).with_name("mergepipe")), "report",
               "--harness-dir", str(args.harness_dir), "--holmes-dir", str(args.holmes_dir),
               "--out", str(out)]
        if args.mapping_csv:
            cmd += ["--mapping-csv", str(args.mapping_csv)]
        times, cpu = [], []
        for _ in range(args.repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "MPLBACKEND": "Agg"})
            times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        files = sorted(p.name for p in (out / "plots").iterdir())
        models = len((out / "summary.csv").read_text().splitlines()) - 1
    median = sorted(times)[len(times) // 2]
    result = {
        "benchmark": "organize_speed",
        "goal_seconds": GOAL_SECONDS,
        "median_seconds": round(median, 2),
        "runs_seconds": [round(t, 2) for t in times],
        # CPU time of the command: what the wall time would be on an otherwise idle core
        "cpu_seconds": [round(c, 2) for c in cpu],
        "models": models,
        "figure_files": len(files),
        "passed": median <= GOAL_SECONDS,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
    }
    print(f"organize + plots + report ({models} models, {len(files)} figure files): "
          f"median {median:.2f} s over {len(times)} runs {result['runs_seconds']} "
          f"(CPU {result['cpu_seconds']} s, load average {os.getloadavg()[0]:.1f}) "
          f"(goal <= {GOAL_SECONDS:.0f} s): {'PASS' if result['passed'] else 'FAIL'}")
    dest = ROOT / "benchmarks" / "results" / "organize_speed.json"
    write_json(dest, result)  # atomic: never a half-written result
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
