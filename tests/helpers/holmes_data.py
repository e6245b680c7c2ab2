"""Holmes-format dataset folders written the way upstream writes them, and the real fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.helpers.paths import FLASH_HOLMES

FLASH = FLASH_HOLMES
needs_fixtures = pytest.mark.skipif(not FLASH.is_dir(), reason="shared Holmes fixtures not present")


def write_dataset(root: Path, name: str, probe_type: str, rows: list[dict[str, Any]],
                  num_labels: int = 2, config: dict[str, Any] | None = None) -> Path:
    """A Holmes-format dataset folder (config-none.yaml + samples.csv) written like upstream."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"control_task_type": "NONE", "num_inputs": 1, "num_labels": num_labels, "num_probe_folds": 1,
           "probe_name": f"probe-{name}", "probe_task_type": probe_type,
           "probes_samples_path": f"general-probes/{name}/"}
    cfg.update(config or {})
    (folder / "config-none.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    frame = pd.DataFrame([
        {"inputs": r["inputs"], "context": r.get("context", ""), "topic": "", "org_label": r["label"],
         "set-0": r["split"], "string_label": r["label"], "label": r["label"], "id": i}
        for i, r in enumerate(rows)
    ])
    frame.to_csv(folder / "samples.csv", index=False)
    return folder


def split_rows(make: Any, n_train: int = 24, n_dev: int = 12, n_test: int = 16) -> list[dict[str, Any]]:
    rows = []
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows += [dict(make(i), split=split) for i in range(n)]
    return rows


def sentence_rows(n_train: int = 24, n_dev: int = 12, n_test: int = 16) -> list[dict[str, Any]]:
    words = ["cat", "dog", "stone", "cup"]
    return split_rows(lambda i: {"inputs": repr((f"the {words[i % 4]} sleeps {i}",)), "label": i % 2},
                      n_train, n_dev, n_test)


def token_rows() -> list[dict[str, Any]]:
    def make(i: int) -> dict[str, Any]:
        sent = f"the cat sees {i} dogs"
        s = sent.index("cat")
        d = sent.index("dogs")
        return {"context": repr([sent]), "inputs": repr([("cat", 0, s, s + 3), ("dogs", 0, d, d + 4)]),
                "label": i % 2}
    return split_rows(make)


def span_rows() -> list[dict[str, Any]]:
    def make(i: int) -> dict[str, Any]:
        first, second = f"a red cat {i}.", "it sleeps."
        return {"context": repr([first, second]),
                "inputs": repr([("red", 0, 2, 5, 0), ("cat", 0, 6, 9, 0), ("it", 1, 0, 2, 1)]),
                "label": i % 3}
    return split_rows(make)


def copy_fixture(name: str, dest: Path) -> Path:
    return Path(shutil.copytree(FLASH / name, dest / name))
