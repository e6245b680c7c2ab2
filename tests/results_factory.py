"""Real results in the contracted layout, made in seconds, for organize/plots/report/notebook tests.

- models: a tiny base, two experts (tests/tiny_models.py) and two real mergekit SLERP merges of
  the experts (t = 0.3 and 0.7, a one-parameter sweep);
- harness: the real lm-eval (``lm_eval.simple_evaluate``, in-process) on a tiny local task set
  written into the folder (a multiple-choice group of two tasks with lm-eval's own group score,
  and a generate_until exact-match task with a filter), saved with lm-eval's EvaluationTracker
  into ``harness_results/<model-id>/<suite>/`` with ``model_info.json``;
- Holmes: the built-in probing engine (``mergepipe.evaluate.probing``) on the three shared
  FlashHolmes BLiMP datasets, 2 seeds plus the control task, into
  ``holmes_results/<model-id>/results_flash-holmes.csv``; the shared leaderboard CSV maps the
  datasets to competences.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

SUITE = "tiny"
TASKS = ["tiny", "tiny_copy"]


@dataclass(frozen=True)
class DemoResults:
    root: Path
    harness_dir: Path
    holmes_dir: Path
    mapping_csv: Path | None
    model_ids: tuple[str, ...]


def write_tasks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for a in range(6):
        for b in range(2):
            s = a + b
            docs.append({"q": f"{a}+{b}=", "a": str(s), "choices": [str(s), str(s + 1), str(s + 2)],
                         "label": (a + b) % 3})
    (folder / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'data.jsonl'}\n"
              "test_split: test\n")
    (folder / "tiny_copy.yaml").write_text(
        "task: tiny_copy\n" + common +
        'output_type: generate_until\ndoc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 2\n  do_sample: false\n'
        "filter_list:\n  - name: strip\n    filter:\n      - function: remove_whitespace\n"
        "      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    for name in ("a", "b"):
        (folder / f"tiny_mc_{name}.yaml").write_text(
            f"task: tiny_mc_{name}\n" + common +
            'output_type: multiple_choice\ndoc_to_text: "{{q}}"\ndoc_to_choice: "{{choices}}"\n'
            "doc_to_target: label\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")
    (folder / "tiny_group.yaml").write_text(
        "group: tiny\ntask: [tiny_mc_a, tiny_mc_b]\naggregate_metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    weight_by_size: true\n")
    return folder


def slerp_merge(expert_a: Path, expert_b: Path, out: Path, t: float) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    config = MergeConfiguration.model_validate({
        "merge_method": "slerp",
        "base_model": str(expert_a),
        "models": [{"model": str(expert_a)}, {"model": str(expert_b)}],
        "parameters": {"t": t},
        "dtype": "float32",
    })
    run_merge(config, str(out), MergeOptions(device="cpu", copy_tokenizer=True, lazy_unpickle=False,
                                             low_cpu_memory=False, random_seed=0))
    return out


def evaluate(model_dir: Path, model_id: str, tasks_dir: Path, harness_dir: Path, task_manager: object) -> Path:
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    staging = harness_dir / f".staging-{model_id}"
    tracker = EvaluationTracker(output_path=str(staging))
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=TASKS,
        task_manager=task_manager, batch_size=8, device="cpu", log_samples=True,
        evaluation_tracker=tracker,
    )
    samples = results.pop("samples")
    results["mergepipe"] = {"backend": "hf", "dtype": "float32", "batch_size": 8,
                            "apply_chat_template": False, "num_fewshot": None, "limit": None,
                            "suite": SUITE, "model_id": model_id}
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        if task in samples:
            tracker.save_results_samples(task_name=task, samples=samples[task])
    dest = harness_dir / model_id / SUITE
    dest.mkdir(parents=True, exist_ok=True)
    written = next(staging.glob("*/results_*.json"))
    for path in written.parent.iterdir():
        shutil.move(str(path), dest / path.name)
    shutil.rmtree(staging)
    return dest / written.name


def probe(model_dir: Path, holmes_dir: Path, info: dict, cache: Path, data_dir: Path) -> str:
    """The built-in Holmes engine on Holmes-format datasets (2 seeds + control task)."""
    from mergepipe.evaluate.probing import run_probing

    run = run_probing(str(model_dir), data_dir, holmes_dir, seeds=2,
                      control_task=True, device="cpu", cache_dir=cache, model_info=info)
    return run.model_id


def model_info(model_id: str, local_dir: Path, role: str, method: str | None = None,
               params: dict | None = None) -> dict:
    return {"model_id": model_id, "reference": str(local_dir), "local_dir": str(local_dir),
            "role": role, "merge_method": method, "merge_parameters": params, "run": "tiny-demo"}


def build_demo_results(root: Path, shared_fixtures: Path) -> DemoResults:
    """Everything above under ``root``; ~20 s of CPU."""
    import torch
    from lm_eval.tasks import TaskManager
    from tiny_models import make_expert, make_random

    from mergepipe import models

    torch.set_num_threads(1)
    models_dir = root / "models"
    base = make_random(models_dir / "base", seed=0)
    experts = [make_expert(base, models_dir / f"expert{i}", seed=100 + i, scale=0.2) for i in range(2)]
    merged = {t: slerp_merge(experts[0], experts[1], models_dir / f"slerp-t{t}", t) for t in (0.3, 0.7)}
    roles = [(base, "base", None, None)] + [(p, "expert", None, None) for p in experts]
    roles += [(p, "merged", "slerp", {"t": t}) for t, p in merged.items()]

    tasks_dir = write_tasks(root / "tasks")
    harness_dir, holmes_dir = root / "harness_results", root / "holmes_results"
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    ids = []
    for path, role, method, params in roles:
        model_id = models.model_id(str(path))  # the id every stage uses for this model
        info = model_info(model_id, path, role, method, params)
        probed = probe(path, holmes_dir, info, root / "cache", shared_fixtures / "holmes" / "flash-holmes")
        assert probed == model_id
        evaluate(path, model_id, tasks_dir, harness_dir, manager)
        (harness_dir / model_id / "model_info.json").write_text(json.dumps(info, indent=2))
        ids.append(model_id)
    mapping = root / "leaderboard-holmes.csv"
    shutil.copy(shared_fixtures / "holmes" / "leaderboard-holmes.csv", mapping)
    return DemoResults(root, harness_dir, holmes_dir, mapping, tuple(ids))


def existing_results(root: Path, scratch: Path) -> DemoResults:
    """A finished run's results (``root/harness_results``, ``root/holmes_results``), copied so
    tests never write into them; the mapping CSV is found by organize."""
    harness, holmes = scratch / "harness_results", scratch / "holmes_results"
    shutil.copytree(root / "harness_results", harness)
    shutil.copytree(root / "holmes_results", holmes)
    mapping = next(iter(sorted([*root.glob("*mapping*.csv"), *root.glob("*holmes*.csv")])), None)
    ids = tuple(sorted(p.parent.name for p in harness.glob("*/model_info.json")))
    return DemoResults(scratch, harness, holmes, mapping, ids)
