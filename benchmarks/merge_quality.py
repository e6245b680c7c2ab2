"""Merge-quality benchmark: how much of each expert's skill survives a merge, per method.

Setting 1 (disjoint skills): experts fine-tuned from the zoo base on one zoo skill each, for
K = 2, 4 and 8 experts (the first K skills in the zoo's order) and several expert fine-tuning
seeds. Setting 2 (overlapping skills): four experts, each fine-tuned on a mixture of 2-3
skills, every skill covered by two experts, like instruction-tuned variants that overlap.
Both use the zoo's expert recipe, under which every method collapses from K = 4 on.

The informative regime repeats setting 1 with experts whose task vectors stay small, as those
of real LLM fine-tunes do, so that merging works in principle and methods can be ranked:

* ``lora``: every skill's expert is a PEFT LoRA adapter on the zoo base (all attention and MLP
  projections), materialised into a full state dict (base + B·A·alpha/r) and merged as a full
  task vector;
* ``lora8``: the same LoRA recipe at rank 8 (alpha 16), the low end of the LoRA track's ranks:
  eight adapters fill half of every 128-wide matrix instead of all of it;
* ``gentle``: full fine-tunes with a gentler recipe (see ``GENTLE`` and docs/benchmarks.md for
  the pilot that chose it);
* ``wide``: the ``lora`` experts on a wider base (``WIDE_SHAPE``), trained by this script with
  the zoo's own base schedule, corpus and seed (cached like the experts), where four adapters
  leave more room to each other than in the 128-wide zoo base.

Metric per task: normalised accuracy = exact match of the merged model / exact match of the
expert of that task (in setting 2: the best expert trained on that skill). Exact match is the
zoo's teacher-forced check (``mergepipe.zoo.training.exact_match``), which gives the same
verdict as greedy decoding, on the zoo's 200 held-out test items per skill.

Every merge is a real mergekit merge (``merge_state_dicts`` with the registered methods, the
same kernels ``run_merge`` uses), with the fixed parameters in ``METHODS``. Merge time is the
wall time of that in-memory merge (no disk I/O; fastest of ``--timing-repeats``, median over seeds).

Writes benchmarks/results/merge_quality.json (zoo recipe: disjoint and overlap), a sibling
merge_quality_<regime>.json per informative regime, and per regime it ran a block of the
merge-quality section of docs/benchmarks.md and a plot (docs/benchmark_merge_quality.png for the
zoo recipe, docs/benchmark_merge_quality_<regime>.png); other regimes' blocks are kept. Experts are cached
(keyed by the base weights' digest and the recipe; clear the cache after changing the zoo's
skills), so re-runs only redo merges.

    environments/main/bin/python benchmarks/merge_quality.py            # full run
    environments/main/bin/python benchmarks/merge_quality.py --seeds 0 --experts 2,4
    environments/main/bin/python benchmarks/merge_quality.py --settings lora --seeds 0

Only a run of the published plan (seeds 0-2, K = 2, 4, 8, every method, the fixed recipes)
rewrites docs/benchmarks.md and the plots; any other run, such as a check on held-out seeds
(``--settings disjoint --experts 2 --seeds 5,6,7,8``), writes its tables, results and plots to
benchmarks/results/checks/ unless ``--doc`` / ``--out`` / ``--plot`` say otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from doc_sections import replace_section  # noqa: E402
from mergekit.merge_methods import merge_state_dicts, registry  # noqa: E402
from mergekit.merge_methods.base import BasePolicy  # noqa: E402

import mergepipe.merge.methods  # noqa: E402  (registers mergepipe's own methods)
from mergepipe.core.atomic import write_json  # noqa: E402
from mergepipe.core.paths import cache_dir  # noqa: E402
from mergepipe.zoo.build import part_seed, train_base  # noqa: E402
from mergepipe.zoo.corpus import Sampler, Streams, mixture, test_items  # noqa: E402
from mergepipe.zoo.recipe import RECIPE  # noqa: E402
from mergepipe.zoo.skills import SKILLS, skill  # noqa: E402
from mergepipe.zoo.training import ModelShape, Schedule, exact_match, new_model, train  # noqa: E402

ZOO_SEED = 0  # the zoo build (base, corpus, test split); expert seeds vary the fine-tuning only


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass(frozen=True)
class Method:
    label: str
    mergekit_name: str
    parameters: Callable[[int], dict[str, Any]]  # K -> parameters
    described: str  # the parameters as written in the docs
    uses_base: bool = True
    randomized: bool = False


def _registered() -> dict[str, Any]:
    return {m.spec.name: m for m in registry.registered_methods()}


def _catalogue_defaults(name: str) -> dict[str, Any]:
    info = getattr(mergepipe.merge.methods, "CATALOGUE_INFO", {}).get(name, {})
    return dict(info.get("defaults", {}))


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _catalogue_method(label: str, name: str, extra: dict[str, Any] | None = None) -> Method | None:
    """A mergepipe catalogue method at its catalogue defaults (``extra`` overrides some), or
    None (with a log line) when it is not registered with mergekit yet."""
    method = _registered().get(name)
    if method is None:
        log(f"method {label}: {name} is not registered with mergekit; skipped")
        return None
    accepted = {p.name for p in method.spec.parameters}
    if extra and not set(extra) <= accepted:
        log(f"method {label}: {name} takes no parameter(s) {sorted(set(extra) - accepted)}; skipped")
        return None
    params = dict(extra or {})
    shown = {**_catalogue_defaults(name), **params}
    described = (_describe(shown) or "none") + (" (default)" if not extra else "")
    return Method(label, name, lambda k, p=params: dict(p), described,
                  uses_base=method.spec.contract.base != BasePolicy.IGNORED)


def _methods() -> tuple[Method, ...]:
    # Fixed parameters: mergepipe's catalogue defaults (src/mergepipe/methods.py), never tuned here.
    fixed = [
        Method("linear", "linear", lambda k: {"weight": 1.0 / k}, "weight=1/K (mean of experts)", uses_base=False),
        Method("task_arithmetic", "task_arithmetic", lambda k: {"weight": 1.0}, "weight=1 (lambda=1)"),
        Method("task_arithmetic_1/K", "task_arithmetic", lambda k: {"weight": 1.0 / k}, "weight=1/K"),
        Method("ties", "ties", lambda k: {"weight": 1.0, "density": 0.5}, "weight=1, density=0.5"),
        Method("dare_ties", "dare_ties", lambda k: {"weight": 1.0, "density": 0.5}, "weight=1, density=0.5",
               randomized=True),
        Method("breadcrumbs_ties", "breadcrumbs_ties", lambda k: {"weight": 1.0, "density": 0.9, "gamma": 0.01},
               "weight=1, density=0.9, gamma=0.01"),
        Method("della", "della", lambda k: {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
               "weight=1, density=0.5, epsilon=0.1", randomized=True),
    ]
    catalogue = [
        _catalogue_method(name, name) for name in ("tsv", "iso_c", "iso_cts", "wudi")
    ]
    ours = _catalogue_method(OURS, OURS)
    # The exact solver beside the default one, and the previous version (output side at full
    # weight, no per-expert normalisation) as an ablation.
    exact = _catalogue_method(OURS_EXACT, OURS, {"solver": "exact"}) if ours else None
    symmetric = _catalogue_method(OURS_SYMMETRIC, OURS, {"output_weight": 1.0, "normalize": False,
                                                         "weighting": "energy"}) if ours else None
    # The default's two weightings on every matrix: energy (the default before weighting: auto,
    # what auto takes on full fine-tunes) and signal at output weight 0.5 (each signal direction
    # weighted by sigma / sigma_1; what auto takes on adapters, at output weight 0.25).
    energy = _catalogue_method(OURS_ENERGY, OURS, {"weighting": "energy"}) if ours else None
    signal = (_catalogue_method(OURS_SIGNAL, OURS, {"weighting": "signal", "signal_output_weight": 0.5})
              if ours else None)
    # The default without the presence factor of its energy-weighted matrices (the default before it).
    unscaled = _catalogue_method(OURS_UNSCALED, OURS, {"presence_exponent": 0.0}) if ours else None
    return tuple(m for m in (*fixed, *catalogue, ours, exact, symmetric, energy, signal, unscaled) if m is not None)


OURS = "bilateral_consensus"
OURS_EXACT = "bilateral_consensus_exact"
OURS_SYMMETRIC = "bilateral_consensus_symmetric"
OURS_SIGNAL = "bilateral_consensus_signal"
OURS_ENERGY = "bilateral_consensus_energy"
OURS_UNSCALED = "bilateral_consensus_unscaled"
RIVALS = ("task_arithmetic", "ties", "dare_ties", "tsv", "iso_cts", "wudi")
METHODS: tuple[Method, ...] = _methods()

# Overlapping setting: each expert learns 2-3 skills, every skill is covered by two experts.
OVERLAP_EXPERTS: tuple[tuple[str, ...], ...] = (
    ("inc", "next"),
    ("next", "mirror", "sort"),
    ("sort", "dup"),
    ("dup", "inc", "mirror"),
)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Regime:
    """How the experts of a group of settings are fine-tuned."""

    name: str  # --settings name of its disjoint setting; results file suffix
    prefix: str  # setting names are f"{prefix}K={k}"
    kind: str  # "full" (full fine-tune) or "lora" (PEFT adapter, materialised)
    schedule: Schedule
    replay: float
    rank: int = 0
    alpha: int = 0
    frozen: tuple[str, ...] = ()  # full fine-tunes: parameters whose name contains one of these stay fixed
    targets: tuple[str, ...] = LORA_TARGETS  # LoRA experts: the adapted projections
    rival_margin: float = 3.0  # target: ours - best rival at K = 4 and 8, in points
    shape: ModelShape = RECIPE.shape  # the base's shape: the zoo's, or a wider one trained here
    informative: bool = True  # target: task_arithmetic keeps >= 50 % at K = 4

    def key(self) -> str:
        s = self.schedule
        core = f"{s.steps}_{s.lr:g}_{s.optimizer}_{self.replay:g}" + "".join(f"_no-{f}" for f in self.frozen)
        if self.kind != "lora":
            return core
        adapted = "" if self.targets == LORA_TARGETS else "_on-" + "-".join(self.targets)
        return f"lora_r{self.rank}_a{self.alpha}_{core}{adapted}"

    def described(self) -> str:
        s = self.schedule
        what = (f"LoRA rank {self.rank}, alpha {self.alpha} on {', '.join(self.targets)}, materialised; "
                if self.kind == "lora" else "full fine-tunes"
                + (f" ({', '.join(self.frozen)} frozen)" if self.frozen else "") + "; ")
        return f"{what}{s.steps} steps of {s.optimizer} at lr {s.lr:g}, replay {self.replay:g}"

    def wide(self) -> bool:
        return self.shape != RECIPE.shape


# Chosen by the pilot recorded in docs/benchmarks.md (seed 0, K = 4, task_arithmetic only).
LORA = Regime("lora", "lora ", "lora", replace(RECIPE.lora, steps=200, lr=1.5e-3), RECIPE.replay, rank=16, alpha=32)
GENTLE = Regime("gentle", "gentle ", "full", replace(RECIPE.expert, steps=250, lr=1e-4, optimizer="adamw"),
                RECIPE.replay)
# Twice the zoo's width (head size 64, MLP 3x hidden as in the zoo), same depth and vocabulary.
WIDE_SHAPE = ModelShape(hidden=256, layers=4, heads=4, intermediate=768)
SETTINGS = ("disjoint", "overlap", "lora", "lora8", "gentle", "wide")
REGIME_ORDER = ("zoo", "lora", "lora8", "gentle", "wide")
LORA8_RANK = 8


def zoo_regime(args: argparse.Namespace) -> Regime:
    """The zoo's expert recipe (settings disjoint and overlap), as the options set it."""
    sched = replace(RECIPE.expert, steps=args.expert_steps, lr=args.expert_lr, optimizer=args.optimizer)
    return Regime("zoo", "", "full", sched, args.replay, rival_margin=5.0, informative=False)


