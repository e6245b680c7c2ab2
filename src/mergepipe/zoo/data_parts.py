"""Build the zoo's data parts (lm-eval tasks, probing sets) and tell when they are stale.

They take about a second to write, so unlike the models they are not keyed by a cache folder
of their own: each is stamped with the hash of the code that wrote it and rewritten when that
code changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mergepipe.zoo import probing, tasks
from mergepipe.zoo.build import BUILD_INFO, timed_part

_PACKAGE_DIR = Path(__file__).resolve().parent
# The modules whose code decides each part's files.
PART_MODULES = {
    "tasks": ("corpus.py", "skills.py", "tasks.py", "data_parts.py"),
    "probing": ("language.py", "probing.py", "data_parts.py"),
}


def part_hash(part: str) -> str:
    digest = hashlib.sha256()
    for name in PART_MODULES[part]:
        digest.update(name.encode() + b"\0" + (_PACKAGE_DIR / name).read_bytes() + b"\0")
    return digest.hexdigest()


def is_current(folder: Path) -> bool:
    try:
        info = json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("code_hash") == part_hash(folder.name)


def build_tasks(out: Path, seed: int) -> None:
    # The YAMLs name their data by absolute path: the final folder, not the temporary one.
    def make(tmp: Path) -> None:
        tasks.write_tasks(tmp, seed, data_root=out)

    timed_part(out, make, stamp={"code_hash": part_hash("tasks")})


def build_probing(out: Path, seed: int) -> None:
    def make(tmp: Path) -> dict:
        return {"mapping": probing.write_probing(tmp, seed).name}

    timed_part(out, make, stamp={"code_hash": part_hash("probing")})
