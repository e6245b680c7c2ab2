"""Shared fixtures. Heavy artefacts (the demo zoo, tiny models) are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.demo import reduced_demo_config, start_script
from tests.helpers.paths import REPO

# Tests never touch the network: Hub lookups must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """A base and three experts: tiny random Llama models sharing one architecture."""
    from tests.helpers.tiny_models import make_model_family

    return make_model_family(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def zoo():
    """The demo zoo's manifest: built once per machine (shared cache), reused by every test."""
    from mergepipe.zoo import ensure_built

    return ensure_built()


@pytest.fixture(scope="session")
def demo_run(zoo, tmp_path_factory: pytest.TempPathFactory):
    """One reduced demo run through script.sh: (work dir, exit code, output)."""
    work = tmp_path_factory.mktemp("demo_run")
    reduced_demo_config(work)
    proc = start_script(work, "--config", "pipeline.yaml")
    out, _ = proc.communicate(timeout=1200)
    return work, proc.returncode, out
