"""GPU check: merge and evaluate Llama-3-8B-shaped models on one CUDA GPU, self-contained.

On a machine with torch and one GPU and nothing else (no network, no mergekit, no lm-eval):

1. dependencies: ``--prepare-wheels DIR`` (on a connected machine with the same Python version,
   OS and CPU architecture) downloads mergekit==0.1.5, lm-eval[hf]==0.4.13 and mergepipe's other
   dependencies, pinned by requirements/constraints.txt, into DIR, torch and its CUDA wheels
   excluded. On the GPU machine ``--wheels DIR`` installs them offline into a temporary venv that
   sees the system torch (``--system-site-packages``; ``--install user`` uses the user site
   instead) and re-executes this script there;
2. writes a base and two experts with Llama-3-8B's shapes (hidden 4096, intermediate 14336,
   32 heads / 8 KV heads, vocab 128256, untied lm_head, bf16; ``--layers N`` decoder layers,
   default 32, ~16 GB per model) as sharded safetensors. Weights are drawn on the GPU: base
   N(0, 0.02) (norms 1), each expert = base + a rank-16 perturbation plus dense noise (RMS 1e-3);
3. merges them with ``ties`` and ``bilateral_consensus`` through mergekit's ``run_merge`` on
   cuda, with the configs mergepipe's catalogue writes (its default parameters), recording wall
   time (CUDA synchronised) and peak GPU memory (``torch.cuda.max_memory_allocated``);
4. evaluates the bilateral merge with mergepipe's ``run_harness`` (lm-eval, hf backend, on the
   GPU) on a local multiple-choice task written next to the models (no download), with a
   byte-level tokenizer (260 ids, under the 128256-row embedding);
5. writes benchmarks/results/gpu_check.json and prints a summary.

Disk: three inputs plus one merged output at a time (the ties output is checked, then removed
unless ``--keep``): ~4 x 16 GB at 32 layers; the script checks free space first and names the
largest ``--layers`` that fits.

``--tiny`` runs exactly the same flow on the CPU with tiny Llama shapes (seconds); that is what
tests/merge/test_gpu_check_tiny.py runs.

    python benchmarks/gpu_check.py --prepare-wheels wheels/          # connected machine
    python benchmarks/gpu_check.py --wheels wheels/ [--layers 16]    # GPU machine
    environments/main/bin/python benchmarks/gpu_check.py --tiny      # here, on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "requirements" / "constraints.txt"
PYPROJECT = REPO / "pyproject.toml"
REEXEC_ENV = "MERGEPIPE_GPU_CHECK_VENV"
# Provided by the GPU machine's own torch install: never downloaded.
EXCLUDED = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton.*|nvidia-.*|cuda-.*)$")
TASK = "gpu_check_mc"
METHODS = ("ties", "bilateral_consensus")
EVALUATED = "bilateral_consensus"


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    def parameters(self) -> int:
        head = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.kv_heads * head * self.hidden
        layer = attn + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * layer + 2 * self.vocab * self.hidden + self.hidden


LLAMA3_8B = Shape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256)
TINY = Shape(hidden=64, intermediate=224, layers=2, heads=4, kv_heads=1, vocab=512)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- step 1: wheels


def project_requirements() -> list[str]:
    """mergepipe's runtime dependencies from pyproject.toml (mergekit and lm-eval among them)."""
    text = PYPROJECT.read_text(encoding="utf-8")
    try:
        import tomllib

        return list(tomllib.loads(text)["project"]["dependencies"])
    except ModuleNotFoundError:  # Python 3.10: the one array this needs, read by hand
        block = text.split("dependencies = [", 1)[1].split("]\n", 1)[0]
        return re.findall(r'"([^"]+)"', block)


