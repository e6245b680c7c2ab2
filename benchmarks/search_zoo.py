"""Wall time and outcome of a parameter search on the zoo: ``mergepipe search`` with the demo's
``search:`` section (16 candidates over dare_ties / ties, TPE, tuned on zoo_inc + zoo_next, reported
on zoo_inc_mc + zoo_next_mc), evaluation limited to ``--limit`` documents per task, 2 CPU slots.

Runs in a scratch directory, prints the search's comparison table and writes wall time, the best
candidate's report-split score and the defaults' to ``benchmarks/results/search_zoo.json``.
Goal: 12-20 candidates end to end on a 2-core CPU in minutes, the held-out score printed
whatever it is.

    environments/main/bin/python benchmarks/search_zoo.py [--limit 50] [--trials 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from mergepipe.core.atomic import write_json
from mergepipe.results.search_table import read_summary

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=50, help="documents per task (default: 50)")
    parser.add_argument("--trials", type=int, default=16, help="candidates (default: the demo's 16)")
    args = parser.parse_args()
    mergepipe = str(ROOT / "environments/main/bin/mergepipe")
    subprocess.run([mergepipe, "zoo", "build"], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="search-zoo-"))
    try:
        config = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
        config["evaluate"].update({"limit": args.limit, "jobs": 2})
        config["search"]["trials"] = args.trials
        (work / "pipeline.yaml").write_text(yaml.safe_dump(config))
        start = time.perf_counter()
        proc = subprocess.run([mergepipe, "search", "--config", "pipeline.yaml"], cwd=work, text=True,
                              capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"})
        wall = time.perf_counter() - start
        out = proc.stdout + proc.stderr
        print(out[-3500:])
        summary = read_summary(work / "organized_results")
        study = next(iter(summary.studies.values())) if summary else None
        rows = {m.label: {"role": m.role, "tune_objective": m.tune_objective, "report_mean": m.report_mean,
                          "parameters": m.parameters} for m in (study.compared if study else [])}
        result = {"wall_s": round(wall, 1), "exit_code": proc.returncode, "trials": args.trials,
                  "limit": args.limit, "sampler": study.sampler if study else None,
                  "trials_failed": study.trials_failed if study else None, "models": rows,
                  "load_average_1min_at_end": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}
        print(json.dumps(result, indent=2))
        write_json(ROOT / "benchmarks" / "results" / "search_zoo.json", result)  # atomic
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
