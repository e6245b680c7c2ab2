"""Merge overhead: ``mergepipe merge`` vs the plain ``mergekit-yaml`` CLI on the same configs.

Makes a Llama-architecture base and two experts of about 170 MB each (float32) locally, then
times, five times each:
- the pipeline: one ``mergepipe merge --force`` process making the five classic merges;
- the CLI: ``mergekit-yaml`` run once per merge on the exact configs the pipeline wrote.
Prints the median wall times, their ratio (goal <= 1.0) and the pipeline's merge throughput
(bytes read + written per second, from the merge records), and writes them to
``benchmarks/results/merge_overhead.json``.

    environments/main/bin/python benchmarks/merge_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from mergepipe.core.atomic import write_json
from mergepipe.zoo.tokenizer import VOCAB_SIZE, build_byte_tokenizer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METHODS = ["linear", "slerp", "ties", "dare_ties", "task_arithmetic"]


def make_models(root: Path) -> dict[str, Path]:
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=768, intermediate_size=2048,
                         num_hidden_layers=6, num_attention_heads=12, num_key_value_heads=4,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    paths = {}
    for name, scale in (("base", 0.0), ("expert_a", 0.01), ("expert_b", 0.01)):
        model = LlamaForCausalLM(config)
        model.load_state_dict(base.state_dict())
        if scale:
            gen = torch.Generator().manual_seed(len(paths))
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * scale)
        paths[name] = root / name
        model.save_pretrained(paths[name], safe_serialization=True)
        build_byte_tokenizer().save_pretrained(paths[name])
    return paths


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TQDM_DISABLE": "1"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="merge-overhead-"))
    try:
        models = make_models(work / "models")
        model_bytes = sum(f.stat().st_size for f in models["base"].glob("*.safetensors"))
        print(f"model size: {model_bytes / 2**20:.0f} MiB per model (float32)")
        pipeline_yaml = work / "pipeline.yaml"
        pipeline_yaml.write_text(yaml.safe_dump({
            "run": "bench", "base_model": str(models["base"]),
            "models": [str(models["expert_a"]), str(models["expert_b"])],
            "dtype": "float32", "seed": 0, "merge": {"methods": METHODS},
        }))
        mergepipe = [str(BIN / "mergepipe"), "merge", "--config", str(pipeline_yaml), "--force"]
        timed(mergepipe, work)  # warm the page cache and write the configs
        configs = sorted((work / "merge_config" / "bench").glob("*.yaml"))
        pipeline_times, cli_times = [], []
        for i in range(args.repeats):
            pipeline_times.append(timed(mergepipe, work))
            total = 0.0
            for cfg in configs:
                out = work / "cli_out" / cfg.stem
                total += timed([str(BIN / "mergekit-yaml"), str(cfg), str(out), "--random-seed", "0"], work)
                shutil.rmtree(out, ignore_errors=True)
            cli_times.append(total)
            print(f"run {i + 1}: pipeline {pipeline_times[-1]:.2f}s, mergekit-yaml x{len(configs)} {total:.2f}s")
        records = [json.loads(p.read_text()) for p in (work / "merged_models" / "bench").glob("*/mergepipe_merge.json")]
        moved = [(len(r["mergekit_config"]["models"]) + ("base_model" in r["mergekit_config"]
                  and r["method"] not in ("slerp",))) * model_bytes + r["output_bytes"] for r in records]
        throughput = sum(moved) / sum(r["wall_seconds"] for r in records)
        result = {
            "merges_per_run": len(configs),
            "model_mib": round(model_bytes / 2**20, 1),
            "pipeline_median_s": round(statistics.median(pipeline_times), 3),
            "cli_median_s": round(statistics.median(cli_times), 3),
            "ratio_pipeline_over_cli": round(statistics.median(pipeline_times) / statistics.median(cli_times), 3),
            "throughput_mib_per_s": round(throughput / 2**20, 1),
            "repeats": args.repeats,
            "cpu_count": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
        out = ROOT / "benchmarks" / "results" / "merge_overhead.json"
        write_json(out, result)  # atomic: never a half-written result
        print(f"written to {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