def pip(python: str | Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", *args]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def prepare_wheels(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    requirements = [*project_requirements(), "setuptools", "wheel"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        # Resolve the whole closure (reading metadata only), then download all but torch.
        pip(sys.executable, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            "-c", str(CONSTRAINTS), *requirements)
        resolved = json.loads(report.read_text(encoding="utf-8"))["install"]
    pins = sorted({f"{item['metadata']['name']}=={item['metadata']['version']}" for item in resolved
                   if not EXCLUDED.match(item["metadata"]["name"].lower().replace("_", "-"))})
    pip(sys.executable, "download", "--no-deps", "--dest", str(folder), *pins)
    (folder / "requirements.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    log(f"{len(pins)} packages in {folder} (requirements.txt lists them); torch is not among them. "
        f"On the GPU machine: python {Path(__file__).name} --wheels {folder}")
    return 0


def install_wheels(folder: Path, mode: str, argv: list[str]) -> int:
    """Install the wheels offline, then run this script again in the environment that has them."""
    folder = folder.resolve()
    listed = folder / "requirements.txt"
    requirements = ["-r", str(listed)] if listed.exists() else project_requirements()
    offline = ["install", "--no-index", "--find-links", str(folder)]
    venv: Path | None = None
    if mode == "venv":
        venv = Path(tempfile.mkdtemp(prefix="mergepipe-gpu-check-venv-"))
        made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
        if made.returncode != 0:  # e.g. a Python without ensurepip
            log("could not create a venv here; installing into the user site instead")
            shutil.rmtree(venv, ignore_errors=True)
            venv, mode = None, "user"
    if venv is not None:
        python = venv / "bin" / "python"
        pip(python, *offline, "--quiet", *requirements)
    else:
        python = Path(sys.executable)
        pip(python, *offline, "--user", "--quiet", *requirements)
    env = {**os.environ, REEXEC_ENV: str(venv or "")}
    args = _without_option(argv, "--wheels")
    log(f"re-running in {python}")
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *args], env)
    return 0  # not reached


def _without_option(argv: list[str], name: str) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


# ---------------------------------------------------------------- step 2: models

# The torch module, imported once the dependencies are there.
torch: Any = None


def _import_torch() -> None:
    global torch
    import torch as _torch

    torch = _torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def llama_config(shape: Shape) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, dtype="bfloat16", architectures=["LlamaForCausalLM"],
    )


def tensor_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Every weight name and shape of the HF Llama model, without allocating it."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def shards(names: list[str], layers: int) -> list[list[str]]:
    """One shard per decoder layer, one for the embedding, one for the final norm and lm_head."""
    groups: list[list[str]] = [[n for n in names if "embed_tokens" in n]]
    for i in range(layers):
        groups.append([n for n in names if n.startswith(f"model.layers.{i}.")])
    groups.append([n for n in names if n not in {m for g in groups for m in g}])
    return [g for g in groups if g]


def draw(name: str, shape: tuple[int, ...], role: int, device: str) -> Any:
    """Deterministic weights, drawn on ``device``: role 0 = base, role i = expert i's delta."""
    gen = torch.Generator(device=device).manual_seed(sum(map(ord, name)) * 131 + role)
    if role == 0:
        if len(shape) == 1:
            return torch.ones(shape, device=device)
        return torch.randn(shape, generator=gen, device=device).mul_(0.02)
    if len(shape) == 1:
        return torch.randn(shape, generator=gen, device=device).mul_(1e-3)
    rank = 16
    a = torch.randn(shape[0], rank, generator=gen, device=device)
    b = torch.randn(rank, shape[1], generator=gen, device=device)
    delta = (a @ b).mul_(1 / rank**0.5)  # entries of unit variance
    delta.add_(torch.randn(shape, generator=gen, device=device), alpha=0.5)
    return delta.mul_(1e-3 / 1.25**0.5)


