"""Adapter experts and adapter output on the zoo: exactness, and task accuracy against rank.

With the zoo's two LoRA experts (``zoo://<skill>-lora`` of ``zoo://base``, rank 8, every
projection), for each method of the demo pipeline (default parameters):

1. full-model mode: merging the adapters equals merging the full models PEFT materialises from
   them (``merge_and_unload``) with the same method: max abs weight difference;
2. adapter output (``merge.output: adapter``) at ranks 1..full: the merge re-factored by
   truncated SVD, loaded with ``PeftModel.from_pretrained`` over the base. At full rank
   (>= the hidden size) its logits on the zoo task prompts are compared with the full merge's;
3. every adapter output, the full merge and the two adapter experts are evaluated with lm-eval
   (through ``mergepipe.evaluate.harness.run``: adapters via lm-eval's ``peft=``) on the skills'
   tasks: ``zoo_<skill>`` (greedy generation, exact match) and ``zoo_<skill>_mc`` (multiple
   choice, acc). Accuracy kept = adapter accuracy / full-merge accuracy, averaged (and min)
   over the tasks the full merge scores >= 10% on; the largest absolute drop over all tasks
   is reported too.

Writes benchmarks/results/adapter_rank.json and prints the accuracy-vs-rank table.

    environments/main/bin/python benchmarks/adapter_rank.py                        # full run
    environments/main/bin/python benchmarks/adapter_rank.py --methods linear --limit 50
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mergepipe.config import HarnessSettings, load_config  # noqa: E402
from mergepipe.core.atomic import write_json  # noqa: E402
from mergepipe.core.paths import cache_dir  # noqa: E402
from mergepipe.evaluate.harness.run import run_harness  # noqa: E402
from mergepipe.merge.run import prepare, run_merges  # noqa: E402

# The demo pipeline's methods (pipeline.yaml), with the catalogue's default parameters.
METHODS = ("linear", "slerp", "ties", "dare_ties", "task_arithmetic")


def merge_one(work: Path, run: str, base: str, experts: list[str], method: dict[str, Any],
              **merge: Any) -> Path:
    data = {
        "run": run, "base_model": base, "models": experts, "dtype": "float32", "seed": 42,
        "merge": {"methods": [method], **merge},
        "outputs": {"merged_models": str(work / "merged"), "merge_config": str(work / "configs")},
    }
    path = work / f"{run}.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    plans, _ = prepare(config)
    (outcome,) = run_merges(config, plans, report=lambda _msg: None)
    if outcome.status == "failed":
        raise SystemExit(f"{run}: merge failed: {outcome.error}")
    return outcome.output_dir


def materialise(base_dir: Path, adapter_dir: Path, out: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not (out / "config.json").is_file():
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
        model.merge_and_unload().save_pretrained(out, safe_serialization=True)
        for f in base_dir.glob("tokenizer*"):
            shutil.copy(f, out / f.name)
    return out


def max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa = {k: v for f in sorted(a.glob("*.safetensors")) for k, v in load_file(f).items()}
    wb = {k: v for f in sorted(b.glob("*.safetensors")) for k, v in load_file(f).items()}
    assert set(wa) == set(wb), "the two merges have different tensors"
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def prompts(skills: list[str], per_skill: int) -> list[str]:
    from mergepipe.zoo.corpus import test_items
    from mergepipe.zoo.skills import skill

    return [item.prompt for s in skills for item in test_items(skill(s), 0)[:per_skill]]


def logits_diff(base_dir: Path, adapter_dir: Path, full_dir: Path, texts: list[str]) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(full_dir)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    full_model = AutoModelForCausalLM.from_pretrained(full_dir).eval()
    worst = 0.0
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt").input_ids
            worst = max(worst, (peft_model(ids).logits - full_model(ids).logits).abs().max().item())
    return worst


def accuracy(model_dir: Path | str, tasks: list[str], results: Path, limit: int | None,
             include: Path) -> dict[str, float]:
    out = run_harness(str(model_dir), tasks, results_dir=results, settings=HarnessSettings(limit=limit,
                      batch_size=16), include_paths=[include], device="cpu")
    return {t: float(next(v for k, v in out.scores[t].items() if k.startswith(("exact_match,", "acc,"))))
            for t in tasks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from: " + ", ".join(METHODS))
    parser.add_argument("--ranks", default="1,2,4,8,16,32,full", help="adapter ranks; 'full' = the hidden size")
    parser.add_argument("--limit", type=int, default=None, help="test items per task (default: all)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per skill for the logits check")
    parser.add_argument("--zoo-root", type=Path, default=None,
                        help="a zoo build folder holding base/, <skill>-lora/ and tasks/ (default: the zoo's own)")
    parser.add_argument("--work", type=Path, default=cache_dir() / "bench_adapter_rank", help="scratch folder")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "adapter_rank.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from mergepipe import zoo

    skills = list(zoo.lora_skills())
    if args.zoo_root:  # a partial build (base, LoRA experts, tasks) is enough here
        root = args.zoo_root.resolve()
        base, include = root / "base", root / "tasks"
        lora_dirs = [root / f"{s}-lora" for s in skills]
    else:
        manifest = zoo.ensure_built()
        base, include = Path(manifest.model("base").path), zoo.task_include_path()
        lora_dirs = [Path(manifest.model(f"{s}-lora").path) for s in skills]
    lora_refs = [str(d) for d in lora_dirs]
    hidden = json.loads((base / "config.json").read_text())["hidden_size"]
    ranks = [hidden if r == "full" else int(r) for r in args.ranks.split(",")]
    tasks = [f"zoo_{s}" for s in skills] + [f"zoo_{s}_mc" for s in skills]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    results_dir = args.work / "harness"
    texts = prompts(skills, args.prompts)
    mats = [str(materialise(base, d, args.work / f"materialised-{s}")) for s, d in zip(skills, lora_dirs)]

    report: dict[str, Any] = {
        "zoo": {"base": str(base), "experts": [f"zoo://{s}-lora" for s in skills], "folders": lora_refs,
                "hidden_size": hidden, "tasks": tasks,
                "expert_ranks": [json.loads((d / "adapter_config.json").read_text())["r"] for d in lora_dirs],
                "limit": args.limit, "logit_prompts": len(texts)},
        "experts": {f"zoo://{s}-lora": accuracy(d, tasks, results_dir, args.limit, include)
                    for s, d in zip(skills, lora_dirs)},
        "methods": {},
    }
    for name in args.methods.split(","):
        if name not in METHODS:
            raise SystemExit(f"--methods: unknown method {name!r}; choose from {', '.join(METHODS)}")
        method = {"name": name}
        t0 = time.perf_counter()
        full = merge_one(args.work, f"{name}-full", str(base), lora_refs, method)
        via_materialised = merge_one(args.work, f"{name}-materialised", str(base), mats, method)
        full_acc = accuracy(full, tasks, results_dir, args.limit, include)
        entry: dict[str, Any] = {
            "adapters_vs_materialised_max_abs_diff": max_weight_diff(full, via_materialised),
            "full_merge_accuracy": full_acc,
            "ranks": [],
        }
        for rank in ranks:
            out = merge_one(args.work, f"{name}-r{rank}", str(base), lora_refs, method,
                            output="adapter", adapter_rank=rank)
            record = json.loads((out / "mergepipe_merge.json").read_text())["adapter"]
            acc = accuracy(out, tasks, results_dir, args.limit, include)
            # Ratios of near-zero accuracies are noise: tasks the full merge scores < 10% on are
            # left out of the ratio (their absolute drop is still reported).
            kept = [acc[t] / full_acc[t] for t in tasks if full_acc[t] >= 0.1] or [1.0]
            row = {"rank": rank, "full_rank": rank >= hidden, "accuracy": acc,
                   "accuracy_kept": sum(kept) / len(kept), "min_accuracy_kept": min(kept),
                   "max_accuracy_drop": max(full_acc[t] - acc[t] for t in tasks),
                   "max_relative_error": record["max_relative_error"],
                   "mean_relative_error": record["mean_relative_error"],
                   "adapter_bytes": (out / "adapter_model.safetensors").stat().st_size}
            if rank >= hidden:
                row["max_abs_logit_diff"] = logits_diff(base, out, full, texts)
            entry["ranks"].append(row)
        keeping = [row["rank"] for row in entry["ranks"] if row["min_accuracy_kept"] >= 0.95]
        entry["smallest_rank_keeping_95pct_on_every_task"] = min(keeping, default=None)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["methods"][name] = entry
        print(f"\n{name}: adapters vs materialised max |diff| = {entry['adapters_vs_materialised_max_abs_diff']:.2e};"
              f" full merge accuracy {full_acc}")
        print(f"{'rank':>5} {'kept':>6} {'min kept':>8} {'max drop':>8} {'max rel err':>11}  accuracy")
        print(f"smallest rank keeping >= 95% on every task: {entry['smallest_rank_keeping_95pct_on_every_task']}")
        for row in entry["ranks"]:
            extra = f"  logits max |diff| {row['max_abs_logit_diff']:.2e}" if "max_abs_logit_diff" in row else ""
            print(f"{row['rank']:>5} {row['accuracy_kept']:>6.3f} {row['min_accuracy_kept']:>8.3f} "
                  f"{row['max_accuracy_drop']:>8.3f} "
                  f"{row['max_relative_error']:>11.4f}  {row['accuracy']}{extra}")
        write_json(args.out, report)  # after every method: a partial run still leaves figures
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
