"""Tiny local lm-eval tasks for tests, and the environment a job subprocess runs with."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_tasks(root: Path) -> Path:
    """Two tiny local lm-eval tasks (multiple choice + generation) with absolute data paths."""
    root.mkdir(parents=True, exist_ok=True)
    docs = [
        {"question": f"{a}+{b}=", "answer": str(a + b), "choices": [str(a + b), str(a + b + 1), str(a * b + 3)],
         "label": 0}
        for a in range(4) for b in range(3)
    ]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common + "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (root / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common + "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 4\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    return root


def job_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}