def lora_regime(args: argparse.Namespace) -> Regime:
    sched = replace(LORA.schedule, steps=args.lora_steps, lr=args.lora_lr)
    alpha = args.lora_alpha if args.lora_alpha else 2 * args.lora_rank
    targets = tuple(t for t in args.lora_targets.split(",") if t)
    if unknown := set(targets) - set(LORA_TARGETS):
        raise SystemExit(f"--lora-targets: unknown projection(s) {sorted(unknown)}; "
                         f"choose from {', '.join(LORA_TARGETS)}")
    return replace(LORA, schedule=sched, replay=args.lora_replay, rank=args.lora_rank, alpha=alpha,
                   targets=targets or LORA_TARGETS)


def lora8_regime(args: argparse.Namespace) -> Regime:
    """The LoRA recipe (as the --lora-* options set it, but its rank) at rank 8 on the zoo base."""
    alpha = args.lora_alpha if args.lora_alpha else 2 * LORA8_RANK
    return replace(lora_regime(args), name="lora8", prefix="lora8 ", rank=LORA8_RANK, alpha=alpha)


def gentle_regime(args: argparse.Namespace) -> Regime:
    sched = replace(GENTLE.schedule, steps=args.gentle_steps, lr=args.gentle_lr, optimizer=args.gentle_optimizer)
    frozen = tuple(f for f in args.gentle_frozen.split(",") if f)
    return replace(GENTLE, schedule=sched, replay=args.gentle_replay, frozen=frozen)