def write_models(root: Path, shape: Shape, device: str) -> dict[str, Path]:
    from safetensors.torch import save_file

    from mergepipe.zoo.tokenizer import build_byte_tokenizer

    config = llama_config(shape)
    shapes = tensor_shapes(config)
    names = {"base": root / "base", "expert_a": root / "expert_a", "expert_b": root / "expert_b"}
    tokenizer = build_byte_tokenizer()
    for path in names.values():
        path.mkdir(parents=True)
        config.save_pretrained(path)
        tokenizer.save_pretrained(path)
    groups = shards(list(shapes), shape.layers)
    weight_map: dict[str, str] = {}
    total = 0
    for index, group in enumerate(groups, 1):
        file = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        out: dict[str, dict[str, Any]] = {key: {} for key in names}
        for name in group:
            base = draw(name, shapes[name], 0, device)
            out["base"][name] = base.to(torch.bfloat16).cpu()
            for role, key in enumerate(("expert_a", "expert_b"), 1):
                out[key][name] = (base + draw(name, shapes[name], role, device)).to(torch.bfloat16).cpu()
            del base
            weight_map[name] = file
            total += out["base"][name].numel() * 2
        for key, path in names.items():
            save_file(out[key], str(path / file), metadata={"format": "pt"})
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for path in names.values():
        (path / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=1), encoding="utf-8")
    return names


# ---------------------------------------------------------------- step 3: merges


@contextmanager
def gpu_peak(device: str) -> Iterator[dict[str, float]]:
    """Wall time (synchronised) and peak GPU memory of the block; peak RSS on the CPU."""
    from mergepipe.core.usage import ResourceMonitor, StageUsage

    out: dict[str, float] = {}
    if device == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    usage = StageUsage("gpu_check")
    with ResourceMonitor(usage, interval=0.05):
        start = time.perf_counter()
        yield out
        sync(device)
        out["seconds"] = time.perf_counter() - start
    out["peak_rss_mib"] = usage.peak_rss_bytes / 2**20
    if device == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20


def merge_config(method: str, models: dict[str, Path]) -> dict[str, Any]:
    """The mergekit config the pipeline writes for ``method`` with its catalogue defaults."""
    from mergepipe.merge.catalogue import get_method, mergekit_config, resolve_parameters

    info = get_method(method)
    shared, per_model = resolve_parameters(info, {}, 2, f"gpu_check.{method}")
    experts = [str(models["expert_a"]), str(models["expert_b"])]
    return mergekit_config(info, experts, str(models["base"]), shared, per_model, "bfloat16")


def merge(method: str, models: dict[str, Path], out: Path, device: str) -> dict[str, Any]:
    from mergekit.common import parse_kmb
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    import mergepipe.merge.methods  # noqa: F401  (registers bilateral_consensus with mergekit)

    cfg = merge_config(method, models)
    options = MergeOptions(cuda=device == "cuda", device=device, lazy_unpickle=True, low_cpu_memory=False,
                           out_shard_size=parse_kmb("2B"), copy_tokenizer=True, random_seed=0,
                           write_model_card=False, quiet=True)
    with gpu_peak(device) as usage:
        run_merge(MergeConfiguration.model_validate(cfg), str(out), options=options)
    return {"config": cfg, **usage, **check_merged(out, models)}


def check_merged(out: Path, models: dict[str, Path]) -> dict[str, Any]:
    """Every tensor present with the base's shape and dtype, finite, and moved off the base."""
    from safetensors import safe_open

    def tensors(folder: Path) -> dict[str, tuple[Path, Any]]:
        found: dict[str, tuple[Path, Any]] = {}
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), "pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    found[key] = (file, fh.get_slice(key).get_shape())
        return found

    merged, base = tensors(out), tensors(models["base"])
    missing = sorted(set(base) - set(merged))
    wrong = sorted(k for k in base if k in merged and list(merged[k][1]) != list(base[k][1]))
    probe = next(k for k in base if k.endswith("self_attn.q_proj.weight"))
    with safe_open(str(merged[probe][0]), "pt") as fh:
        m = fh.get_tensor(probe)
    with safe_open(str(base[probe][0]), "pt") as fh:
        b = fh.get_tensor(probe)
    change = float((m.float() - b.float()).norm() / b.float().norm())
    return {
        "tensors": len(merged), "missing": missing, "wrong_shape": wrong, "dtype": str(m.dtype),
        "output_bytes": sum(f.stat().st_size for f in out.glob("*.safetensors")),
        "relative_change_vs_base": change, "finite": bool(torch.isfinite(m).all()),
        "ok": not missing and not wrong and bool(torch.isfinite(m).all()) and change > 0 and m.dtype == torch.bfloat16,
    }


