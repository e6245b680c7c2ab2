"""Merge-quality benchmark: how much of each expert's skill survives a merge, per method.

Setting 1 (disjoint skills): experts fine-tuned from the zoo base on one zoo skill each, for
K = 2, 4 and 8 experts (the first K skills in the zoo's order) and several expert fine-tuning
seeds. Setting 2 (overlapping skills): four experts, each fine-tuned on a mixture of 2-3
skills, every skill covered by two experts, like instruction-tuned variants that overlap.

Metric per task: normalised accuracy = exact match of the merged model / exact match of the
expert of that task (in setting 2: the best expert trained on that skill). Exact match is the
zoo's teacher-forced check (``mergepipe.zoo.training.exact_match``), which gives the same
verdict as greedy decoding, on the zoo's 200 held-out test items per skill.

Every merge is a real mergekit merge (``merge_state_dicts`` with the registered methods, the
same kernels ``run_merge`` uses), with the fixed parameters in ``METHODS``. Merge time is the
wall time of that in-memory merge (no disk I/O; fastest of ``--timing-repeats``, median over seeds).

Writes benchmarks/results/merge_quality.json, docs/benchmarks.md (merge-quality section) and
docs/benchmark_merge_quality.png. Experts are cached (keyed by the base weights' digest and the
recipe; clear the cache after changing the zoo's skills), so re-runs only redo merges.

    environments/main/bin/python benchmarks/merge_quality.py            # full run
    environments/main/bin/python benchmarks/merge_quality.py --seeds 0 --experts 2,4
"""

from __future__ import annotations

import argparse
import hashlib
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

from mergekit.merge_methods import merge_state_dicts  # noqa: E402

import mergepipe.merge.methods  # noqa: E402,F401  (registers bilateral_consensus)
from mergepipe.core.atomic import write_json, write_text  # noqa: E402
from mergepipe.core.paths import cache_dir  # noqa: E402
from mergepipe.zoo.build import part_seed  # noqa: E402
from mergepipe.zoo.corpus import Sampler, Streams, mixture, test_items  # noqa: E402
from mergepipe.zoo.recipe import RECIPE  # noqa: E402
from mergepipe.zoo.skills import SKILLS, skill  # noqa: E402
from mergepipe.zoo.training import Schedule, exact_match, new_model, train  # noqa: E402

ZOO_SEED = 0  # the zoo build (base, corpus, test split); expert seeds vary the fine-tuning only


@dataclass(frozen=True)
class Method:
    label: str
    mergekit_name: str
    parameters: Callable[[int], dict[str, Any]]  # K -> parameters
    described: str  # the parameters as written in the docs
    uses_base: bool = True
    randomized: bool = False


# Fixed parameters: mergepipe's catalogue defaults (src/mergepipe/methods.py), never tuned here.
METHODS: tuple[Method, ...] = (
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
    Method("bilateral_consensus", "bilateral_consensus", lambda k: {}, "eps=1e-12 (default)"),
)
OURS = "bilateral_consensus"
RIVALS = ("task_arithmetic", "task_arithmetic_1/K", "ties", "dare_ties")

# Overlapping setting: each expert learns 2-3 skills, every skill is covered by two experts.
OVERLAP_EXPERTS: tuple[tuple[str, ...], ...] = (
    ("inc", "next"),
    ("next", "mirror", "sort"),
    ("sort", "dup"),
    ("dup", "inc", "mirror"),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- models


def load_base(args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], str]:
    """The zoo base model's weights (built on first use), and where they came from."""
    from transformers import LlamaForCausalLM

    if args.base:
        path = Path(args.base)
        if path.is_dir():
            return LlamaForCausalLM.from_pretrained(path).state_dict(), str(path)
        return torch.load(path, map_location="cpu"), str(path)
    base_dir = Path(zoo_manifest().model("base").path)
    state = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).state_dict()
    return state, f"zoo://base ({base_dir.name})"


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


def schedule(args: argparse.Namespace) -> Schedule:
    return replace(RECIPE.expert, steps=args.expert_steps, lr=args.expert_lr, optimizer=args.optimizer)


def training_seed(skills: tuple[str, ...], seed: int) -> int:
    """Seed 0 uses the zoo's own expert training seed; other seeds vary only the fine-tuning."""
    part = f"expert:{'+'.join(skills)}" + (f":seed{seed}" if seed else "")
    return part_seed(ZOO_SEED, part)


def expert_path(args: argparse.Namespace, base_id: str, skills: tuple[str, ...], seed: int) -> Path:
    recipe = f"{args.expert_steps}_{args.expert_lr:g}_{args.optimizer}_{args.replay:g}"
    return Path(args.cache) / base_id / recipe / f"{'+'.join(skills)}_s{seed}.pt"


