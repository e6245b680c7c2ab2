"""Zoo quality, measured with lm-eval on the generated zoo tasks.

1. Specialisation matrix: base, every expert and every LoRA expert on every built skill
   (generate_until exact match after stripping, and multiple-choice accuracy).
2. Pairwise merges of the default experts: task_arithmetic (weight 1.0 each, the zoo base as
   base) against linear (0.5 / 0.5), each scored on both skills of the pair.

Merges are real mergekit merges (``run_merge``) into a temporary folder. Writes
benchmarks/results/zoo_quality.json and prints Markdown tables for docs/zoo.md.

    environments/main/bin/python benchmarks/zoo_quality.py [--experts 4] [--limit N]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mergepipe.core.atomic import write_json  # noqa: E402
from mergepipe.zoo import ensure_built  # noqa: E402
from mergepipe.zoo.store import Manifest  # noqa: E402


def evaluate(model_args: str, manifest: Manifest, skills: list[str], limit: int | None) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = [t for s in skills for t in (f"zoo_{s}", f"zoo_{s}_mc")]
    manager = TaskManager(include_path=manifest.task_include_path, include_defaults=False)
    out = simple_evaluate(
        model="hf",
        model_args=f"{model_args},dtype=float32",
        tasks=tasks,
        task_manager=manager,
        batch_size=64,
        device="cpu",
        limit=limit,
    )
    res = out["results"]
    return {
        s: {"exact_match": res[f"zoo_{s}"]["exact_match,strip"], "mc_acc": res[f"zoo_{s}_mc"]["acc,none"]}
        for s in skills
    }


def merge(config: dict, out: Path) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(
        MergeConfiguration.model_validate(config),
        str(out),
        options=MergeOptions(copy_tokenizer=True, random_seed=0, quiet=True, lazy_unpickle=False),
    )
    return out


def pair_configs(manifest: Manifest, a: str, b: str) -> dict[str, dict]:
    pa, pb = manifest.model(a).path, manifest.model(b).path
    return {
        "task_arithmetic": {
            "merge_method": "task_arithmetic",
            "base_model": manifest.model("base").path,
            "models": [{"model": pa, "parameters": {"weight": 1.0}}, {"model": pb, "parameters": {"weight": 1.0}}],
            "dtype": "float32",
        },
        "linear": {
            "merge_method": "linear",
            "models": [{"model": pa, "parameters": {"weight": 0.5}}, {"model": pb, "parameters": {"weight": 0.5}}],
            "dtype": "float32",
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="test items per task (default: all 200)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "zoo_quality.json")
    args = parser.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    manifest = ensure_built(experts=args.experts)
    skills = manifest.experts[: args.experts]
    start = time.perf_counter()

    matrix: dict[str, dict] = {}
    for m in manifest.models:
        if m.kind == "expert" and m.skill not in skills:
            continue
        model_args = (
            f"pretrained={manifest.model('base').path},peft={m.path}" if m.kind == "lora" else f"pretrained={m.path}"
        )
        matrix[m.name] = evaluate(model_args, manifest, skills, args.limit)
        row = "  ".join(f"{s}={v['exact_match']:.3f}/{v['mc_acc']:.2f}" for s, v in matrix[m.name].items())
        print(f"{m.name:<10} {row}", flush=True)

    pairs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for a, b in itertools.combinations(skills, 2):
            entry: dict[str, dict] = {}
            for method, cfg in pair_configs(manifest, a, b).items():
                path = merge(cfg, Path(tmp) / f"{a}-{b}-{method}")
                entry[method] = evaluate(f"pretrained={path}", manifest, [a, b], args.limit)
            pairs[f"{a}+{b}"] = entry
            ta, lin = entry["task_arithmetic"], entry["linear"]
            print(
                f"{a}+{b}: TA {a}={ta[a]['exact_match']:.3f} {b}={ta[b]['exact_match']:.3f} | "
                f"linear {a}={lin[a]['exact_match']:.3f} {b}={lin[b]['exact_match']:.3f}",
                flush=True,
            )

    result = {
        "zoo": manifest.root,
        "limit": args.limit,
        "skills": skills,
        "default_pair": manifest.default_pair,
        "matrix": matrix,
        "pairs": pairs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(args.out, result)
    print(markdown(result))
    print(f"wrote {args.out}")
    return 0


def markdown(result: dict) -> str:
    skills = result["skills"]
    lines = ["| model | " + " | ".join(skills) + " |", "|---|" + "---|" * len(skills)]
    for name, row in result["matrix"].items():
        cells = [f"{row[s]['exact_match']:.3f} ({row[s]['mc_acc']:.2f})" for s in skills]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| pair | TA skill A | TA skill B | linear skill A | linear skill B | expert A | expert B |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair, entry in result["pairs"].items():
        a, b = pair.split("+")
        ta, lin = entry["task_arithmetic"], entry["linear"]
        ea, eb = result["matrix"][a][a]["exact_match"], result["matrix"][b][b]["exact_match"]
        lines.append(
            f"| {a} + {b} | {ta[a]['exact_match']:.3f} | {ta[b]['exact_match']:.3f} | "
            f"{lin[a]['exact_match']:.3f} | {lin[b]['exact_match']:.3f} | {ea:.3f} | {eb:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
