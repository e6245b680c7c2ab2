"""lm-eval tasks for the zoo skills, written as data (JSONL) plus task YAMLs.

Per skill: ``zoo_<skill>`` (generate_until, exact match after stripping whitespace) and
``zoo_<skill>_mc`` (multiple_choice over the right answer and three wrong answers of the same
shape). The group ``zoo`` covers them all. Data paths in the YAMLs are absolute because
lm-eval resolves relative ``data_files`` against the current directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mergepipe.zoo.corpus import test_items
from mergepipe.zoo.skills import SKILLS

GROUP = "zoo"
MAX_GEN_TOKS = 16


def gen_task(skill: str) -> str:
    return f"zoo_{skill}"


def mc_task(skill: str) -> str:
    return f"zoo_{skill}_mc"


def task_names(skill: str) -> list[str]:
    return [gen_task(skill), mc_task(skill)]


def _dataset(path: Path) -> dict:
    return {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
    }


def gen_yaml(skill: str, data: Path) -> dict:
    return {
        "task": gen_task(skill),
        **_dataset(data),
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": MAX_GEN_TOKS, "do_sample": False},
        # exact_match compares raw strings; a leading space or the stop newline would fail it.
        "filter_list": [{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def mc_yaml(skill: str, data: Path) -> dict:
    return {
        "task": mc_task(skill),
        **_dataset(data),
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        # The models saw answers directly after '=', with no space.
        "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_tasks(out: Path, seed: int, data_root: Path | None = None) -> list[str]:
    """Write data and YAMLs for every skill into ``out``; return all task names.

    The YAMLs point at ``data_root`` (default ``out``): the folder ``out`` will be renamed to.
    """
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    final_data_dir = (data_root or out).resolve() / "data"
    names: list[str] = []
    for s in SKILLS:
        data = final_data_dir / f"{s.name}.jsonl"
        with (data_dir / data.name).open("w", encoding="utf-8") as fh:
            for item in test_items(s, seed):
                row = {
                    "input": item.input,
                    "prompt": item.prompt,
                    "answer": item.answer,
                    "choices": list(item.choices),
                    "gold": item.gold,
                }
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        for doc in (gen_yaml(s.name, data), mc_yaml(s.name, data)):
            _dump(out / f"{doc['task']}.yaml", doc)
            names.append(doc["task"])
    _dump(out / f"{GROUP}.yaml", {"group": GROUP, "task": names, "metadata": {"version": 1.0}})
    return names


def _dump(path: Path, doc: dict) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