def get_expert(
    args: argparse.Namespace, base: dict[str, torch.Tensor], base_id: str, skills: tuple[str, ...], seed: int
) -> dict[str, torch.Tensor]:
    tag = "+".join(skills)
    path = expert_path(args, base_id, skills, seed)
    if path.exists():
        return torch.load(path, map_location="cpu")
    start = time.perf_counter()
    model = new_model(RECIPE.shape, ZOO_SEED)
    model.load_state_dict(base)
    sampler = expert_sampler(Streams(ZOO_SEED), skills, args.replay)
    train(model, sampler, schedule(args), training_seed(skills, seed))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    log(f"  trained expert {tag} seed {seed} in {time.perf_counter() - start:.0f}s")
    return state


# ---------------------------------------------------------------- evaluation


class Evaluator:
    def __init__(self, base: dict[str, torch.Tensor]) -> None:
        self.model = new_model(RECIPE.shape, ZOO_SEED)
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
    args: argparse.Namespace, evaluator: Evaluator, base: dict[str, torch.Tensor], base_id: str,
    expert_skills: list[tuple[str, ...]], seed: int,
) -> dict[str, Any]:
    """Merge the experts with every method; per-skill accuracies and normalised accuracies."""
    experts = [get_expert(args, base, base_id, sk, seed) for sk in expert_skills]
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
    for method in METHODS:
        merged, seconds = merge(method, base, experts, seed, args.timing_repeats)
        acc = evaluator.accuracy(merged, skills)
        norm = {s: acc[s] / expert_acc[s] if expert_acc[s] > 0 else float("nan") for s in skills}
        out["methods"][method.label] = {
            "accuracy": acc, "normalised": norm, "mean_normalised": statistics.fmean(norm.values()),
            "merge_seconds": seconds,
        }
    return out


# ---------------------------------------------------------------- summary


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean +- std over seeds of the per-run mean normalised accuracy, and paired gaps."""
    summary: dict[str, Any] = {}
    for method in METHODS:
        per_seed = [100 * r["methods"][method.label]["mean_normalised"] for r in runs]
        times = [r["methods"][method.label]["merge_seconds"] for r in runs]
        summary[method.label] = {
            "mean": statistics.fmean(per_seed),
            "std": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
            "per_seed": per_seed,
            "n_seeds": len(per_seed),
            "merge_seconds_median": statistics.median(times),
        }
    # Paired over seeds and tasks: ours minus the best rival (chosen by its mean).
    best = max(RIVALS, key=lambda m: summary[m]["mean"])
    gaps = [
        100 * (r["methods"][OURS]["normalised"][s] - r["methods"][best]["normalised"][s])
        for r in runs for s in r["skills"]
    ]
    summary["_paired_vs_best_rival"] = {
        "rival": best, "mean_gap": statistics.fmean(gaps),
        "std_gap": statistics.stdev(gaps) if len(gaps) > 1 else 0.0, "n_pairs": len(gaps),
        "wins": sum(g > 0 for g in gaps), "losses": sum(g < 0 for g in gaps),
    }
    gaps_ta = [
        100 * (r["methods"][OURS]["normalised"][s] - r["methods"]["task_arithmetic"]["normalised"][s])
        for r in runs for s in r["skills"]
    ]
    summary["_paired_vs_task_arithmetic"] = {
        "mean_gap": statistics.fmean(gaps_ta), "std_gap": statistics.stdev(gaps_ta) if len(gaps_ta) > 1 else 0.0,
        "n_pairs": len(gaps_ta),
    }
    summary["_time_ratio_vs_ties"] = (
        summary[OURS]["merge_seconds_median"] / summary["ties"]["merge_seconds_median"]
    )
    return summary


BEGIN, END = "<!-- merge_quality:begin -->", "<!-- merge_quality:end -->"


def targets(settings: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The issue's acceptance targets, checked on the measured numbers."""
    out = []
    for name in ("K=4", "K=8"):
        if name in settings:
            p = settings[name]["_paired_vs_best_rival"]
            out.append((f"{name}: ours − best of task_arithmetic / ties / dare_ties ≥ +5 points",
                        f"{p['mean_gap']:+.1f} ± {p['std_gap']:.1f} vs {p['rival']}", p["mean_gap"] >= 5))
    if "K=8" in settings:
        m = settings["K=8"][OURS]["mean"]
        out.append(("stretch: ours ≥ 85 % at K=8", f"{m:.1f} %", m >= 85))
    for name in ("K=2", "overlap"):
        if name in settings:
            gaps = [a - b for a, b in zip(settings[name][OURS]["per_seed"],
                                          settings[name]["task_arithmetic"]["per_seed"], strict=True)]
            out.append((f"{name}: never more than 1 point below task_arithmetic (every seed)",
                        "per-seed gaps " + ", ".join(f"{g:+.1f}" for g in gaps), min(gaps) >= -1))
    for name, summ in settings.items():
        r = summ["_time_ratio_vs_ties"]
        out.append((f"{name}: merge time ≤ 3× ties", f"{r:.2f}×", r <= 3))
    return out


