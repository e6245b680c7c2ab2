"""Probing speed: FlashHolmes-scale probing of one zoo model over all zoo probing sets.

Runs the built-in engine with 5 seeds (and the control task) on 2 CPU threads, with an empty
encoding cache so encoding is timed too, and prints the time of every dataset. Goal: <= 120 s
in total. Writes ``benchmarks/results/probing_speed.json``.

    environments/main/bin/python benchmarks/probing_speed.py [--model zoo://base] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as 'mergepipe probe' does, before torch loads

import torch

from mergepipe.core.atomic import write_json
from mergepipe.evaluate.holmes.probe import run_probing

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo://base", help="model reference (default zoo://base)")
    parser.add_argument("--data-dir", type=Path, default=None, help="datasets (default: the zoo's probing sets)")
    parser.add_argument("--seeds", type=int, default=5, help="probe seeds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > args.threads:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
    if args.data_dir is None:
        from mergepipe import zoo

        zoo.ensure_built()
        args.data_dir = Path(zoo.probing_data_dir())
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = run_probing(args.model, args.data_dir, Path(tmp) / "out", args.seeds, control_task=True,
                          device="cpu", cache_dir=Path(tmp) / "cache", report=lambda s: (print(s), lines.append(s)))
        total = time.perf_counter() - t0
    per_dataset = {o.name: round(o.seconds, 3) for o in run.outcomes}
    ok = total <= GOAL_SECONDS and not run.failed
    print(f"total {total:.1f}s for {len(per_dataset)} datasets x {args.seeds} seeds (+control) on "
          f"{args.threads} threads; goal <= {GOAL_SECONDS:.0f}s: {'OK' if ok else 'MISSED'}")
    result = {
        "model": args.model, "data_dir": str(args.data_dir), "seeds": args.seeds, "control_task": True,
        "threads": args.threads, "total_seconds": round(total, 2), "goal_seconds": GOAL_SECONDS, "ok": ok,
        "model_load_seconds": round(run.load_seconds, 2), "per_dataset_seconds": per_dataset,
        "failed": [o.name for o in run.failed],
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    out = ROOT / "benchmarks" / "results" / "probing_speed.json"
    write_json(out, result)  # atomic: never a half-written result
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
