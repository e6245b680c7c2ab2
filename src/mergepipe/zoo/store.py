"""Where a zoo build lives, its cache key, the build lock and the manifest.

The cache folder is ``<zoo_dir>/<code-hash>-seed<seed>/``: the hash covers the source files
that decide the models, so changing how the zoo is built gives a new folder and a fresh machine
(or changed code) rebuilds, while tests, CI and the demo on one machine share one build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mergepipe.core import atomic
from mergepipe.core.paths import project_root
from mergepipe.errors import MergepipeError
from mergepipe.zoo.recipe import DEFAULT_PAIR, DEFAULT_SEED, LORA_SKILLS
from mergepipe.zoo.skills import SKILLS
from mergepipe.zoo.tasks import GROUP, task_names

MANIFEST = "manifest.json"
SCHEME = "zoo://"
_PACKAGE_DIR = Path(__file__).resolve().parent


def zoo_dir() -> Path:
    """The demo zoo's cache; ``MERGEPIPE_ZOO_DIR`` overrides the default ``environments/zoo``."""
    env = os.environ.get("MERGEPIPE_ZOO_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / "environments" / "zoo"


# The modules whose code decides the model weights (the data parts carry their own stamp).
BUILD_MODULES = (
    "build.py",
    "corpus.py",
    "language.py",
    "recipe.py",
    "skills.py",
    "tokenizer.py",
    "training.py",
)


def code_hash() -> str:
    digest = hashlib.sha256()
    for name in BUILD_MODULES:
        digest.update(name.encode() + b"\0" + (_PACKAGE_DIR / name).read_bytes() + b"\0")
    return digest.hexdigest()


def seed_from_env() -> int:
    raw = os.environ.get("MERGEPIPE_ZOO_SEED", "")
    if not raw:
        return DEFAULT_SEED
    try:
        return int(raw)
    except ValueError:
        raise MergepipeError(f"MERGEPIPE_ZOO_SEED must be an integer, got {raw!r}") from None


def build_root(seed: int) -> Path:
    return zoo_dir() / f"{code_hash()[:16]}-seed{seed}"


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """An exclusive lock per build folder, so parallel processes never build twice."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class ZooModel:
    name: str  # the part after zoo://
    path: str
    kind: str  # base / expert / lora
    skill: str | None
    tasks: list[str]
    build_seconds: float
    peak_rss_mib: float

    @property
    def reference(self) -> str:
        return SCHEME + self.name


@dataclass
class Manifest:
    root: str
    seed: int
    code_hash: str
    models: list[ZooModel]
    task_include_path: str
    task_group: str
    probing_data_dir: str
    mapping_csv: str
    default_pair: list[str]
    skills: list[dict] = field(default_factory=list)
    created: float = 0.0

    @property
    def experts(self) -> list[str]:
        return [m.skill for m in self.models if m.kind == "expert" and m.skill]

    def model(self, name: str) -> ZooModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        models = [ZooModel(**m) for m in data.pop("models")]
        return cls(models=models, **data)

    @classmethod
    def load(cls, root: Path) -> Manifest | None:
        path = root / MANIFEST
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            return None  # missing, or written by an older layout: rescan


def all_names() -> list[str]:
    """Every name the zoo can build, in order."""
    names = ["base"] + [s.name for s in SKILLS]
    return names + [f"{s}-lora" for s in LORA_SKILLS]


def scan(root: Path, seed: int) -> Manifest:
    """Describe the finished parts present in ``root``."""
    from mergepipe.zoo.build import BUILD_INFO

    all_tasks = [t for s in SKILLS for t in task_names(s.name)]

    def entry(name: str, kind: str, skill: str | None) -> ZooModel:
        info = json.loads((root / name / BUILD_INFO).read_text(encoding="utf-8"))
        return ZooModel(
            name=name,
            path=str(root / name),
            kind=kind,
            skill=skill,
            tasks=all_tasks if skill is None else task_names(skill),
            build_seconds=info["seconds"],
            peak_rss_mib=info["peak_rss_mib"],
        )

    models = [entry("base", "base", None)]
    models += [entry(s.name, "expert", s.name) for s in SKILLS if (root / s.name).is_dir()]
    models += [entry(f"{s}-lora", "lora", s) for s in LORA_SKILLS if (root / f"{s}-lora").is_dir()]
    return Manifest(
        root=str(root),
        seed=seed,
        code_hash=code_hash(),
        models=models,
        task_include_path=str(root / "tasks"),
        task_group=GROUP,
        probing_data_dir=str(root / "probing"),
        mapping_csv=str(root / "probing" / "mapping.csv"),
        default_pair=list(DEFAULT_PAIR),
        skills=[
            {
                "name": s.name,
                "description": s.description,
                "alphabet": s.alphabet,
                "example": {"prompt": s.prompt(s.alphabet[:3]), "answer": s.answer(s.alphabet[:3])},
                "tasks": task_names(s.name),
            }
            for s in SKILLS
        ],
        created=time.time(),
    )


def write_manifest(manifest: Manifest) -> None:
    atomic.write_json(Path(manifest.root) / MANIFEST, manifest.to_json())


def remove_build(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