def markdown(result: dict[str, Any]) -> str:
    """The generated section of docs/benchmarks.md (between the merge_quality markers)."""
    settings = result["settings"]
    labels = [m.label for m in METHODS]
    lines = [
        BEGIN,
        "<!-- generated by benchmarks/merge_quality.py; edits between these markers are overwritten -->",
        "",
        f"Base: `{result['base_source']}` (weights digest `{result['base_digest']}`); experts: "
        f"{result['expert_steps']} steps of {result['expert_optimizer']} at lr {result['expert_lr']:g}, replay "
        f"{result['replay']:g}; expert fine-tuning seeds {result['seeds']} (n per column below). K experts = the "
        f"first K of {', '.join(result['skills'])}; overlap experts: {', '.join(result['overlap_experts'])}.",
        "",
        "| method | parameters | " + " | ".join(f"{s} (n={settings[s][OURS]['n_seeds']})" for s in settings)
        + f" | merge s ({result['timing_setting']}) |",
        "|---|---|" + "---|" * (len(settings) + 1),
    ]
    for label in labels:
        cells = [f"{settings[s][label]['mean']:.1f} ± {settings[s][label]['std']:.1f}" for s in settings]
        t = settings[result["timing_setting"]][label]["merge_seconds_median"]
        name = f"**{label}**" if label == OURS else label
        lines.append(f"| {name} | {result['methods'][label]['parameters']} | " + " | ".join(cells) + f" | {t:.3f} |")
    lines += ["", f"Paired gap of {OURS} per (task, seed) pair, in points of normalised accuracy "
              "(best rival = the best of task_arithmetic, task_arithmetic_1/K, ties, dare_ties by mean):", "",
              "| setting | best rival | ours − rival | wins / losses | ours − task_arithmetic | merge time / ties |",
              "|---|---|---|---|---|---|"]
    for s, summ in settings.items():
        p, q = summ["_paired_vs_best_rival"], summ["_paired_vs_task_arithmetic"]
        lines.append(f"| {s} | {p['rival']} | {p['mean_gap']:+.1f} ± {p['std_gap']:.1f} | "
                     f"{p['wins']} / {p['losses']} | {q['mean_gap']:+.1f} ± {q['std_gap']:.1f} | "
                     f"{summ['_time_ratio_vs_ties']:.2f}× |")
    lines += ["", "Targets:", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets(settings)]
    lines += ["", "![merge quality](benchmark_merge_quality.png)", "", END]
    return "\n".join(lines)


