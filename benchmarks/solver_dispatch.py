"""Does `bilateral_consensus`'s default solver send each matrix to the faster of its two solvers?

``solver: lowrank`` hands a matrix to the exact solver where an operation count with fitted
rates (``mergepipe.merge.methods.bilateral_cost``) predicts that to be faster. This times both
solvers (``_bilateral_exact`` and ``_bilateral_lowrank`` called directly, best of ``--repeats``)
on a grid of shapes and expert counts with fine-tuning-like spectra (singular values ~ 1/i), and
reports per cell the predicted and measured times, the choice, and its regret (time of the
chosen solver / time of the faster one; 1.00 = right choice). It also refits the rates to this
machine's timings and says whether the fitted ones would choose differently.

Writes benchmarks/results/solver_dispatch.json and the section of docs/benchmarks.md between
``<!-- solver_dispatch:begin -->`` and ``<!-- solver_dispatch:end -->``.

    environments/main/bin/python benchmarks/solver_dispatch.py                 # full grid (~2 min)
    environments/main/bin/python benchmarks/solver_dispatch.py --shapes 768x256 --experts 4
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from doc_sections import replace_section  # noqa: E402

from mergepipe.core.atomic import write_json  # noqa: E402
from mergepipe.merge.methods import bilateral, bilateral_cost  # noqa: E402
from mergepipe.merge.methods.bilateral_cost import exact_operations, lowrank_operations, seconds  # noqa: E402

BEGIN, END = "<!-- solver_dispatch:begin -->", "<!-- solver_dispatch:end -->"
SHAPES = ("512x128,2048x128,768x256,256x768,1024x256,256x1024,2048x256,4096x256,"
          "640x640,1024x512,1024x1024,1536x512,2048x2048")


def task_vectors(k: int, out_dim: int, in_dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    r = min(out_dim, in_dim)
    sigma = torch.arange(1, r + 1, dtype=torch.float32).reciprocal()
    stack = []
    for _ in range(k):
        u, _ = torch.linalg.qr(torch.randn(out_dim, r, generator=gen))
        v, _ = torch.linalg.qr(torch.randn(in_dim, r, generator=gen))
        stack.append((u * sigma) @ v.T)
    return torch.stack(stack)


def best_of(repeats: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    options = bilateral.Options(rank=args.rank)
    rows = []
    for shape in args.shapes.split(","):
        out_dim, in_dim = (int(x) for x in shape.split("x"))
        for k in (int(x) for x in args.experts.split(",")):
            deltas = task_vectors(k, out_dim, in_dim, args.seed)
            weights = bilateral.expert_weights(deltas, options.normalize)
            exact_s = best_of(args.repeats, partial(
                bilateral._bilateral_exact, deltas, options.eps, options.output_weight, weights))
            lowrank_s = best_of(args.repeats, partial(
                bilateral._bilateral_lowrank, deltas, options.eps, options.rank, options.output_weight, weights))
            width = bilateral.factor_size(k, out_dim, in_dim, args.rank)[1]
            chose_exact = bilateral.uses_exact_solver(k, out_dim, in_dim, args.rank)
            chosen = exact_s if chose_exact else lowrank_s
            row = {
                "shape": shape, "out": out_dim, "in": in_dim, "experts": k, "width": width,
                "exact_s": round(exact_s, 4), "lowrank_s": round(lowrank_s, 4),
                "predicted_exact_s": round(seconds(exact_operations(k, out_dim, in_dim)), 4),
                "predicted_lowrank_s": round(seconds(lowrank_operations(k, out_dim, in_dim, width)), 4),
                "chosen": "exact" if chose_exact else "lowrank",
                "regret": round(chosen / min(exact_s, lowrank_s), 2),
            }
            rows.append(row)
            print(f"{shape:>10} K={k}  exact {exact_s:7.3f}s (predicted {row['predicted_exact_s']:.3f})  "
                  f"low-rank {lowrank_s:7.3f}s (predicted {row['predicted_lowrank_s']:.3f})  "
                  f"-> {row['chosen']:7s} regret {row['regret']:.2f}", flush=True)
    return rows


def refit(rows: list[dict[str, Any]], rank: int) -> dict[str, Any]:
    """Least-squares rates (relative error) for this machine, and the choices they would make."""
    design, ops = [], []
    for row in rows:
        exact = bilateral_cost.exact_operations(row["experts"], row["out"], row["in"])
        low = bilateral_cost.lowrank_operations(row["experts"], row["out"], row["in"], row["width"])
        ops.append((exact, low))
        design += [[x / row["exact_s"] for x in exact], [x / row["lowrank_s"] for x in low]]
    solution = torch.linalg.lstsq(torch.tensor(design, dtype=torch.float64),
                                  torch.ones(len(design), 1, dtype=torch.float64)).solution[:, 0]
    rates = bilateral_cost.Operations(*(float(x) for x in solution))
    differ = 0
    for row, (exact, low) in zip(rows, ops):
        refit_exact = (max(row["out"], row["in"]) <= 2 * rank
                       or bilateral_cost.seconds(exact, rates) <= bilateral_cost.seconds(low, rates))
        differ += refit_exact != (row["chosen"] == "exact")
    return {"rates": {name: f"{value:.2g}" for name, value in rates._asdict().items()}, "choices_that_differ": differ}


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    wrong = [r for r in rows if r["regret"] > 1.0]
    lines = [
        BEGIN,
        "<!-- generated by benchmarks/solver_dispatch.py; edits between these markers are overwritten -->",
        "",
        f"{result['threads']} CPU thread(s), rank budget {result['rank']}, singular values ∝ 1/i, best of "
        f"{result['repeats']}, torch {result['torch']}. Seconds per matrix stack; *regret* = time of the "
        "solver the default chose / time of the faster one.",
        "",
        "| matrix | K | exact s (predicted) | low-rank s (predicted) | chosen | regret |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['experts']} | {r['exact_s']:.3f} ({r['predicted_exact_s']:.3f}) | "
                     f"{r['lowrank_s']:.3f} ({r['predicted_lowrank_s']:.3f}) | {r['chosen']} | {r['regret']:.2f} |")
    worst = max((r["regret"] for r in rows), default=1.0)
    lines += [
        "",
        f"Wrong choices: {len(wrong)} of {len(rows)} cells, worst regret {worst:.2f}. Rates refitted to "
        f"this run: {', '.join(f'{k} {v}' for k, v in result['refit']['rates'].items())} s; with them "
        f"{result['refit']['choices_that_differ']} choice(s) would differ.",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated OUTxIN")
    parser.add_argument("--experts", default="2,4,8", help="comma-separated K values")
    parser.add_argument("--rank", type=int, default=int(bilateral.DEFAULTS["rank"]), help="low-rank budget")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "solver_dispatch.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args)
    result = {"threads": args.threads, "rank": args.rank, "repeats": args.repeats, "seed": args.seed,
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "rows": rows, "refit": refit(rows, args.rank)}
    write_json(args.out, result)
    replace_section(args.doc, BEGIN, END, markdown(result),
                    "## Which solver the default uses (`benchmarks/solver_dispatch.py`)")
    print(markdown(result))
    print(f"wrote {args.out} and {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