def wide_regime(args: argparse.Namespace) -> Regime:
    """The LoRA recipe (as the --lora-* options set it) on the wider base."""
    shape = replace(WIDE_SHAPE, hidden=args.wide_hidden, layers=args.wide_layers,
                    intermediate=3 * args.wide_hidden)
    if shape.hidden % shape.heads:
        raise SystemExit(f"--wide-hidden: {shape.hidden} is not a multiple of {shape.heads} heads")
    return replace(lora_regime(args), name="wide", prefix="wide ", shape=shape)


# ---------------------------------------------------------------- models


def load_base(args: argparse.Namespace, shape: ModelShape = RECIPE.shape) -> tuple[dict[str, torch.Tensor], str]:
    """The base model's weights and where they came from: ``--base``, the zoo base (built on
    first use), or for another shape a base trained here exactly as the zoo trains its own."""
    from transformers import LlamaForCausalLM

    if shape != RECIPE.shape:
        return wide_base(args, shape)
    if args.base:
        path = Path(args.base)
        if path.is_dir():
            return LlamaForCausalLM.from_pretrained(path).state_dict(), str(path)
        return torch.load(path, map_location="cpu"), str(path)
    base_dir = Path(zoo_manifest().model("base").path)
    state = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).state_dict()
    return state, f"zoo://base ({base_dir.name})"


def shape_key(shape: ModelShape) -> str:
    return f"h{shape.hidden}_l{shape.layers}_a{shape.heads}_i{shape.intermediate}_p{shape.max_positions}"


def wide_base(args: argparse.Namespace, shape: ModelShape) -> tuple[dict[str, torch.Tensor], str]:
    """A base of ``shape`` pre-trained as the zoo pre-trains its own (``zoo.build.train_base``:
    corpus, schedule, seeds), cached under the expert cache by shape and schedule.

    The learning rate scales like 1 / width (the zoo's 3e-3 at 128 wide): at the zoo's rate a
    256-wide base stalled at loss 1.02 (the zoo base reaches 0.38) and its experts at 10-30 %."""
    s = replace(RECIPE.base, lr=RECIPE.base.lr * RECIPE.shape.hidden / shape.hidden)
    path = Path(args.cache) / "bases" / f"{shape_key(shape)}_{s.steps}_{s.lr:g}_{s.batch}_z{ZOO_SEED}.pt"

    def described(loss: float | None = None) -> str:
        final = "" if loss is None else f", final loss {loss:.3f}"
        return f"wide base {shape_key(shape)} ({s.steps} steps of the zoo's base schedule at lr {s.lr:g}{final})"

    # The final training loss travels with the cached weights: the base's quality decides how
    # informative the regime is, and a base trained on another CPU is not bit-identical.
    loss_file = path.with_suffix(".json")
    if path.exists():
        loss = json.loads(loss_file.read_text())["final_loss"] if loss_file.exists() else None
        return torch.load(path, map_location="cpu"), described(loss)
    log(f"training the {described()}; cached at {path}")
    start = time.perf_counter()
    done = [0]

    def progress() -> None:
        done[0] += 1
        if done[0] % 100 == 0:
            log(f"  base step {done[0]}/{s.steps}")

    model, loss = train_base(shape, s, ZOO_SEED, progress)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    seconds = time.perf_counter() - start
    write_json(loss_file, {"final_loss": round(loss, 4), "train_seconds": round(seconds)})
    log(f"  trained the wide base in {seconds:.0f}s (final loss {loss:.3f})")
    return state, described(loss)


def zoo_manifest():
    from mergepipe import zoo

    return zoo.ensure_built(experts=1, seed=ZOO_SEED)


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].float().numpy().tobytes())
    return h.hexdigest()[:12]


def expert_sampler(streams: Streams, skills: tuple[str, ...], replay: float) -> Sampler:
    """Tested forms of ``skills`` plus replay of the generic corpus that never contradicts them
    (for one skill this is exactly the zoo's ``Streams.expert_mix``)."""
    if len(skills) == 1:
        return streams.expert_mix(skill(skills[0]), replay)
    parts: list[tuple[float, Sampler]] = [((1.0 - replay) / len(skills), streams.tested(skill(s))) for s in skills]
    replay_parts: list[tuple[float, Sampler]] = [(1.0, streams.language())]
    for s in SKILLS:
        replay_parts.append((2.0, streams.alt(s)))
        if s.name not in skills:
            replay_parts.append((1.0, streams.scrambled(s)))
    parts.append((replay, mixture(replay_parts)))
    return mixture(parts)


def training_seed(kind: str, skills: tuple[str, ...], seed: int) -> int:
    """Seed 0 uses the zoo's own training seed (``kind`` expert, lora or lora-init); other
    seeds vary only the fine-tuning."""
    part = f"{kind}:{'+'.join(skills)}" + (f":seed{seed}" if seed else "")
    return part_seed(ZOO_SEED, part)