def update_doc(path: Path, section: str) -> None:
    """Replace the generated section of the benchmarks page, keeping everything else."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Merge quality (`benchmarks/merge_quality.py`)\n\n" + section + "\n"
    write_text(path, text)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = result["settings"]
    labels = [m.label for m in METHODS]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / len(labels)
    top = 0.0
    for i, label in enumerate(labels):
        xs = [j + (i - len(labels) / 2 + 0.5) * width for j in range(len(settings))]
        means = [settings[s][label]["mean"] for s in settings]
        stds = [settings[s][label]["std"] for s in settings]
        top = max(top, *(m + d for m, d in zip(means, stds, strict=True)))
        ours = label == OURS
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=label, color="black" if ours else None,
               alpha=1.0 if ours else 0.85)
    ax.set_xticks(range(len(settings)), [f"{s}\n(n={settings[s][OURS]['n_seeds']} seeds)" for s in settings])
    ax.set_ylabel("normalised accuracy (% of the expert)")
    ax.set_ylim(0, max(10.0, top * 1.15))
    ax.set_title("Merge quality on the zoo: mean ± std over expert fine-tuning seeds (expert = 100 %)")
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", default="2,4,8", help="comma-separated K values (disjoint setting)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated expert fine-tuning seeds")
    parser.add_argument("--no-overlap", action="store_true", help="skip the overlapping-skills setting")
    parser.add_argument("--base", default=None, help="base weights (HF dir or state-dict .pt); default: zoo")
    parser.add_argument("--expert-steps", type=int, default=RECIPE.expert.steps, help="steps per expert")
    parser.add_argument("--expert-lr", type=float, default=RECIPE.expert.lr, help="expert learning rate")
    parser.add_argument("--optimizer", default=RECIPE.expert.optimizer, help="expert optimizer (adamw or sgd)")
    parser.add_argument("--replay", type=float, default=RECIPE.replay, help="share of replay in expert data")
    parser.add_argument("--timing-repeats", type=int, default=3, help="merges per method; the fastest is kept")
    parser.add_argument("--cached-only", action="store_true",
                        help="skip settings whose experts are not cached yet (a reduced run)")
    parser.add_argument("--train-only", action="store_true", help="only train (cache) the experts, then exit")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cache", default=str(cache_dir() / "merge_quality"), help="expert cache folder")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "merge_quality.json"))
    parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="markdown table")
    parser.add_argument("--plot", default=str(REPO / "docs" / "benchmark_merge_quality.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.experts.split(",") if k]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if any(k < 1 or k > len(SKILLS) for k in ks):
        parser.error(f"--experts values must be in 1..{len(SKILLS)}")

    base, source = load_base(args)
    base_id = digest(base)
    log(f"base {source} ({base_id})")
    if args.train_only:
        for seed in seeds:
            for s in SKILLS[: max(ks)]:
                get_expert(args, base, base_id, (s.name,), seed)
        if not args.no_overlap:
            for seed in seeds:
                for sk in OVERLAP_EXPERTS:
                    get_expert(args, base, base_id, sk, seed)
        return 0
    evaluator = Evaluator(base)
    runs: dict[str, list[dict[str, Any]]] = {}
    def missing(expert_skills: list[tuple[str, ...]], seed: int) -> bool:
        gone = [sk for sk in expert_skills if not expert_path(args, base_id, sk, seed).exists()]
        if gone and args.cached_only:
            log(f"  skipped: experts not trained yet for seed {seed}: {['+'.join(g) for g in gone]}")
        return bool(gone) and args.cached_only

    for seed in seeds:
        for k in ks:
            log(f"K={k} seed={seed}")
            if missing([(s.name,) for s in SKILLS[:k]], seed):
                continue
            r = run_setting(args, evaluator, base, base_id, [(s.name,) for s in SKILLS[:k]], seed)
            runs.setdefault(f"K={k}", []).append(r)
            log("  " + "  ".join(f"{m}={100 * v['mean_normalised']:.1f}" for m, v in r["methods"].items()))
        if not args.no_overlap:
            log(f"overlap seed={seed}")
            if missing(list(OVERLAP_EXPERTS), seed):
                continue
            r = run_setting(args, evaluator, base, base_id, list(OVERLAP_EXPERTS), seed)
            runs.setdefault("overlap", []).append(r)
            log("  " + "  ".join(f"{m}={100 * v['mean_normalised']:.1f}" for m, v in r["methods"].items()))

    settings = {name: summarise(rs) for name, rs in runs.items()}
    timing_setting = max((n for n in settings if n.startswith("K=")), key=lambda n: int(n[2:]))
    result = {
        "benchmark": "merge_quality",
        "metric": "teacher-forced exact match / expert exact match (zoo test split, 200 items per skill)",
        "base_source": source, "base_digest": base_id, "seeds": seeds, "ks": ks,
        "expert_steps": args.expert_steps, "expert_lr": args.expert_lr, "replay": args.replay,
        "expert_optimizer": args.optimizer,
        "threads": args.threads, "skills": [s.name for s in SKILLS],
        "overlap_experts": ["+".join(e) for e in OVERLAP_EXPERTS],
        "methods": {m.label: {"mergekit": m.mergekit_name, "parameters": m.described} for m in METHODS},
        "settings": settings, "timing_setting": timing_setting, "timing_k": max(ks), "runs": runs,
    }
    write_json(Path(args.out), result)
    update_doc(Path(args.doc), markdown(result))
    plot(result, Path(args.plot))
    for name, summ in settings.items():
        log(f"{name}: " + "  ".join(
            f"{m.label}={summ[m.label]['mean']:.1f}±{summ[m.label]['std']:.1f}" for m in METHODS))
        p = summ["_paired_vs_best_rival"]
        log(f"  ours - {p['rival']}: {p['mean_gap']:+.1f} ± {p['std_gap']:.1f} (paired, n={p['n_pairs']}); "
            f"time vs ties {summ['_time_ratio_vs_ties']:.2f}x")
    log(f"wrote {args.out}, {args.doc}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
