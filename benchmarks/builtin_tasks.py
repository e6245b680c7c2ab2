"""Built-in lm-eval tasks: how long a job spends finding them, and the pre-flight.

Times, each in a fresh process after the imports every job pays anyway (lm-eval, torch and
transformers through the installed plugins), so the figures are the finding alone:

- ``full``: lm-eval's own way, ``TaskManager(include_defaults=True)`` indexing every built-in YAML;
- ``targeted``: mergepipe's job, ``select_tasks`` (cached index -> only the folders the tasks live in);
- ``preflight``: ``check_tasks`` (resolve, import the tasks' ``!function`` modules, locate datasets).

for ``--tasks`` (default ``boolq tinyBenchmarks gsm8k``). The targeted manager must know every
requested name. Writes ``benchmarks/results/builtin_tasks.json``.

    environments/main/bin/python benchmarks/builtin_tasks.py [--tasks boolq tinyBenchmarks] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from mergepipe.core.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = {
    "full": "from lm_eval.tasks import TaskManager\nm = TaskManager(include_defaults=True)\nn = len(m.all_tasks)",
    "targeted": ("from mergepipe.evaluate.harness.tasks import select_tasks\n"
                 "m = select_tasks(TASKS, []).task_manager\nn = len(m.all_tasks)\n"
                 "assert all(t in m.all_tasks for t in TASKS)"),
    "preflight": ("from mergepipe.evaluate.harness.preflight import check_tasks\n"
                  "c = check_tasks(TASKS, [], datasets_dir=None, online=False)\nn = len(c.resolution.leaves)"),
}


def timed(name: str, tasks: list[str]) -> tuple[float, int]:
    code = (f"import time, json\nimport lm_eval.tasks\nfrom mergepipe.core.plugins import registry\n"
            f"from mergepipe.evaluate.harness import preflight, tasks\nregistry()\nTASKS = {tasks!r}\n"
            f"t = time.perf_counter()\n{SNIPPETS[name]}\n"
            "print(json.dumps([time.perf_counter() - t, n]))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, count = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["boolq", "tinyBenchmarks", "gsm8k"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the median is reported")
    args = parser.parse_args()
    timed("targeted", args.tasks)  # builds the cached index once, if it is not there yet
    result: dict[str, object] = {"benchmark": "builtin_tasks", "tasks": args.tasks}
    for name in SNIPPETS:
        runs = [timed(name, args.tasks) for _ in range(args.repeats)]
        times = sorted(r[0] for r in runs)
        result[name] = {"median_seconds": round(times[len(times) // 2], 2),
                        "runs_seconds": [round(r[0], 2) for r in runs], "names_or_leaves": runs[0][1]}
        print(f"{name:9s} median {times[len(times) // 2]:6.2f} s  ({runs[0][1]} names/leaves)", flush=True)
    full, targeted = result["full"], result["targeted"]
    assert isinstance(full, dict) and isinstance(targeted, dict)
    result["speedup"] = round(full["median_seconds"] / max(targeted["median_seconds"], 1e-6), 1)
    result.update(cpu_count=os.cpu_count(), load_average=list(os.getloadavg()), python=platform.python_version())
    print(f"finding the tasks: {result['speedup']}x faster than indexing every built-in YAML "
          f"(load average {os.getloadavg()[0]:.1f})")
    write_json(ROOT / "benchmarks" / "results" / "builtin_tasks.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
