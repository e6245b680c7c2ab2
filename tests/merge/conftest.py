"""Fixtures of the merge tests."""

from __future__ import annotations

import pytest

from tests.helpers.adapters import AdapterFamily, make_adapter_family


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> AdapterFamily:
    """LoRA adapters of the tiny base (ranks 4 and 8, several target sets) and broken variants."""
    return make_adapter_family(tmp_path_factory.mktemp("adapters"), tiny_models.base, tiny_models.other_arch)
