"""Wall time of the demo: ``./script.sh`` on pipeline.yaml (zoo already built), then a re-run.

Runs in a scratch directory (outputs go there, not into the project), prints both times and
writes them to ``benchmarks/results/demo_run.json``. Goals: first run <= 6 minutes, immediate
re-run <= 30 s, on a 2-core CPU machine.

    environments/main/bin/python benchmarks/demo_run.py
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

from mergepipe.core.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]


def timed_run(work: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run([str(ROOT / "script.sh"), "--config", "pipeline.yaml"], cwd=work, text=True,
                          capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return time.perf_counter() - start, proc.returncode, proc.stdout + proc.stderr


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    subprocess.run([str(ROOT / "environments/main/bin/mergepipe"), "zoo", "build"], check=True,
                   stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="demo-run-"))
    try:
        shutil.copy(ROOT / "pipeline.yaml", work / "pipeline.yaml")
        first, code1, out1 = timed_run(work)
        print(out1[-2500:])
        second, code2, out2 = timed_run(work)
        print(out2[-1200:])
        load = os.getloadavg()[0]
        result = {"first_run_s": round(first, 1), "rerun_s": round(second, 1), "exit_codes": [code1, code2],
                  "load_average_1min_at_end": round(load, 2), "cpu_count": os.cpu_count()}
        print(json.dumps(result, indent=2))
        out = ROOT / "benchmarks" / "results" / "demo_run.json"
        write_json(out, result)  # atomic: never a half-written result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
