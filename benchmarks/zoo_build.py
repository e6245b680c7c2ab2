"""Zoo build cost: wall time per model and in total, and peak memory, for a fresh build.

Builds into an empty temporary zoo folder (the shared cache is left alone) in a child process,
so the peak RSS is that of the build alone. With ``--into DIR`` the build goes to DIR and is
kept (e.g. a machine's zoo cache, ``MERGEPIPE_ZOO_DIR``); it must not already hold this build.
Writes benchmarks/results/zoo_build.json.

    environments/main/bin/python benchmarks/zoo_build.py [--experts 4] [--seed 0] [--into DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mergepipe.core.atomic import write_json  # noqa: E402

CHILD = """
import json, sys
from mergepipe.zoo import ensure_built
m = ensure_built(experts=int(sys.argv[1]), seed=int(sys.argv[2]))
print(json.dumps([[x.name, x.kind, x.build_seconds, x.peak_rss_mib] for x in m.models]))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--into", type=Path, help="build into this zoo folder and keep the result")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "zoo_build.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        zoo_dir = str(args.into.resolve()) if args.into else tmp
        env = {**os.environ, "MERGEPIPE_ZOO_DIR": zoo_dir, "PYTHONPATH": str(REPO / "src")}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.experts), str(args.seed)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    models = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        "experts": args.experts,
        "seed": args.seed,
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(peak_mib, 1),
        "models": [{"name": n, "kind": k, "seconds": s} for n, k, s, _ in models],
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
    }
    for m in result["models"]:
        print(f"{m['name']:<10} {m['kind']:<6} {m['seconds']:6.1f}s")
    print(
        f"total wall {result['wall_seconds']}s (incl. interpreter start, tasks, probing sets), "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB, load avg {result['load_average_1min']}"
    )
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
