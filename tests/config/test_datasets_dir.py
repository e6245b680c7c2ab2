"""Where the dataset mirror is: config field, environment, flags; and settings hashes that stay stable."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from mergepipe.commands.common import config_from_args
from mergepipe.commands.evaluate import section_overrides
from mergepipe.config import HarnessSettings
from mergepipe.evaluate.harness.dataset_mirror import default_dir
from mergepipe.evaluate.harness.results import settings_hash


def _args(config: Path, **extra: object) -> argparse.Namespace:
    base = {"config": str(config), "models": None, "base_model": None, "methods": None, "dtype": None,
            "seed": None, "run": None, "model_1": None, "model_2": None, "model_3": None}
    return argparse.Namespace(**{**base, **extra})


def test_datasets_dir_default_env_and_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "p.yaml"
    config.write_text("models: [zoo://inc]\nevaluate: {datasets_dir: from-file}\n")
    monkeypatch.delenv("MERGEPIPE_DATASETS_DIR", raising=False)
    assert config_from_args(_args(config)).evaluate.datasets_dir == tmp_path / "from-file"
    assert default_dir() == Path("datasets")
    monkeypatch.setenv("MERGEPIPE_DATASETS_DIR", "from-env")
    assert config_from_args(_args(config)).evaluate.datasets_dir == tmp_path / "from-env"
    assert default_dir() == Path("from-env")
    flagged = config_from_args(_args(config), {"evaluate.datasets_dir": "from-flag"})
    assert flagged.evaluate.datasets_dir == tmp_path / "from-flag"
    # mergepipe evaluate: the environment over the file, the flag over both.
    ns = argparse.Namespace(include_path=None, datasets_dir=None)
    assert section_overrides(ns)["datasets_dir"] == "from-env"
    ns.datasets_dir = Path("flag")
    assert section_overrides(ns)["datasets_dir"] == Path("flag")


def test_the_demo_still_runs_with_only_the_mirror_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pipeline.yaml here: the project's demo config is used
    monkeypatch.setenv("MERGEPIPE_DATASETS_DIR", "mirror")
    config = config_from_args(_args(Path("pipeline.yaml")))
    assert config.run == "demo" and config.evaluate.datasets_dir.name == "mirror"


def test_settings_hash_unchanged_by_the_new_max_gen_toks_field() -> None:
    settings = HarnessSettings(limit=4, seed=1, batch_size=2)
    old_fields = {k: v for k, v in settings.model_dump(mode="json").items() if k != "max_gen_toks"}
    old = hashlib.sha256(json.dumps({"model_id": "m", "tasks": ["t"], **old_fields}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    assert settings_hash("m", ["t"], settings) == old  # results made before the field existed still count
    assert settings_hash("m", ["t"], settings.model_copy(update={"max_gen_toks": 8})) != old
