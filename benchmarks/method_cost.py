"""Real-shape merge cost: every merge method on one Llama-3-8B decoder layer, on the same tensors.

One decoder layer of Llama-3-8B (q_proj/o_proj 4096x4096, k_proj/v_proj 1024x4096,
gate_proj/up_proj 14336x4096, down_proj 4096x14336, two 4096 RMSNorm vectors), a synthetic base
and K expert task vectors, merged tensor by tensor with mergekit's ``merge_state_dicts`` (the
kernels ``run_merge`` uses) with mergepipe's catalogue defaults, for K = 2 and K = 8 (K = 2 uses
the first two of the eight experts). Prints wall time per method and its ratio to TIES, the
largest working set (peak RSS above what was resident before the call), and the extrapolation to
a full 8B merge:

    T_8B = 32 * T_layer + (128256 / R) * (T_embed(R) + T_lm_head(R)) + T_norm

where ``embed_tokens`` and ``lm_head`` are timed on their first R = 4096 rows (every method
treats vocabulary rows independently or, for SVD-type methods, costs O(rows * 4096^2) once rows
exceed 4096, so their cost is linear in rows) and ``T_norm`` is the final RMSNorm vector.

Synthetic task vectors. Fine-tuning deltas of LLMs are effectively low-rank with a heavy tail:
a few directions carry most of the energy (LoRA works; TSV-Merge keeps ~3% of the rank per task)
and the rest is a dense full-rank remainder. Each expert's delta for an ``out x in`` matrix is

    tau = c * (U diag(sigma) V^T + N),   sigma_k = k^-0.75 for k = 1..r,  r = min(out, in) / 16

with U (out x r), V (in x r) Gaussian with columns of unit expected norm (nearly orthonormal at
these sizes), N dense Gaussian noise scaled so the low-rank part holds 85% of the Frobenius
energy and the tail 15%, and c such that the per-element RMS of tau is 1e-3 (SFT deltas of
7-8B models lie mostly within +-0.005, as the DARE paper reports) on base weights of RMS 0.02.
Experts are independent draws (different tasks). Vectors (norms) get dense N(0, 1e-3) deltas
on a base of 1 + N(0, 0.05). Base and experts are stored in bfloat16, as real checkpoints are,
so every delta is what bf16 rounding leaves (a few per cent of entries are exactly zero, as in
real bf16 fine-tunes). Generation is deterministic (one generator seed per tensor and expert)
and costs two thin matrix products per matrix.

Time budgets. Any (method, K, tensor) is first run at 1/8 of the tensor's dims; unless that
run shows it fits ``--budget`` even with cubic scaling, it is run at 1/4 too, and the fitted
exponent ``p`` (t ~ size^p, clamped to [1, 3]) predicts the full-size time. If the prediction exceeds
``--budget`` seconds the full-size run is skipped and the prediction is reported, flagged
``size-fit`` (the exact bilateral solver's 14336x14336 eigendecompositions are the case this is
for). ``--measure`` names the methods that are always measured at full size (default: TIES, the
reference, and bilateral_consensus, so their ratio is never an estimate; a probe at 1/8 size
would mislead for it anyway, as a matrix whose smaller side fits its rank budget is solved in
full). Methods with an iteration-count parameter (e.g. WUDI's Adam steps) are timed at full size
with a few iterations and extrapolated linearly to their default count, flagged ``iter-fit``.
``--budget inf --full-iterations`` measures everything; ``--skip exact`` leaves the exact solver
out.

    environments/main/bin/python benchmarks/method_cost.py                  # full size, K=2,8
    environments/main/bin/python benchmarks/method_cost.py --scale 0.125    # quick check
    environments/main/bin/python benchmarks/method_cost.py --methods ties,bilateral_consensus

Writes benchmarks/results/method_cost.json and the method-cost table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from doc_sections import replace_section  # noqa: E402
from mergekit.merge_methods import merge_state_dicts  # noqa: E402

import mergepipe.merge.methods  # noqa: E402,F401  (registers mergepipe's methods with mergekit)
from mergepipe.core.atomic import write_json  # noqa: E402
from mergepipe.merge.catalogue import MethodInfo, catalogue, resolve_parameters  # noqa: E402

# ---------------------------------------------------------------- shapes and spectrum

HIDDEN, INTERMEDIATE, KV, VOCAB, LAYERS = 4096, 14336, 1024, 128256, 32
VOCAB_ROWS = 4096  # rows of embed_tokens / lm_head actually timed (scaled by --scale)
ALPHA = 0.75  # sigma_k ~ k^-alpha
RANK_DIVISOR = 16  # r = min(out, in) / 16
LOW_RANK_ENERGY = 0.85  # share of ||tau||_F^2 in the low-rank part; the dense tail has the rest
DELTA_RMS = 1e-3
BASE_RMS = 0.02
NORM_BASE_STD = 0.05

# (name, out, in) in Llama order; a vector has in = 0.
LAYER = "model.layers.0."
LAYER_TENSORS: tuple[tuple[str, int, int], ...] = (
    (LAYER + "input_layernorm.weight", HIDDEN, 0),
    (LAYER + "self_attn.q_proj.weight", HIDDEN, HIDDEN),
    (LAYER + "self_attn.k_proj.weight", KV, HIDDEN),
    (LAYER + "self_attn.v_proj.weight", KV, HIDDEN),
    (LAYER + "self_attn.o_proj.weight", HIDDEN, HIDDEN),
    (LAYER + "post_attention_layernorm.weight", HIDDEN, 0),
    (LAYER + "mlp.gate_proj.weight", INTERMEDIATE, HIDDEN),
    (LAYER + "mlp.up_proj.weight", INTERMEDIATE, HIDDEN),
    (LAYER + "mlp.down_proj.weight", HIDDEN, INTERMEDIATE),
)
VOCAB_TENSORS: tuple[tuple[str, int, int], ...] = (
    ("model.embed_tokens.weight", VOCAB_ROWS, HIDDEN),
    ("lm_head.weight", VOCAB_ROWS, HIDDEN),
    ("model.norm.weight", HIDDEN, 0),
)

# Methods timed, in table order: (label, mergekit name, extra parameters).
DEFAULT_METHODS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("task_arithmetic", "task_arithmetic", {}),
    ("ties", "ties", {}),
    ("dare_ties", "dare_ties", {}),
    ("della", "della", {}),
    ("breadcrumbs_ties", "breadcrumbs_ties", {}),
    ("tsv", "tsv", {}),
    ("iso_c", "iso_c", {}),
    ("iso_cts", "iso_cts", {}),
    ("wudi", "wudi", {}),
    ("bilateral_consensus", "bilateral_consensus", {}),
    ("bilateral_consensus[exact]", "bilateral_consensus", {"solver": "exact"}),
    ("bilateral_consensus[signal]", "bilateral_consensus", {"weighting": "signal", "signal_output_weight": 0.5}),
    ("bilateral_consensus[energy]", "bilateral_consensus", {"weighting": "energy"}),
)
ALIASES = {"exact": "bilateral_consensus[exact]", "signal": "bilateral_consensus[signal]",
           "energy": "bilateral_consensus[energy]"}
REFERENCE = "ties"
ITERATION_PARAMETERS = ("iterations", "iters", "num_iterations", "n_iter", "max_iter", "steps",
                        "num_steps", "n_steps", "epochs")
PROBE_FRACTIONS = (0.125, 0.25)

BEGIN = "<!-- method_cost:begin -->"
END = "<!-- method_cost:end -->"
SECTION = "## Real-shape merge cost (`benchmarks/method_cost.py`)"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def scaled(n: int, scale: float) -> int:
    return max(8, round(n * scale / 8) * 8)


def seed_of(*parts: object) -> int:
    text = "|".join(str(p) for p in parts)
    return sum((i + 1) * ord(c) for i, c in enumerate(text)) % (2**31 - 1)


def base_tensor(name: str, out: int, inn: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed_of("base", name, out, inn))
    if inn == 0:
        return 1.0 + NORM_BASE_STD * torch.randn(out, generator=gen)
    return BASE_RMS * torch.randn(out, inn, generator=gen)


def task_vector(name: str, out: int, inn: int, expert: int) -> torch.Tensor:
    """One expert's fp32 delta: low-rank power-law spectrum plus a dense tail (module docstring)."""
    gen = torch.Generator().manual_seed(seed_of("delta", name, out, inn, expert))
    if inn == 0:
        return DELTA_RMS * torch.randn(out, generator=gen)
    r = max(1, min(out, inn) // RANK_DIVISOR)
    sigma = torch.arange(1, r + 1, dtype=torch.float32).pow(-ALPHA)
    u = torch.randn(out, r, generator=gen) / math.sqrt(out)
    v = torch.randn(inn, r, generator=gen) / math.sqrt(inn)
    low = (u * sigma) @ v.T  # ||low||_F^2 ~ sum sigma^2
    low_energy = float(sigma.square().sum())
    tail_energy = low_energy * (1 - LOW_RANK_ENERGY) / LOW_RANK_ENERGY
    low.add_(torch.randn(out, inn, generator=gen), alpha=math.sqrt(tail_energy / (out * inn)))
    total = low_energy + tail_energy
    return low.mul_(DELTA_RMS * math.sqrt(out * inn / total))


def make_inputs(name: str, out: int, inn: int, experts: int) -> list[torch.Tensor]:
    """[base, expert_0, ..., expert_{K-1}] in bfloat16; expert_i = bf16(base + tau_i)."""
    base = base_tensor(name, out, inn)
    tensors = [base.to(torch.bfloat16)]
    for i in range(experts):
        tensors.append((base + task_vector(name, out, inn, i)).to(torch.bfloat16))
    return tensors


def spectrum_check(out: int, inn: int) -> dict[str, float]:
    """Measured properties of one synthetic delta (as stored: bf16 expert minus bf16 base)."""
    base = base_tensor("check", out, inn)
    tau = (base + task_vector("check", out, inn, 0)).to(torch.bfloat16).float() - base.to(torch.bfloat16).float()
    s = torch.linalg.svdvals(tau)
    energy = s.square().cumsum(0) / s.square().sum()
    r = max(1, min(out, inn) // RANK_DIVISOR)
    return {
        "shape": [out, inn],
        "rms": float(tau.square().mean().sqrt()),
        "exact_zero_fraction": float((tau == 0).float().mean()),
        "energy_in_top_rank_r": float(energy[r - 1]),
        "energy_in_top_1pct": float(energy[max(0, min(out, inn) // 100 - 1)]),
        "rank_for_90pct_energy": int((energy < 0.9).sum()) + 1,
    }


# ---------------------------------------------------------------- timing


def exact_rss() -> None:
    """Make glibc return every large block to the OS on free, so RSS follows live tensors.

    Otherwise freed buffers are kept for reuse and a method's working set hides in memory an
    earlier call left resident.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: blocks >= 1 MiB are mmapped
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class PeakRss:
    """Samples this process's RSS in a thread; ``peak - start`` is the call's working set."""

    def __init__(self, interval: float = 0.02) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self.proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def working_mib(self) -> float:
        return (self.peak - self.start) / 2**20


@dataclass
class Method:
    label: str
    info: MethodInfo
    extra: dict[str, Any]
    iteration_parameter: str | None = None
    iteration_default: int | None = None

    def parameters(self, k: int, iterations: int | None = None) -> tuple[dict[str, Any], str]:
        shared, per_model = resolve_parameters(self.info, dict(self.extra), k, f"method_cost.{self.label}")
        params: dict[str, Any] = dict(shared)
        for name, values in per_model.items():
            params[name] = {f"e{i}": v for i, v in enumerate(values)}
        if iterations is not None and self.iteration_parameter:
            params[self.iteration_parameter] = iterations
        text = ", ".join(f"{n}={_short(v)}" for n, v in sorted(params.items())) or "(none)"
        return params, text


def _short(value: Any) -> str:
    if isinstance(value, dict):
        values = set(value.values())
        return _short(next(iter(values))) if len(values) == 1 else str(sorted(value.values()))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def time_merge(method: Method, name: str, tensors: list[torch.Tensor], k: int, dtype: torch.dtype,
               iterations: int | None = None) -> tuple[float, float]:
    """Wall seconds and working set (MiB) of one merge_state_dicts call on one tensor."""
    models = {"base": {name: tensors[0]}}
    models.update({f"e{i}": {name: tensors[1 + i]} for i in range(k)})
    params, _ = method.parameters(k, iterations)
    torch.manual_seed(0)  # DARE / DELLA masks
    gc.collect()
    with PeakRss() as rss, torch.no_grad():
        start = time.perf_counter()
        merged = merge_state_dicts(models, method.info.name, parameters=params, base="base", dtype=dtype,
                                   out_dtype=torch.bfloat16)
        seconds = time.perf_counter() - start
    if name not in merged or merged[name].shape != tensors[0].shape:
        raise RuntimeError(f"{method.label}: no merged {name}")
    del merged
    return seconds, rss.working_mib


@dataclass
class Cell:
    """One (method, K, tensor) measurement."""

    seconds: float
    working_mib: float | None
    how: str  # "measured" | "size-fit p=..." | "iter-fit a+b*n"


@dataclass
class Bench:
    args: argparse.Namespace
    methods: list[Method]
    dtype: torch.dtype
    cells: dict[tuple[str, int, str], Cell] = field(default_factory=dict)

    def measure(self, method: Method, name: str, inn: int, k: int,
                full: Callable[[], list[torch.Tensor]], probe: Callable[[float], list[torch.Tensor]]) -> Cell:
        args = self.args
        if method.iteration_parameter and method.iteration_default and not args.full_iterations:
            n1, n2 = args.probe_iterations, 2 * args.probe_iterations
            if n2 < method.iteration_default:
                # Large matrices: the iterations are timed at 1/4 of the dims and scaled by the
                # cube of the size (an iteration of WUDI costs K * out * in * in flops).
                frac = 1.0 if not inn or inn * PROBE_FRACTIONS[1] < 256 else PROBE_FRACTIONS[1]
                inputs = full if frac == 1.0 else (lambda: probe(frac))
                t1, _ = time_merge(method, name, inputs(), k, self.dtype, n1)
                t2, mib = time_merge(method, name, inputs(), k, self.dtype, n2)
                slope = max(0.0, (t2 - t1) / (n2 - n1))
                fixed = max(0.0, t1 - slope * n1)
                seconds = (fixed + slope * method.iteration_default) / frac**3
                where = "" if frac == 1.0 else f" at 1/{round(1 / frac)} size, x size^3"
                return Cell(seconds, mib if frac == 1.0 else None,
                            f"iter-fit {n1},{n2}->{method.iteration_default}{where}")
        if inn and math.isfinite(args.budget) and method.label not in args.measure.split(","):
            small, large = PROBE_FRACTIONS
            # Fastest of a few repeats: on a shared CPU, slowdowns are one-sided noise.
            probes = [min(time_merge(method, name, probe(small), k, self.dtype)[0] for _ in range(3))]
            if probes[0] * (1 / small) ** 3 <= args.budget:  # under budget even if cubic: just measure
                seconds, mib = time_merge(method, name, full(), k, self.dtype)
                return Cell(seconds, mib, "measured")
            probes.append(min(time_merge(method, name, probe(large), k, self.dtype)[0] for _ in range(2)))
            ratio = max(probes[1], 1e-6) / max(probes[0], 1e-6)
            p = math.log(ratio) / math.log(PROBE_FRACTIONS[1] / PROBE_FRACTIONS[0])
            p = min(3.0, max(1.0, p))
            predicted = probes[1] * (1 / PROBE_FRACTIONS[1]) ** p
            if predicted > args.budget:
                return Cell(predicted, None, f"size-fit p={p:.2f}")
        seconds, mib = time_merge(method, name, full(), k, self.dtype)
        return Cell(seconds, mib, "measured")

    def run(self, tensors: list[tuple[str, int, int]], experts: list[int],
            after_tensor: Callable[[], None] = lambda: None) -> None:
        kmax = max(experts)
        for name, out, inn in tensors:
            cache: list[list[torch.Tensor]] = []

            def full(name: str = name, out: int = out, inn: int = inn,
                     cache: list[list[torch.Tensor]] = cache) -> list[torch.Tensor]:
                if not cache:
                    start = time.perf_counter()
                    cache.append(make_inputs(name, out, inn, kmax))
                    log(f"  generated {name} {out}x{inn} (base + {kmax} experts, bf16) in "
                        f"{time.perf_counter() - start:.1f}s")
                return cache[0]

            probes: dict[float, list[torch.Tensor]] = {}

            def probe(frac: float, name: str = name, out: int = out, inn: int = inn,
                      probes: dict[float, list[torch.Tensor]] = probes) -> list[torch.Tensor]:
                if frac not in probes:
                    probes[frac] = make_inputs(name, max(8, int(out * frac)), max(8, int(inn * frac)), kmax)
                return probes[frac]

            for k in experts:
                for method in self.methods:
                    cell = self.measure(method, name, inn, k, full, probe)
                    self.cells[(method.label, k, name)] = cell
                    mem = f"{cell.working_mib:7.0f} MiB" if cell.working_mib is not None else "      - MiB"
                    log(f"  K={k} {method.label:28s} {short_name(name):24s} {cell.seconds:9.3f}s {mem}  "
                        f"{cell.how}")
            cache.clear()
            probes.clear()
            gc.collect()
            after_tensor()


def short_name(name: str) -> str:
    return name.removeprefix(LAYER).removeprefix("model.")


# ---------------------------------------------------------------- methods


def select_methods(args: argparse.Namespace) -> tuple[list[Method], list[str]]:
    methods = catalogue()
    wanted = [ALIASES.get(m, m) for m in args.methods.split(",")] if args.methods else None
    skip = {ALIASES.get(m, m) for m in args.skip.split(",") if m}
    chosen: list[Method] = []
    notes: list[str] = []
    for label, mk_name, extra in DEFAULT_METHODS:
        if (wanted is not None and label not in wanted) or label in skip:
            if label in skip:
                notes.append(f"{label}: skipped (--skip)")
            continue
        info = methods.get(mk_name)
        if info is None:
            notes.append(f"{label}: skipped, no merge method {mk_name!r} is registered")
            continue
        missing = [p for p in extra if info.parameter(p) is None]
        if missing:
            notes.append(f"{label}: skipped, {mk_name} has no parameter {', '.join(missing)} "
                         "(its default is then the only solver)")
            continue
        method = Method(label, info, extra)
        for p in info.parameters:
            if p.name in ITERATION_PARAMETERS and isinstance(p.default, int) and not isinstance(p.default, bool):
                method.iteration_parameter, method.iteration_default = p.name, p.default
        chosen.append(method)
    if REFERENCE not in [m.label for m in chosen]:
        notes.append(f"{REFERENCE} is not among the methods: ratios are not computed")
    return chosen, notes


# ---------------------------------------------------------------- report


def summarise(bench: Bench, experts: list[int], vocab_factor: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    layer_names = [n for n, _, _ in LAYER_TENSORS]
    vocab_names = [n for n, _, _ in VOCAB_TENSORS]
    for method in bench.methods:
        per_k: dict[str, Any] = {}
        for k in experts:
            cells = {n: bench.cells[(method.label, k, n)] for n in layer_names + vocab_names
                     if (method.label, k, n) in bench.cells}
            layer = sum(cells[n].seconds for n in layer_names if n in cells)
            vocab = sum(cells[n].seconds for n in vocab_names[:2] if n in cells)
            final_norm = cells[vocab_names[2]].seconds if vocab_names[2] in cells else 0.0
            mibs = [c.working_mib for c in cells.values() if c.working_mib is not None]
            per_k[str(k)] = {
                "parameters": method.parameters(k)[1],
                "layer_seconds": layer,
                "full_8b_seconds": LAYERS * layer + vocab_factor * vocab + final_norm,
                "vocab_seconds_timed_rows": vocab,
                "peak_working_mib": max(mibs) if mibs else None,
                "extrapolated": flagged_summary(cells),
                "per_tensor": {short_name(n): {"seconds": c.seconds, "working_mib": c.working_mib, "how": c.how}
                               for n, c in cells.items()},
            }
        out[method.label] = per_k
    ref = out.get(REFERENCE)
    for per_k in out.values():
        for k, row in per_k.items():
            if ref and ref[k]["layer_seconds"] > 0:
                row["ratio_to_ties_layer"] = row["layer_seconds"] / ref[k]["layer_seconds"]
                row["ratio_to_ties_8b"] = row["full_8b_seconds"] / ref[k]["full_8b_seconds"]
            else:
                row["ratio_to_ties_layer"] = row["ratio_to_ties_8b"] = None
    return out


def flagged_summary(cells: dict[str, Cell]) -> list[str]:
    """'how: tensors' per extrapolation kind ('all tensors' when every tensor is)."""
    by_how: dict[str, list[str]] = {}
    for n, c in cells.items():
        if c.how != "measured":
            by_how.setdefault(c.how, []).append(short_name(n))
    return [f"{how}: {'all tensors' if len(names) == len(cells) else ', '.join(names)}"
            for how, names in sorted(by_how.items())]


def fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else (f"{r:.2f}x" if r < 10 else f"{r:.0f}x")


def table_rows(results: dict[str, Any], experts: list[int]) -> list[list[str]]:
    rows = []
    for label, per_k in results.items():
        row = [label]
        flagged = False
        for k in experts:
            r = per_k[str(k)]
            mark = "*" if r["extrapolated"] else ""
            flagged |= bool(mark)
            mib = "-" if r["peak_working_mib"] is None else f"{r['peak_working_mib'] / 1024:.1f}"
            row += [fmt_seconds(r["layer_seconds"]) + mark, fmt_ratio(r["ratio_to_ties_layer"]),
                    fmt_seconds(r["full_8b_seconds"]) + mark, mib]
        rows.append(row)
    return rows


def header(experts: list[int]) -> list[str]:
    cols = ["method"]
    for k in experts:
        cols += [f"K={k} layer", f"K={k} /TIES", f"K={k} 8B", f"K={k} GiB"]
    return cols


def print_table(results: dict[str, Any], experts: list[int]) -> None:
    cols = header(experts)
    rows = table_rows(results, experts)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    experts = s["experts"]
    lines = [BEGIN, "<!-- generated by benchmarks/method_cost.py; edits between these markers are overwritten -->", ""]
    size = "full Llama-3-8B shapes" if s["scale"] == 1 else f"**scaled-down check** (all dims x{s['scale']})"
    lines.append(f"{size}; {s['threads']} torch threads on {s['machine']}; inputs bf16, working dtype "
                 f"{s['dtype']}; {s['date']}. Times per decoder layer; 8B = 32 layers + embed/lm_head "
                 f"({s['vocab']} x {s['hidden']}, timed on {s['vocab_rows']} rows, scaled x{s['vocab_factor']:.2f}) "
                 "+ final norm. GiB = largest working set of one call (peak RSS above the inputs).")
    lines += ["", "| " + " | ".join(header(experts)) + " |", "|" + "---|" * len(header(experts))]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result["methods"], experts)]
    flagged = [(label, k, r["extrapolated"]) for label, per_k in result["methods"].items()
               for k, r in per_k.items() if r["extrapolated"]]
    if flagged:
        lines += ["", "\\* extrapolated, not measured at full size (see `--budget`, `--full-iterations`):"]
        lines += [f"- {label}, K={k}: {'; '.join(how)}" for label, k, how in flagged]
    if result["notes"]:
        lines += ["", "Not timed:"] + [f"- {n}" for n in result["notes"]]
    lines += ["", "Parameters: " + "; ".join(f"{label}: {per_k[str(experts[0])]['parameters']}"
                                             for label, per_k in result["methods"].items()) + ".", "", END]
    return "\n".join(lines)


def update_doc(path: Path, section: str) -> None:
    replace_section(path, BEGIN, END, section, SECTION)


# ---------------------------------------------------------------- main


@contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", default="2,8", help="comma-separated K values (default 2,8)")
    parser.add_argument("--methods", default="", help="comma-separated labels (default: all; 'exact' = "
                        "bilateral_consensus with solver=exact)")
    parser.add_argument("--skip", default="", help="labels to leave out, e.g. 'exact'")
    parser.add_argument("--scale", type=float, default=1.0, help="factor on every dimension (0.125 for a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="working dtype passed to mergekit, as a config's 'dtype:' (inputs are bf16)")
    parser.add_argument("--measure", default="ties,bilateral_consensus",
                        help="methods always measured at full size, whatever --budget (the reference "
                             "and the method under test: their ratio is never an estimate)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds: a (method, K, tensor) predicted slower than this is size-extrapolated "
                             "(inf: always measure)")
    parser.add_argument("--probe-iterations", type=int, default=3,
                        help="iterative methods are timed at N and 2N iterations and extrapolated")
    parser.add_argument("--full-iterations", action="store_true", help="run iterative methods to their default count")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/method_cost.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs/benchmarks.md")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    experts = sorted({int(k) for k in args.experts.split(",")})
    dtype = getattr(torch, args.dtype)
    methods, notes = select_methods(args)
    for n in notes:
        log(n)
    if not methods:
        log("no method to time")
        return 1
    sc = args.scale
    layer = [(n, scaled(o, sc), scaled(i, sc) if i else 0) for n, o, i in LAYER_TENSORS]
    vocab = [(n, scaled(o, sc), scaled(i, sc) if i else 0) for n, o, i in VOCAB_TENSORS]
    vocab_total = scaled(VOCAB, sc)
    vocab_factor = vocab_total / vocab[0][1]
    started = time.perf_counter()
    exact_rss()
    with threads(args.threads):
        log(f"spectrum check on {scaled(1024, sc)}x{scaled(HIDDEN, sc)} delta")
        check = spectrum_check(scaled(1024, sc), scaled(HIDDEN, sc))
        log(f"  {check}")
        bench = Bench(args, methods, dtype)

        def build(complete: bool) -> dict[str, Any]:
            return {
                "complete": complete,
                "settings": {
                    "scale": sc, "experts": experts, "threads": args.threads, "dtype": args.dtype,
                    "budget_seconds": args.budget, "probe_iterations": args.probe_iterations,
                    "full_iterations": args.full_iterations, "hidden": scaled(HIDDEN, sc),
                    "intermediate": scaled(INTERMEDIATE, sc), "kv": scaled(KV, sc), "vocab": vocab_total,
                    "vocab_rows": vocab[0][1], "vocab_factor": vocab_factor, "layers": LAYERS,
                    "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores",
                    "load_average": list(os.getloadavg()),
                    "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                    "wall_seconds": time.perf_counter() - started,
                    "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                },
                "spectrum": {"model": "tau = c (U diag(k^-alpha) V^T + N), bf16-rounded", "alpha": ALPHA,
                             "rank": f"min(out, in) / {RANK_DIVISOR}", "low_rank_energy": LOW_RANK_ENERGY,
                             "delta_rms": DELTA_RMS, "base_rms": BASE_RMS, "check": check},
                "formula": "T_8B = 32 * T_layer + (vocab / vocab_rows) * (T_embed + T_lm_head) + T_final_norm",
                "methods": summarise(bench, experts, vocab_factor),
                "notes": notes,
            }

        log(f"timing {len(methods)} methods x K={experts} on one decoder layer + vocab rows (scale {sc})")
        # Partial results after every tensor ("complete": false), so a long run can be read early.
        bench.run(layer + vocab, experts, after_tensor=lambda: write_json(args.out, build(False)))
    result = build(True)
    results = result["methods"]
    write_json(args.out, result)
    print()
    print_table(results, experts)
    print(f"\n* = contains extrapolated cells; wrote {args.out}")
    if not args.no_doc:
        update_doc(args.doc, markdown(result))
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