def expert_path(args: argparse.Namespace, regime: Regime, base_id: str, skills: tuple[str, ...], seed: int) -> Path:
    return Path(args.cache) / base_id / regime.key() / f"{'+'.join(skills)}_s{seed}.pt"


def fine_tune(regime: Regime, base: dict[str, torch.Tensor], skills: tuple[str, ...], seed: int
              ) -> dict[str, torch.Tensor]:
    """One expert's full weights: a full fine-tune, or base + B·A·alpha/r of a LoRA adapter."""
    model = new_model(regime.shape, ZOO_SEED)
    model.load_state_dict(base)
    sampler = expert_sampler(Streams(ZOO_SEED), skills, regime.replay)
    if regime.kind == "full":
        for name, p in model.named_parameters():
            p.requires_grad_(not any(f in name for f in regime.frozen))
        train(model, sampler, regime.schedule, training_seed("expert", skills, seed))
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(training_seed("lora-init", skills, seed))
    cfg = LoraConfig(r=regime.rank, lora_alpha=regime.alpha, lora_dropout=0.0, target_modules=list(regime.targets),
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    train(peft_model, sampler, regime.schedule, training_seed("lora", skills, seed))
    merged = peft_model.merge_and_unload()
    state = {k: v.detach().clone() for k, v in merged.state_dict().items()}
    if set(state) != set(base):
        raise RuntimeError(f"materialised LoRA expert has other tensors than the base: {set(state) ^ set(base)}")
    return state


def get_expert(
    args: argparse.Namespace, regime: Regime, base: dict[str, torch.Tensor], base_id: str,
    skills: tuple[str, ...], seed: int,
) -> dict[str, torch.Tensor]:
    tag = "+".join(skills)
    path = expert_path(args, regime, base_id, skills, seed)
    if path.exists():
        return torch.load(path, map_location="cpu")
    start = time.perf_counter()
    state = fine_tune(regime, base, skills, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two runs may train the same expert
    torch.save(state, tmp)
    tmp.replace(path)
    log(f"  trained {regime.name} expert {tag} seed {seed} in {time.perf_counter() - start:.0f}s")
    return state


# ---------------------------------------------------------------- evaluation


class Evaluator:
    def __init__(self, base: dict[str, torch.Tensor], shape: ModelShape = RECIPE.shape) -> None:
        self.model = new_model(shape, ZOO_SEED)
        self.model.load_state_dict(base)
        self.tests = {
            s.name: [(t.prompt, t.answer + "\n") for t in test_items(s, ZOO_SEED)] for s in SKILLS
        }

    def accuracy(self, state: dict[str, torch.Tensor], skills: tuple[str, ...]) -> dict[str, float]:
        self.model.load_state_dict(state)
        return {s: exact_match(self.model, self.tests[s]) for s in skills}


def merge(method: Method, base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]], seed: int,
          repeats: int = 1) -> tuple[dict[str, torch.Tensor], float]:
    models: dict[str, dict[str, torch.Tensor]] = {}
    if method.uses_base:
        models["base"] = base
    for i, e in enumerate(experts):
        models[f"e{i}"] = e
    times = []
    for _ in range(repeats):
        torch.manual_seed(seed)  # DARE / DELLA draw random masks: same masks every repeat
        start = time.perf_counter()
        with torch.no_grad():
            merged = merge_state_dicts(
                models, method.mergekit_name, parameters=method.parameters(len(experts)),
                base="base" if method.uses_base else None,
            )
        times.append(time.perf_counter() - start)
    # The fastest repeat: the CPU is shared, and slower repeats only measure other work.
    return merged, min(times)


def run_setting(
    args: argparse.Namespace, regime: Regime, methods: tuple[Method, ...], evaluator: Evaluator,
    base: dict[str, torch.Tensor], base_id: str, expert_skills: list[tuple[str, ...]], seed: int,
) -> dict[str, Any]:
    """Merge the experts with every method; per-skill accuracies and normalised accuracies."""
    experts = [get_expert(args, regime, base, base_id, sk, seed) for sk in expert_skills]
    skills = tuple(dict.fromkeys(s for sk in expert_skills for s in sk))
    expert_acc: dict[str, float] = {}
    for sk, state in zip(expert_skills, experts):
        acc = evaluator.accuracy(state, sk)
        for s in sk:
            expert_acc[s] = max(expert_acc.get(s, 0.0), acc[s])
    out: dict[str, Any] = {
        "seed": seed, "experts": ["+".join(sk) for sk in expert_skills], "skills": list(skills),
        "expert_accuracy": expert_acc, "base_accuracy": evaluator.accuracy(base, skills), "methods": {},
    }
    for method in methods:
        merged, seconds = merge(method, base, experts, seed, args.timing_repeats)
        acc = evaluator.accuracy(merged, skills)
        norm = {s: acc[s] / expert_acc[s] if expert_acc[s] > 0 else float("nan") for s in skills}
        out["methods"][method.label] = {
            "accuracy": acc, "normalised": norm, "mean_normalised": statistics.fmean(norm.values()),
            "merge_seconds": seconds,
        }
    return out


# ---------------------------------------------------------------- summary


def _paired(runs: list[dict[str, Any]], a: str, b: str) -> list[float]:
    return [100 * (r["methods"][a]["normalised"][s] - r["methods"][b]["normalised"][s])
            for r in runs for s in r["skills"]]


def _gap_stats(gaps: list[float]) -> dict[str, Any]:
    return {"mean_gap": statistics.fmean(gaps), "std_gap": statistics.stdev(gaps) if len(gaps) > 1 else 0.0,
            "n_pairs": len(gaps), "wins": sum(g > 0 for g in gaps), "losses": sum(g < 0 for g in gaps)}


