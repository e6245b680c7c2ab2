"""A finished run's results, copied into a scratch folder for the notebook tests.

The results come from a real (reduced) demo run (the ``demo_run`` fixture in conftest.py) or
from the folder named by ``MERGEPIPE_DEMO_RESULTS``; copying keeps tests from writing into them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoResults:
    root: Path
    harness_dir: Path
    holmes_dir: Path
    mapping_csv: Path | None
    model_ids: tuple[str, ...]


def existing_results(root: Path, scratch: Path) -> DemoResults:
    """A finished run's results (``root/harness_results``, ``root/holmes_results``), copied so
    tests never write into them; the mapping CSV is found by organize."""
    harness, holmes = scratch / "harness_results", scratch / "holmes_results"
    shutil.copytree(root / "harness_results", harness)
    shutil.copytree(root / "holmes_results", holmes)
    mapping = next(iter(sorted([*root.glob("*mapping*.csv"), *root.glob("*holmes*.csv")])), None)
    ids = tuple(sorted(p.parent.name for p in harness.glob("*/model_info.json")))
    return DemoResults(scratch, harness, holmes, mapping, ids)
