"""The built-in demo zoo: a tiny Llama base, experts fine-tuned from it on distinct synthetic
skills (full and LoRA), lm-eval tasks for every skill and Holmes-format probing sets.

Built offline and deterministically on first use, cached per machine (see
:mod:`mergepipe.zoo.store`). ``zoo://base``, ``zoo://<skill>`` and ``zoo://<skill>-lora``
resolve to model folders wherever a model path is accepted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mergepipe.core import atomic
from mergepipe.errors import MergepipeError, ModelError
from mergepipe.zoo.recipe import DEFAULT_EXPERTS, DEFAULT_PAIR, LORA_SKILLS, RECIPE
from mergepipe.zoo.skills import MAX_EXPERTS, SKILL_NAMES, SKILLS
from mergepipe.zoo.store import SCHEME, Manifest, ZooModel, all_names

__all__ = [
    "DEFAULT_PAIR",
    "SKILL_NAMES",
    "Manifest",
    "ZooModel",
    "ensure_built",
    "is_zoo_reference",
    "probing_data_dir",
    "resolve_reference",
    "task_include_path",
]

log = logging.getLogger(__name__)


def is_zoo_reference(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith(SCHEME)


def ensure_built(experts: int = DEFAULT_EXPERTS, seed: int | None = None, force: bool = False) -> Manifest:
    """Return the zoo's manifest, building whatever is missing: the base, the first
    ``experts`` experts (in skill order), the LoRA experts, the tasks and the probing sets."""
    from mergepipe.zoo import build, data_parts, store

    if not 1 <= experts <= MAX_EXPERTS:
        raise MergepipeError(f"--experts must be between 1 and {MAX_EXPERTS}, got {experts}")
    seed = store.seed_from_env() if seed is None else seed
    root = store.build_root(seed)
    if not force:
        manifest = Manifest.load(root)
        if manifest is not None and len(manifest.experts) >= experts and _data_current(root):
            return manifest
    with store.build_lock(root):
        if force:
            store.remove_build(root)
        root.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale_temporaries(root)
        base_dir = root / "base"
        todo = [("base", lambda step: build.build_base(base_dir, seed, step), RECIPE.base.steps)]
        todo += [(s.name, lambda step, s=s: build.build_expert(root / s.name, base_dir, s, seed, step),
                  RECIPE.expert.steps) for s in SKILLS[:experts]]
        todo += [(f"{s.name}-lora", lambda step, s=s: build.build_lora(root / f"{s.name}-lora", base_dir, s, seed,
                                                                        step), RECIPE.lora.steps)
                 for s in SKILLS if build.wants_lora(s)]
        todo = [item for item in todo if not (root / item[0]).is_dir()]
        if todo:
            log.warning("zoo: building %d model(s) of the demo zoo in %s (first use; a few minutes)",
                        len(todo), root)
        for i, (name, make, steps) in enumerate(todo, 1):
            with _progress(f"zoo [{i}/{len(todo)}] {name}", steps) as bar:
                make(bar.update)
        if not data_parts.is_current(root / "tasks"):
            data_parts.build_tasks(root / "tasks", seed)
        if not data_parts.is_current(root / "probing"):
            data_parts.build_probing(root / "probing", seed)
        manifest = store.scan(root, seed)
        store.write_manifest(manifest)
    return manifest


@contextlib.contextmanager
def _progress(label: str, steps: int) -> Iterator[Callable[..., Any]]:
    """A training-step progress bar on stderr (a refreshed line on a terminal; TQDM_DISABLE=1 hides it)."""
    from tqdm.auto import tqdm

    with tqdm(total=steps, desc=label, unit="step", leave=True, mininterval=2.0) as bar:
        yield bar


def _data_current(root: Path) -> bool:
    from mergepipe.zoo import data_parts

    return data_parts.is_current(root / "tasks") and data_parts.is_current(root / "probing")


def resolve_reference(ref: str) -> Path:
    """The folder behind ``zoo://base``, ``zoo://<skill>`` or ``zoo://<skill>-lora``
    (building it if needed). A LoRA reference resolves to the PEFT adapter folder, whose
    ``adapter_config.json`` names the zoo base by absolute path."""
    if not is_zoo_reference(ref):
        raise ModelError(f"not a zoo reference: {ref!r} (expected {SCHEME}<name>)")
    name = ref[len(SCHEME) :].strip("/")
    if name not in all_names():
        available = ", ".join(SCHEME + n for n in all_names())
        raise ModelError(f"unknown zoo model '{ref}'; available: {available}")
    skill = name.removesuffix("-lora")
    needed = SKILL_NAMES.index(skill) + 1 if skill in SKILL_NAMES else 1
    manifest = ensure_built(experts=max(DEFAULT_EXPERTS, needed))
    return Path(manifest.model(name).path)


def task_include_path() -> Path:
    """The folder to pass to lm-eval's ``--include_path`` for the ``zoo`` tasks."""
    return Path(ensure_built().task_include_path)


def probing_data_dir() -> Path:
    """The folder holding the Holmes-format probing datasets (and ``mapping.csv``)."""
    return Path(ensure_built().probing_data_dir)


def lora_skills() -> tuple[str, ...]:
    return LORA_SKILLS