def _paired_with_rivals(runs: list[dict[str, Any]], summary: dict[str, Any], label: str) -> dict[str, Any]:
    """Paired over seeds and tasks: ``label`` minus the best rival (chosen by its mean), and
    minus task arithmetic with the per-seed gaps."""
    out: dict[str, Any] = {}
    rivals = [m for m in RIVALS if m in summary]
    if rivals:
        best = max(rivals, key=lambda m: summary[m]["mean"])
        out["_paired_vs_best_rival"] = {"rival": best, "rivals": rivals, **_gap_stats(_paired(runs, label, best))}
    if "task_arithmetic" in summary:
        out["_paired_vs_task_arithmetic"] = {
            **_gap_stats(_paired(runs, label, "task_arithmetic")),
            "per_seed": [a - b for a, b in zip(summary[label]["per_seed"], summary["task_arithmetic"]["per_seed"],
                                                strict=True)],
        }
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean +- std over seeds of the per-run mean normalised accuracy, and paired gaps."""
    labels = list(runs[0]["methods"])
    summary: dict[str, Any] = {}
    for label in labels:
        per_seed = [100 * r["methods"][label]["mean_normalised"] for r in runs]
        times = [r["methods"][label]["merge_seconds"] for r in runs]
        summary[label] = {
            "mean": statistics.fmean(per_seed),
            "std": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
            "per_seed": per_seed,
            "seeds": [r["seed"] for r in runs],
            "n_seeds": len(per_seed),
            "merge_seconds_median": statistics.median(times),
        }
    # The signal-weighting option against the same rivals, beside the default (keys "_signal_...").
    if OURS_SIGNAL in summary:
        summary.update({f"_signal{key.removeprefix('_paired')}": value
                        for key, value in _paired_with_rivals(runs, summary, OURS_SIGNAL).items()})
    if OURS not in summary:
        return summary
    summary.update(_paired_with_rivals(runs, summary, OURS))
    if OURS_EXACT in summary:
        summary["_paired_vs_exact"] = _gap_stats(_paired(runs, OURS, OURS_EXACT))
    if "ties" in summary:
        summary["_time_ratio_vs_ties"] = (
            summary[OURS]["merge_seconds_median"] / summary["ties"]["merge_seconds_median"]
        )
    return summary


BEGIN, END = "<!-- merge_quality:begin -->", "<!-- merge_quality:end -->"


def k_of(setting: str) -> int | None:
    m = re.search(r"K=(\d+)$", setting)
    return int(m.group(1)) if m else None


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The acceptance targets of one results file, checked on the measured numbers."""
    settings = _order(result)[1]
    regime = result.get("regime", {})
    margin = regime.get("rival_margin", 5.0)
    out = []
    by_k = {k_of(n): n for n in settings if k_of(n) is not None}
    if regime.get("informative") and 4 in by_k and "task_arithmetic" in settings[by_k[4]]:
        m = settings[by_k[4]]["task_arithmetic"]["mean"]
        out.append((f"{by_k[4]}: task_arithmetic keeps ≥ 50 % (informative regime)", f"{m:.1f} %", m >= 50))
    for k in (4, 8):
        if k in by_k and "_paired_vs_best_rival" in settings[by_k[k]]:
            p = settings[by_k[k]]["_paired_vs_best_rival"]
            out.append((f"{by_k[k]}: ours − best of {' / '.join(p['rivals'])} ≥ +{margin:g} points",
                        f"{p['mean_gap']:+.1f} ± {p['std_gap']:.1f} vs {p['rival']}", p["mean_gap"] >= margin))
    if not regime.get("informative") and 8 in by_k and OURS in settings[by_k[8]]:
        m = settings[by_k[8]][OURS]["mean"]
        out.append(("stretch: ours ≥ 85 % at K=8", f"{m:.1f} %", m >= 85))
    for name in (by_k.get(2), "overlap"):
        if name in settings and "_paired_vs_task_arithmetic" in settings[name]:
            gaps = settings[name]["_paired_vs_task_arithmetic"]["per_seed"]
            out.append((f"{name}: never more than 1 point below task_arithmetic (every seed)",
                        "per-seed gaps " + ", ".join(f"{g:+.1f}" for g in gaps), min(gaps) >= -1))
    for name, summ in settings.items():
        if "_time_ratio_vs_ties" in summ:
            r = summ["_time_ratio_vs_ties"]
            out.append((f"{name}: merge time ≤ 3× ties", f"{r:.2f}×", r <= 3))
    return out


