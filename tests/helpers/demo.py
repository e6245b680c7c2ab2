"""A real (reduced) demo run, shared by the end-to-end and notebook tests."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.paths import REPO

DEMO_METHODS = ["linear", "task_arithmetic",
                {"name": "ties", "parameters": {"density": 0.3}},
                {"name": "ties", "parameters": {"density": 0.7}}]


def reduced_demo_config(work: Path, methods: list | None = None) -> Path:
    """The demo's shape (zoo pair, base, merges incl. a parameter sweep, harness + Holmes), sized for CI."""
    import yaml

    config = {
        "run": "e2e",
        "base_model": "zoo://base",
        "models": ["zoo://inc", "zoo://next"],
        "dtype": "float32",
        "merge": {"methods": methods or DEMO_METHODS},
        "evaluate": {"roles": ["base", "experts", "merged"], "suites": {"zoo": ["zoo_inc", "zoo_next"]},
                     "do_harness": True, "do_holmes": True,
                     "limit": 40, "batch_size": 32, "jobs": 2},
        "holmes": {"seeds": 1, "control_task": True},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_script(work: Path, *args: str):
    import subprocess

    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.Popen([str(REPO / "script.sh"), *args], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
