"""Fixtures of the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.lm_eval_tasks import write_tasks


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny local lm-eval tasks (tiny_mc, tiny_gen)."""
    return write_tasks(tmp_path_factory.mktemp("tasks"))
