"""Shared fixtures. Heavy artefacts (the demo zoo, tiny models) are built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"

# Tests never touch the network: Hub lookups must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """A base and three experts: tiny random Llama models sharing one architecture."""
    from tiny_models import make_model_family

    return make_model_family(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def zoo():
    """The demo zoo's manifest: built once per machine (shared cache), reused by every test."""
    from mergepipe.zoo import ensure_built

    return ensure_built()


# -- a real (reduced) demo run, shared by the end-to-end and notebook tests -------------------

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


@pytest.fixture(scope="session")
def demo_run(zoo, tmp_path_factory: pytest.TempPathFactory):
    """One reduced demo run through script.sh: (work dir, exit code, output)."""
    work = tmp_path_factory.mktemp("demo_run")
    reduced_demo_config(work)
    proc = start_script(work, "--config", "pipeline.yaml")
    out, _ = proc.communicate(timeout=1200)
    return work, proc.returncode, out
