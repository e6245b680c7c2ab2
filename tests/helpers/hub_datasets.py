"""Small dataset repos in the Hub's layout, for built-in lm-eval tasks, made locally for tests.

Each repo is a folder ``<root>/<org>/<name>/`` holding what ``snapshot_download(repo_type="dataset")``
would bring: a ``README.md`` whose YAML front matter has a ``configs:`` block, and one JSON-lines
data file per split. Only a few items each, with the fields the lm-eval task reads:

- ``aps/super_glue`` (config ``boolq``): BoolQ, a ``multiple_choice`` task;
- the six ``tinyBenchmarks/*`` repos of lm-eval's ``tinyBenchmarks`` group;
- ``openai/gsm8k`` (config ``main``): GSM8K, a ``generate_until`` task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

Splits = dict[str, list[dict[str, Any]]]


def write_repo(root: Path, repo_id: str, configs: dict[str | None, Splits]) -> Path:
    """``root/repo_id`` with a README ``configs:`` block and ``<config>/<split>.jsonl`` files."""
    folder = root / repo_id
    folder.mkdir(parents=True, exist_ok=True)
    block = []
    for config, splits in configs.items():
        name = config or "default"
        sub = folder / name
        sub.mkdir(exist_ok=True)
        files = []
        for split, rows in splits.items():
            (sub / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            files.append({"split": split, "path": f"{name}/{split}.jsonl"})
        block.append({"config_name": name, "data_files": files})
    front = yaml.safe_dump({"configs": block}, sort_keys=False)
    (folder / "README.md").write_text(f"---\n{front}---\n\n# {repo_id} (test copy)\n", encoding="utf-8")
    return folder


def _boolq(n: int) -> list[dict[str, Any]]:
    return [{"passage": f"The number {i} is {'even' if i % 2 == 0 else 'odd'}.",
             "question": f"is {i} even", "label": int(i % 2 == 0), "idx": i} for i in range(n)]


def _arc(n: int) -> list[dict[str, Any]]:
    return [{"id": f"arc-{i}", "question": f"What comes after {i}?",
             "choices": {"text": [str(i + 1), str(i + 2), str(i + 3), str(i)], "label": ["A", "B", "C", "D"]},
             "answerKey": "A"} for i in range(n)]


def _gsm(n: int) -> list[dict[str, Any]]:
    return [{"question": f"What is {i} plus 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(n)]


def _mmlu(n: int) -> list[dict[str, Any]]:
    return [{"question": f"{i} + 1 =", "subject": "arithmetic", "choices": [str(i + 1), "0", "7", "9"],
             "answer": 0, "input_formatted": f"{i} + 1 =\nA. {i + 1}\nB. 0\nC. 7\nD. 9\nAnswer:"}
            for i in range(n)]


def _winogrande(n: int) -> list[dict[str, Any]]:
    return [{"sentence": f"Ann gave Bob {i} apples because _ had many.", "option1": "Ann", "option2": "Bob",
             "answer": "1"} for i in range(n)]


def _hellaswag(n: int) -> list[dict[str, Any]]:
    return [{"ind": i, "activity_label": "Counting", "ctx_a": f"She counts to {i}.", "ctx_b": "then she",
             "ctx": f"She counts to {i}. then she", "endings": [f"says {i + 1}.", "sleeps.", "eats.", "runs."],
             "source_id": "test", "split": "val", "split_type": "indomain", "label": "0"} for i in range(n)]


def _truthfulqa(n: int) -> list[dict[str, Any]]:
    return [{"question": f"Is {i} a number?",
             "mc1_targets": {"choices": ["Yes.", "No."], "labels": [1, 0]},
             "mc2_targets": {"choices": ["Yes.", "It is.", "No."], "labels": [1, 1, 0]}} for i in range(n)]


TINYBENCHMARKS_REPOS = {
    "tinyBenchmarks/tinyAI2_arc": lambda n: {"ARC-Challenge": {"train": _arc(n), "validation": _arc(n),
                                                                 "test": _arc(n)}},
    "tinyBenchmarks/tinyGSM8k": lambda n: {"main": {"train": _gsm(n), "test": _gsm(n)}},
    "tinyBenchmarks/tinyMMLU": lambda n: {"all": {"dev": _mmlu(n), "test": _mmlu(n)}},
    "tinyBenchmarks/tinyWinogrande": lambda n: {"winogrande_xl": {"train": _winogrande(n),
                                                                   "validation": _winogrande(n)}},
    "tinyBenchmarks/tinyHellaswag": lambda n: {None: {"train": _hellaswag(n), "validation": _hellaswag(n)}},
    "tinyBenchmarks/tinyTruthfulQA": lambda n: {"multiple_choice": {"validation": _truthfulqa(n)}},
}


def write_boolq(root: Path, n: int = 6) -> Path:
    return write_repo(root, "aps/super_glue", {"boolq": {"train": _boolq(n), "validation": _boolq(n)}})


def write_gsm8k(root: Path, n: int = 6) -> Path:
    return write_repo(root, "openai/gsm8k", {"main": {"train": _gsm(n), "test": _gsm(n)}})


def write_tinybenchmarks(root: Path, n: int = 6) -> list[Path]:
    return [write_repo(root, repo, make(n)) for repo, make in TINYBENCHMARKS_REPOS.items()]


def write_all(root: Path, n: int = 6) -> Path:
    """Every repo above under ``root`` (a dataset mirror); returns ``root``."""
    write_boolq(root, n)
    write_gsm8k(root, n)
    write_tinybenchmarks(root, n)
    return root