# ---------------------------------------------------------------- step 4: lm-eval


def write_task(folder: Path, docs: int) -> Path:
    """A local multiple-choice task: which letter follows a letter (data in JSONL next to it)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.jsonl"
    letters = "abcdefghijklmnopqrstuvwxy"
    with data.open("w", encoding="utf-8") as fh:
        for i in range(docs):
            c = letters[i % len(letters)]
            gold = (i * 7) % 4
            wrong = [x for x in letters if x != chr(ord(c) + 1)]
            choices = [wrong[(i * 3 + j) % len(wrong)] for j in range(3)]
            choices.insert(gold, chr(ord(c) + 1))
            fh.write(json.dumps({"prompt": f"after {c} comes", "choices": choices, "gold": gold}) + "\n")
    doc = {
        "task": TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prompt}}",
        "doc_to_choice": "choices", "doc_to_target": "gold",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return folder


def evaluate(model: Path, tasks_dir: Path, results: Path, device: str, batch_size: int) -> dict[str, Any]:
    from mergepipe.config.evaluate import HarnessSettings
    from mergepipe.evaluate.harness.run import run_harness

    settings = HarnessSettings(batch_size=batch_size, dtype="bfloat16", seed=0)
    with gpu_peak(device) as usage:
        outcome = run_harness(str(model), [TASK], results_dir=results, suite="gpu_check", settings=settings,
                              include_paths=[tasks_dir], device=device, force=True)
    scores = outcome.scores.get(TASK, {})
    return {"task": TASK, "model": EVALUATED, "status": outcome.status, "scores": scores,
            "acc": scores.get("acc,none"), "batch_size": batch_size, **usage}


# ---------------------------------------------------------------- main


def disk_needed(shape: Shape) -> int:
    return 4 * shape.parameters() * 2 + (1 << 30)  # 3 inputs + 1 output in bf16, 1 GiB spare


def largest_layers(shape: Shape, free: int) -> int:
    n = shape.layers
    while n > 1 and disk_needed(replace(shape, layers=n)) > free:
        n -= 1
    return n


def run_check(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, str(REPO / "src"))
    missing = [m for m in ("torch", "mergekit", "lm_eval", "transformers", "safetensors", "yaml", "psutil")
               if not _importable(m)]
    if missing:
        print(f"gpu_check: missing Python packages: {', '.join(missing)}. Bring them as wheels: run "
              f"'{Path(__file__).name} --prepare-wheels DIR' on a connected machine, then '--wheels DIR' here.",
              file=sys.stderr)
        return 2
    _import_torch()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (use --tiny for the CPU flow)", file=sys.stderr)
        return 2
    shape = replace(TINY if args.tiny else LLAMA3_8B, **({"layers": args.layers} if args.layers else {}))
    work_parent = Path(args.workdir).resolve() if args.workdir else None
    if work_parent:
        work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=work_parent))
    free = shutil.disk_usage(work).free
    if disk_needed(shape) > free and not args.tiny:
        shutil.rmtree(work, ignore_errors=True)
        print(f"gpu_check: needs {disk_needed(shape) / 1e9:.0f} GB free under {work.parent}, has {free / 1e9:.0f} GB; "
              f"--layers {largest_layers(shape, free)} fits (or --workdir elsewhere)", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_datasets"))
    started = time.perf_counter()
    result: dict[str, Any] = {
        "device": device, "tiny": args.tiny, "shape": asdict(shape), "parameters": shape.parameters(),
        "model_bytes": shape.parameters() * 2, "versions": versions(),
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        log(f"writing base + 2 experts: {shape.layers} layers, {shape.parameters() / 1e6:,.1f}M parameters each, "
            f"bf16, drawn on {device}, in {work}")
        with gpu_peak(device) as create:
            models = write_models(work / "models", shape, device)
        result["create"] = create
        log(f"  {create['seconds']:.1f}s")
        result["merges"] = {}
        for method in METHODS:
            out = work / "merged" / method
            log(f"merging with {method} on {device}")
            result["merges"][method] = merge(method, models, out, device)
            m = result["merges"][method]
            log(f"  {m['seconds']:.1f}s, peak GPU {m.get('peak_gpu_mib', 0) / 1024:.1f} GiB, "
                f"{m['tensors']} tensors, ok={m['ok']}")
            if method != EVALUATED and not args.keep:
                shutil.rmtree(out)  # disk: only one merged model at a time
        log(f"lm-eval ({TASK}, hf backend) on the {EVALUATED} merge")
        tasks_dir = write_task(work / "tasks", args.docs)
        result["eval"] = evaluate(work / "merged" / EVALUATED, tasks_dir, work / "harness_results", device,
                                  args.batch_size)
        log(f"  {result['eval']['seconds']:.1f}s, acc={result['eval']['acc']}")
        result["total_seconds"] = time.perf_counter() - started
        result["ok"] = all(m["ok"] for m in result["merges"].values()) and result["eval"]["acc"] is not None
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        venv = os.environ.get(REEXEC_ENV)
        if venv and not args.keep:
            shutil.rmtree(venv, ignore_errors=True)
    out_path = Path(args.out) if args.out else REPO / "benchmarks" / "results" / (
        "gpu_check_tiny.json" if args.tiny else "gpu_check.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print_summary(result, out_path)
    return 0 if result["ok"] else 1


def print_summary(result: dict[str, Any], out_path: Path) -> None:
    gpu = f" ({result['gpu']})" if result["gpu"] else ""
    print(f"\ngpu_check on {result['device']}{gpu}: {result['shape']['layers']} layers, "
          f"{result['parameters'] / 1e6:,.1f}M parameters per model")
    rows: list[tuple[str, float, Any, Any]] = [("create 3 models", result["create"]["seconds"],
                                                result["create"].get("peak_gpu_mib"), None)]
    for method, m in result["merges"].items():
        rows.append((f"merge {method}", m["seconds"], m.get("peak_gpu_mib"), m["ok"]))
    e = result["eval"]
    rows.append((f"lm-eval {e['task']}", e["seconds"], e.get("peak_gpu_mib"), e["acc"]))
    print(f"{'step':28s} {'seconds':>9s} {'peak GPU GiB':>13s}  result")
    for name, seconds, gpu_mib, ok in rows:
        mem = "-" if gpu_mib is None else f"{gpu_mib / 1024:.1f}"
        print(f"{name:28s} {seconds:9.2f} {mem:>13s}  {'' if ok is None else ok}")
    print(f"total {result['total_seconds']:.1f}s; ok={result['ok']}; wrote {out_path}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "mergekit", "lm_eval", "transformers", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "?"
    return out


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare-wheels", metavar="DIR", type=Path,
                        help="download the dependencies (torch excluded) into DIR, then stop")
    parser.add_argument("--wheels", metavar="DIR", type=Path, help="install the dependencies from DIR first")
    parser.add_argument("--install", choices=("venv", "user"), default="venv",
                        help="where --wheels installs: a temporary venv seeing the system torch, or the user site")
    parser.add_argument("--tiny", action="store_true", help="same flow on the CPU with tiny Llama shapes")
    parser.add_argument("--layers", type=int, default=0, help="decoder layers (default: 32; --tiny: 2)")
    parser.add_argument("--docs", type=int, default=100, help="items in the lm-eval task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", help="where models are written (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the models and the venv")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/gpu_check[_tiny].json)")
    args = parser.parse_args(argv)
    if args.prepare_wheels:
        return prepare_wheels(args.prepare_wheels)
    if args.wheels:
        return install_wheels(args.wheels, args.install, argv)
    return run_check(args)


if __name__ == "__main__":
    raise SystemExit(main())
