"""Probing sanity: does the built-in engine find knowledge where there is some, and none where not?

1. The three real FlashHolmes datasets (../shared/fixtures/holmes/flash-holmes) on the zoo base
   and on a randomly initialised model of the same shape: the trained model must not be worse on
   average, and the control task (permuted labels) must score near chance (macro-F1 0.5 +- 0.1).
2. The zoo's probing sets on the zoo base: per competence, score vs control score; the base
   must be clearly above its control (by >= 0.05 macro-F1) on at least 3 of the 5 competences.
   The random twin is probed too and reported beside it (not a pass/fail criterion).

Writes ``benchmarks/results/probing_sanity.json``.

    environments/main/bin/python benchmarks/probing_sanity.py [--model zoo://base] [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as 'mergepipe probe' does, before torch loads

import pandas as pd
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from mergepipe.core.atomic import write_json
from mergepipe.core.models import resolve
from mergepipe.evaluate.holmes.probe import run_probing
from mergepipe.evaluate.holmes.results_file import read_results_csv
from mergepipe.results.holmes_scoring import (
    competence_scores,
    dataset_scores,
    find_mapping,
    load_mapping,
    selectivity,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "holmes" / "flash-holmes"
CHANCE, CHANCE_TOLERANCE, CLEAR_MARGIN = 0.5, 0.1, 0.05


def random_twin(model_dir: Path, dest: Path, seed: int = 0) -> Path:
    """A randomly initialised model with the same config and tokenizer as ``model_dir``."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    model.save_pretrained(dest, safe_serialization=True)
    for f in model_dir.iterdir():
        if "token" in f.name or f.name == "special_tokens_map.json":
            shutil.copy(f, dest / f.name)
    return dest


def per_dataset(csv: Path) -> pd.DataFrame:
    return selectivity(dataset_scores(read_results_csv(csv, "m")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo://base", help="trained model reference (default zoo://base)")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="FlashHolmes-format datasets")
    parser.add_argument("--zoo-data", type=Path, default=None, help="zoo probing sets (default: the zoo's)")
    parser.add_argument("--mapping", type=Path, default=None, help="competence mapping CSV for --zoo-data")
    parser.add_argument("--seeds", type=int, default=5, help="probe seeds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model.startswith("zoo://") or args.zoo_data is None:
        from mergepipe import zoo

        zoo.ensure_built()
        args.zoo_data = args.zoo_data or Path(zoo.probing_data_dir())
    result: dict = {"model": args.model, "seeds": args.seeds}
    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trained_dir = resolve(args.model).local_dir
        twin = random_twin(trained_dir, tmp / "random-init")
        runs, seed_means = {}, {}
        for label, ref in (("trained", args.model), ("random_init", str(twin))):
            run = run_probing(ref, args.fixtures, tmp / "out", args.seeds, control_task=True, device="cpu",
                              cache_dir=tmp / "cache", report=print)
            runs[label] = per_dataset(run.results_csv)
            raw = read_results_csv(run.results_csv, "m")
            # Mean over the datasets for each seed: its spread is the seed noise of the average.
            seed_means[label] = raw[raw["control_task_type"] == "NONE"].groupby("seed")["score"].mean()
        fixture = {
            label: {
                "per_dataset": {r.probing_dataset: {"score": round(r.score, 4), "control": round(r.control_score, 4)}
                                for r in frame.itertuples()},
                "mean_score": round(float(frame["score"].mean()), 4),
                "mean_control": round(float(frame["control_score"].mean()), 4),
            }
            for label, frame in runs.items()
        }
        for label in fixture:
            fixture[label]["seed_std_of_mean"] = round(float(seed_means[label].std(ddof=1)), 4)
        result["fixtures"] = fixture
        trained, random_init = fixture["trained"]["mean_score"], fixture["random_init"]["mean_score"]
        checks["trained_not_worse_than_random"] = trained >= random_init
        checks["control_near_chance"] = all(
            abs(fixture[k]["mean_control"] - CHANCE) <= CHANCE_TOLERANCE for k in fixture)
        print(f"fixtures: trained {fixture['trained']['mean_score']:.3f} (control "
              f"{fixture['trained']['mean_control']:.3f}) vs random-init {fixture['random_init']['mean_score']:.3f} "
              f"(control {fixture['random_init']['mean_control']:.3f}); seed std of the means "
              f"{fixture['trained']['seed_std_of_mean']:.3f} / {fixture['random_init']['seed_std_of_mean']:.3f}")

        mapping_csv = args.mapping or find_mapping([args.zoo_data])
        # The random twin too: it shows how much of a probe's score is surface form (lexical
        # cues a random encoder passes through) rather than learned knowledge.
        for label, ref in (("trained", args.model), ("random_init", str(twin))):
            run = run_probing(ref, args.zoo_data, tmp / "out", args.seeds, control_task=True, device="cpu",
                              cache_dir=tmp / "cache", report=print)
            per = dataset_scores(read_results_csv(run.results_csv, "m"))
            result[f"zoo_per_dataset_{label}"] = {
                r.probing_dataset: {"score": round(r.score, 4), "control": round(r.control_score, 4)}
                for r in selectivity(per).itertuples()
            }
            if mapping_csv is None:
                print("no competence mapping CSV found for the zoo probing sets")
                checks["zoo_clearly_above_control_on_3_of_5"] = False
                continue
            comp = competence_scores(per, load_mapping(mapping_csv))
            result[f"zoo_competences_{label}"] = {
                r.competence: {"score": round(r.score, 4), "control": round(r.control_score, 4),
                               "selectivity": round(r.selectivity, 4), "n_datasets": int(r.n_datasets)}
                for r in comp.itertuples()
            }
            for r in comp.itertuples():
                print(f"zoo {label:<11} {r.competence:<11} score {r.score:.3f} control {r.control_score:.3f} "
                      f"selectivity {r.selectivity:+.3f}")
            if label == "trained":
                clear = [r.competence for r in comp.itertuples() if r.selectivity >= CLEAR_MARGIN]
                result["zoo_clearly_above_control"] = clear
                checks["zoo_clearly_above_control_on_3_of_5"] = len(clear) >= 3
    result["checks"] = checks
    for name, ok in checks.items():
        print(f"{name}: {'OK' if ok else 'MISSED'}")
    out = ROOT / "benchmarks" / "results" / "probing_sanity.json"
    write_json(out, result)  # atomic: never a half-written result
    print(f"wrote {out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