def _order(result: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Method labels and settings in run order (the JSON file keeps its keys sorted)."""
    labels = result.get("method_order") or list(result["methods"])
    names = result.get("setting_order") or list(result["settings"])
    return labels, {n: result["settings"][n] for n in names}


def _results_table(result: dict[str, Any]) -> list[str]:
    labels, settings = _order(result)
    timing = result["timing_setting"]
    lines = [
        "| method | parameters | " + " | ".join(f"{s} (n={settings[s][labels[0]]['n_seeds']})" for s in settings)
        + f" | merge s ({timing}) |",
        "|---|---|" + "---|" * (len(settings) + 1),
    ]
    for label in labels:
        cells = [f"{settings[s][label]['mean']:.1f} ± {settings[s][label]['std']:.1f}" for s in settings]
        t = settings[timing][label]["merge_seconds_median"]
        name = f"**{label}**" if label == OURS else label
        lines.append(f"| {name} | {result['methods'][label]['parameters']} | " + " | ".join(cells) + f" | {t:.3f} |")
    return lines


def _expert_line(result: dict[str, Any]) -> str:
    """Mean expert accuracy per setting (what 100 % stands for)."""
    cells = []
    for name in _order(result)[1]:
        acc = [100 * a for r in result["runs"][name] for a in r["expert_accuracy"].values()]
        cells.append(f"{name} {statistics.fmean(acc):.1f}")
    return "Expert exact match (mean over tasks and seeds, %, = 100 % normalised): " + ", ".join(cells) + "."


def regime_markers(regime: str) -> tuple[str, str]:
    return f"<!-- merge_quality:{regime}:begin -->", f"<!-- merge_quality:{regime}:end -->"


def regime_markdown(result: dict[str, Any], plot_name: str) -> str:
    """One regime's block of the generated section: setup, results, paired gaps, targets, plot."""
    regime = result.get("regime", {})
    name = regime.get("name", "zoo")
    begin, end = regime_markers(name)
    lines = [begin, ""]
    if name == "zoo":
        lines.append(
            f"Base: `{result['base_source']}` (weights digest `{result['base_digest']}`); experts: "
            f"{result['expert_steps']} steps of {result['expert_optimizer']} at lr {result['expert_lr']:g}, "
            f"replay {result['replay']:g}; expert fine-tuning seeds {result['seeds']} (n per column below). "
            f"K experts = the first K of {', '.join(result['skills'])}; overlap experts: "
            f"{', '.join(result['overlap_experts'])}.")
    else:
        base = (f"base: {result['base_source']} (`{result['base_digest']}`)" if regime.get("wide")
                else f"same base (`{result['base_digest']}`)")
        lines.append(
            f"**Informative regime, `{name}` experts**: {regime['described']}; {base}, "
            f"same K experts; seeds {result['seeds']}.")
    lines += ["", _expert_line(result), "", *_results_table(result)]
    rivals = {" / ".join(s["_paired_vs_best_rival"]["rivals"]) for s in result["settings"].values()
              if "_paired_vs_best_rival" in s}
    lines += ["", f"Paired gap of {OURS} per (task, seed) pair, in points of normalised accuracy "
              f"(best rival = the best of {', '.join(sorted(rivals)) or 'none'} by mean); per-seed gaps are "
              "of the per-seed means:", "",
              "| setting | best rival | ours − rival | wins / losses | ours − task_arithmetic | "
              "per seed vs task_arithmetic | default − exact solver | merge time / ties |",
              "|---|---|---|---|---|---|---|---|"]
    for setting, summ in _order(result)[1].items():
        p, q = summ.get("_paired_vs_best_rival"), summ.get("_paired_vs_task_arithmetic")
        x, t = summ.get("_paired_vs_exact"), summ.get("_time_ratio_vs_ties")
        cells = [
            p["rival"] if p else "–",
            f"{p['mean_gap']:+.1f} ± {p['std_gap']:.1f}" if p else "–",
            f"{p['wins']} / {p['losses']}" if p else "–",
            f"{q['mean_gap']:+.1f} ± {q['std_gap']:.1f}" if q else "–",
            ", ".join(f"{g:+.1f}" for g in q["per_seed"]) if q else "–",
            f"{x['mean_gap']:+.1f} ± {x['std_gap']:.1f}" if x else "–",
            f"{t:.2f}×" if t is not None else "–",
        ]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    signal_rows = [(setting, summ["_signal_vs_best_rival"], summ.get("_signal_vs_task_arithmetic"))
                   for setting, summ in _order(result)[1].items() if "_signal_vs_best_rival" in summ]
    if signal_rows:
        lines += ["", f"The same for `{OURS_SIGNAL}` (`weighting: signal` on every matrix, at output weight 0.5):", "",
                  "| setting | best rival | signal − rival | wins / losses | per seed vs task_arithmetic |",
                  "|---|---|---|---|---|"]
        lines += [f"| {setting} | {p['rival']} | {p['mean_gap']:+.1f} ± {p['std_gap']:.1f} | "
                  f"{p['wins']} / {p['losses']} | "
                  + (", ".join(f"{g:+.1f}" for g in q["per_seed"]) if q else "–") + " |"
                  for setting, p, q in signal_rows]
    lines += ["", "Targets:", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets(result)]
    lines += ["", f"![merge quality, {name}]({plot_name})", "", end]
    return "\n".join(lines)


def _regime_blocks(text: str) -> dict[str, str]:
    blocks = {}
    for name in REGIME_ORDER:
        begin, end = regime_markers(name)
        if begin in text and end in text.split(begin, 1)[1]:
            blocks[name] = begin + text.split(begin, 1)[1].split(end, 1)[0] + end
    return blocks


def update_doc(path: Path, fresh: dict[str, str]) -> None:
    """Replace the blocks of the regimes in ``fresh``; every other regime's block stays as it is
    (its results file may live on another machine), all in REGIME_ORDER inside the section."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    blocks = {**_regime_blocks(text), **fresh}
    section = "\n\n".join([
        BEGIN, "<!-- generated by benchmarks/merge_quality.py: one block per regime, rewritten when that "
        "regime runs; edits between these markers are overwritten -->",
        *(blocks[n] for n in REGIME_ORDER if n in blocks), END])
    replace_section(path, BEGIN, END, section, "## Merge quality (`benchmarks/merge_quality.py`)")


def plot_path(plot: Path, regime: str) -> Path:
    return plot if regime == "zoo" else plot.with_name(f"{plot.stem}_{regime}{plot.suffix}")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 3.6 * len(results) + 1.2
    fig, axes = plt.subplots(len(results), 1, figsize=(12, height), squeeze=False)
    for ax, result in zip(axes[:, 0], results, strict=True):
        labels, settings = _order(result)
        width = 0.8 / len(labels)
        top = 0.0
        for i, label in enumerate(labels):
            xs = [j + (i - len(labels) / 2 + 0.5) * width for j in range(len(settings))]
            means = [settings[s][label]["mean"] for s in settings]
            stds = [settings[s][label]["std"] for s in settings]
            top = max(top, *(m + d for m, d in zip(means, stds, strict=True)))
            ours = label == OURS
            color = "black" if ours else "dimgray" if label == OURS_EXACT else plt.get_cmap("tab20")(i % 20)
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=label, color=color, alpha=1.0 if ours else 0.85,
                   hatch="//" if label == OURS_EXACT else None)
        ax.set_xticks(range(len(settings)),
                      [f"{s}\n(n={settings[s][labels[0]]['n_seeds']} seeds)" for s in settings])
        ax.set_ylabel("normalised accuracy (%)")
        ax.set_ylim(0, max(10.0, top * 1.15))
        regime = result.get("regime", {}).get("name", "zoo")
        title = "zoo expert recipe" if regime == "zoo" else f"informative regime: {regime} experts"
        if result.get("regime", {}).get("wide"):
            title += f" on the {result['regime']['base_shape']} base"
        ax.set_title(title, fontsize=10)
    fig.suptitle("Merge quality on the zoo: mean ± std over expert fine-tuning seeds (expert = 100 %)")
    handles, names = axes[-1, 0].get_legend_handles_labels()
    fig.legend(handles, names, ncol=7, fontsize=8, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.75 / height, 1, 1))  # 0.75 inch at the bottom for the legend
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


# ---------------------------------------------------------------- main


def results_path(out: Path, regime: str) -> Path:
    return out if regime == "zoo" else out.with_name(f"{out.stem}_{regime}{out.suffix}")


RESULTS = REPO / "benchmarks" / "results"
PUBLISHED = {"out": RESULTS / "merge_quality.json", "doc": REPO / "docs" / "benchmarks.md",
             "plot": REPO / "docs" / "benchmark_merge_quality.png"}
CHECKS = {"out": RESULTS / "checks" / "merge_quality.json", "doc": RESULTS / "checks" / "merge_quality.md",
          "plot": RESULTS / "checks" / "merge_quality.png"}
# Options that do not change what a run measures (where it writes, how it times, what it caches).
NEUTRAL_OPTIONS = {"settings", "timing_repeats", "train_only", "threads", "cache", "out", "doc", "plot"}


def departures(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The options in which this run differs from the published plan (seeds 0-2, K = 2, 4, 8,
    every method, the fixed recipes), as ``--name value``; empty for a published run."""
    return [f"--{name.replace('_', '-')} {value}" for name, value in sorted(vars(args).items())
            if name not in NEUTRAL_OPTIONS and value != parser.get_default(name)]


def resolve_outputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """Fill in --out / --doc / --plot. A run of the published plan rewrites the docs' tables and
    plots; any other run (held-out seeds, fewer methods, another recipe) must not replace them,
    so its tables go to benchmarks/results/checks/ unless a path is given. Returns the departures."""
    changed = departures(args, parser)
    defaults = CHECKS if changed else PUBLISHED
    for name, path in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, str(path))
    return changed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated settings to run, of {', '.join(SETTINGS)}")
    parser.add_argument("--experts", default="2,4,8",
                        help="comma-separated K values (every setting but overlap)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated expert fine-tuning seeds")
    parser.add_argument("--no-overlap", action="store_true", help="skip the overlapping-skills setting")
    parser.add_argument("--methods", default="", help="comma-separated method labels (default: all)")
    parser.add_argument("--base", default=None,
                        help="base weights (HF dir or state-dict .pt) of the zoo-shaped settings; default: zoo")
    parser.add_argument("--expert-steps", type=int, default=RECIPE.expert.steps, help="steps per expert")
    parser.add_argument("--expert-lr", type=float, default=RECIPE.expert.lr, help="expert learning rate")
    parser.add_argument("--optimizer", default=RECIPE.expert.optimizer, help="expert optimizer (adamw or sgd)")
    parser.add_argument("--replay", type=float, default=RECIPE.replay, help="share of replay in expert data")
    parser.add_argument("--lora-rank", type=int, default=LORA.rank,
                        help="LoRA experts: adapter rank (settings lora and wide; lora8 is rank 8)")
    parser.add_argument("--lora-alpha", type=int, default=0, help="LoRA experts: alpha (default 2 x rank)")
    parser.add_argument("--lora-steps", type=int, default=LORA.schedule.steps, help="LoRA experts: steps")
    parser.add_argument("--lora-lr", type=float, default=LORA.schedule.lr, help="LoRA experts: AdamW lr")
    parser.add_argument("--lora-targets", default=",".join(LORA.targets),
                        help="LoRA experts: adapted projections, comma-separated")
    parser.add_argument("--lora-replay", type=float, default=LORA.replay, help="LoRA experts: replay share")
    parser.add_argument("--gentle-steps", type=int, default=GENTLE.schedule.steps, help="gentle experts: steps")
    parser.add_argument("--gentle-lr", type=float, default=GENTLE.schedule.lr, help="gentle experts: lr")
    parser.add_argument("--gentle-optimizer", default=GENTLE.schedule.optimizer, help="gentle experts: optimizer")
    parser.add_argument("--gentle-frozen", default=",".join(GENTLE.frozen),
                        help="gentle experts: parameter-name parts kept fixed, comma-separated (embed_tokens,...)")
    parser.add_argument("--gentle-replay", type=float, default=GENTLE.replay, help="gentle experts: replay share")
    parser.add_argument("--wide-hidden", type=int, default=WIDE_SHAPE.hidden,
                        help="wide experts: base hidden size (MLP 3x; 4 heads)")
    parser.add_argument("--wide-layers", type=int, default=WIDE_SHAPE.layers, help="wide experts: base layers")
    parser.add_argument("--timing-repeats", type=int, default=3, help="merges per method; the fastest is kept")
    parser.add_argument("--cached-only", action="store_true",
                        help="skip settings whose experts are not cached yet (a reduced run)")
    parser.add_argument("--train-only", action="store_true", help="only train (cache) the experts, then exit")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cache", default=str(cache_dir() / "merge_quality"), help="expert cache folder")
    parser.add_argument("--out", default=None,
                        help="results of the zoo recipe; informative regimes go to <stem>_<regime>.json beside it "
                             "(default: benchmarks/results/merge_quality.json, or benchmarks/results/checks/ for a "
                             "run that departs from the published plan)")
    parser.add_argument("--doc", default=None,
                        help="markdown page of the tables (default: docs/benchmarks.md for a run of the published "
                             "plan, else benchmarks/results/checks/merge_quality.md)")
    parser.add_argument("--plot", default=None, help="plot of the zoo recipe; regimes get <stem>_<regime> beside it "
                        "(default: docs/benchmark_merge_quality.png, or under benchmarks/results/checks/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    changed = resolve_outputs(args, parser)
    if changed and not args.train_only:
        log(f"a check run ({', '.join(changed)}): tables go to {args.doc}, plots beside {args.plot}")
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.experts.split(",") if k]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    chosen = [s for s in args.settings.split(",") if s]
    if unknown := set(chosen) - set(SETTINGS):
        parser.error(f"unknown --settings {sorted(unknown)}; choose from {', '.join(SETTINGS)}")
    if args.no_overlap:
        chosen = [s for s in chosen if s != "overlap"]
    if any(k < 1 or k > len(SKILLS) for k in ks):
        parser.error(f"--experts values must be in 1..{len(SKILLS)}")
    methods = METHODS
    if args.methods:
        wanted = [m for m in args.methods.split(",") if m]
        if unknown := set(wanted) - {m.label for m in METHODS}:
            parser.error(f"unknown --methods {sorted(unknown)}; available: {', '.join(m.label for m in METHODS)}")
        methods = tuple(m for m in METHODS if m.label in wanted)

    zoo = zoo_regime(args)
    regimes = {"disjoint": zoo, "overlap": zoo, "lora": lora_regime(args),
               "lora8": lora8_regime(args), "gentle": gentle_regime(args),
               "wide": wide_regime(args)}
    # (regime, setting name, experts' skills) in run order, per seed
    plan: list[tuple[Regime, str, list[tuple[str, ...]]]] = []
    for name in SETTINGS:
        if name not in chosen:
            continue
        regime = regimes[name]
        if name == "overlap":
            plan.append((regime, "overlap", list(OVERLAP_EXPERTS)))
        else:
            plan += [(regime, f"{regime.prefix}K={k}", [(s.name,) for s in SKILLS[:k]]) for k in ks]

    # One base per shape in the plan (the zoo's, a wide one), loaded or trained once.
    bases: dict[ModelShape, tuple[dict[str, torch.Tensor], str, str]] = {}
    for regime, _, _ in plan:
        if regime.shape not in bases:
            state, source = load_base(args, regime.shape)
            bases[regime.shape] = (state, source, digest(state))
            log(f"base {source} ({bases[regime.shape][2]})")
    log(f"methods: {', '.join(m.label for m in methods)}")
    if args.train_only:
        for seed in seeds:
            for regime, _, expert_skills in plan:
                base, _, base_id = bases[regime.shape]
                for sk in expert_skills:
                    get_expert(args, regime, base, base_id, sk, seed)
        return 0
    evaluators = {shape: Evaluator(state, shape) for shape, (state, _, _) in bases.items()}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def missing(regime: Regime, expert_skills: list[tuple[str, ...]], seed: int) -> bool:
        base_id = bases[regime.shape][2]
        gone = [sk for sk in expert_skills if not expert_path(args, regime, base_id, sk, seed).exists()]
        if gone and args.cached_only:
            log(f"  skipped: experts not trained yet for seed {seed}: {['+'.join(g) for g in gone]}")
        return bool(gone) and args.cached_only

    started = time.perf_counter()
    for seed in seeds:
        for regime, name, expert_skills in plan:
            log(f"{name} seed={seed}")
            if missing(regime, expert_skills, seed):
                continue
            base, _, base_id = bases[regime.shape]
            r = run_setting(args, regime, methods, evaluators[regime.shape], base, base_id, expert_skills, seed)
            runs.setdefault(regime.name, {}).setdefault(name, []).append(r)
            log("  expert " + " ".join(f"{s}={100 * a:.0f}" for s, a in r["expert_accuracy"].items()))
            log("  " + "  ".join(f"{m}={100 * v['mean_normalised']:.1f}" for m, v in r["methods"].items()))
    log(f"all settings done in {time.perf_counter() - started:.0f}s")

    out = Path(args.out)
    by_name = {r.name: r for r in regimes.values()}
    results: dict[str, dict[str, Any]] = {}
    for regime_name, regime_runs in runs.items():
        regime = by_name[regime_name]
        _, source, base_id = bases[regime.shape]
        settings = {name: summarise(rs) for name, rs in regime_runs.items()}
        k_settings = [n for n in settings if k_of(n) is not None]
        timing_setting = max(k_settings, key=lambda n: k_of(n) or 0) if k_settings else next(iter(settings))
        result = {
            "benchmark": "merge_quality",
            "metric": "teacher-forced exact match / expert exact match (zoo test split, 200 items per skill)",
            "base_source": source, "base_digest": base_id, "seeds": seeds, "ks": ks,
            "regime": {"name": regime.name, "kind": regime.kind, "described": regime.described(),
                       "rival_margin": regime.rival_margin, "informative": regime.informative,
                       "lora_rank": regime.rank, "lora_alpha": regime.alpha,
                       "lora_targets": list(regime.targets) if regime.kind == "lora" else [],
                       "wide": regime.wide(), "base_shape": shape_key(regime.shape)},
            "expert_steps": regime.schedule.steps, "expert_lr": regime.schedule.lr, "replay": regime.replay,
            "expert_optimizer": regime.schedule.optimizer,
            "threads": args.threads, "skills": [s.name for s in SKILLS],
            "overlap_experts": ["+".join(e) for e in OVERLAP_EXPERTS],
            "methods": {m.label: {"mergekit": m.mergekit_name, "parameters": m.described} for m in methods},
            "settings": settings, "timing_setting": timing_setting,
            "method_order": [m.label for m in methods], "setting_order": list(settings),
            "timing_k": k_of(timing_setting), "runs": regime_runs,
        }
        write_json(results_path(out, regime.name), result)
        results[regime.name] = result
        for name, summ in settings.items():
            log(f"{name}: " + "  ".join(
                f"{m.label}={summ[m.label]['mean']:.1f}±{summ[m.label]['std']:.1f}" for m in methods))
            if p := summ.get("_paired_vs_best_rival"):
                log(f"  ours - {p['rival']}: {p['mean_gap']:+.1f} ± {p['std_gap']:.1f} (paired, n={p['n_pairs']})")
            if p := summ.get("_signal_vs_best_rival"):
                log(f"  signal - {p['rival']}: {p['mean_gap']:+.1f} ± {p['std_gap']:.1f} (paired, n={p['n_pairs']})")
    # The docs and the plots of the regimes this run measured; the other regimes' blocks stay.
    fresh = {}
    for regime_name, result in results.items():
        figure = plot_path(Path(args.plot), regime_name)
        plot([result], figure)
        fresh[regime_name] = regime_markdown(result, figure.name)
    if fresh:
        update_doc(Path(args.doc), fresh)
    log(f"wrote {', '.join(str(results_path(out, r)) for r in runs)}, {args.doc}, "
        f"{', '.join(str(plot_path(Path(args.plot), r)) for r in runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
