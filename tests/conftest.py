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
