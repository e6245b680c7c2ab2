"""The seam through which packages add model sources, task folders and probing data.

The pipeline never special-cases a model collection: a plugin registers

- a :class:`ModelScheme` (``zoo://name`` -> a local model folder, built on first use),
- a :class:`TaskSource` (task names it defines -> an lm-eval include folder),
- a :class:`ProbingSource` (the default Holmes data folder when ``holmes.data_dir`` is unset),
- a :class:`Preparation` (work the pipeline runs as a stage of its own before validation, such
  as building models, when a config uses the plugin).

Plugins are found through the ``mergepipe.plugins`` entry-point group (each entry is a
``register(registry)`` function) the first time the registry is asked, so nothing imports a
plugin's code unless it is installed. The demo zoo is one (:mod:`mergepipe.zoo.plugin`); a
user's own model collection can be another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from mergepipe.errors import MergepipeError

ENTRY_POINT_GROUP = "mergepipe.plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelScheme:
    prefix: str  # e.g. "zoo://"
    resolve: Callable[[str], Path]  # reference -> local folder (may build it)

    @property
    def name(self) -> str:
        return self.prefix.split(":", 1)[0]

    def id_stem(self, reference: str) -> str:
        """The readable part of a results id: ``zoo://inc`` -> ``zoo-inc``."""
        return f"{self.name}-{reference[len(self.prefix):].strip('/')}"


@dataclass(frozen=True)
class TaskSource:
    name: str
    provides: Callable[[str], bool]  # does this source define this task / group name?
    include_path: Callable[[], Path]  # the folder to hand lm-eval (may build it)


@dataclass(frozen=True)
class ProbingSource:
    name: str
    data_dir: Callable[[], Path]  # folder of Holmes dataset folders (with its mapping CSV)


@dataclass(frozen=True)
class Preparation:
    name: str  # shown as a stage of the run ("zoo")
    needed: Callable[[Any], bool]  # given the PipelineConfig
    run: Callable[[], Any]  # builds what the config needs; shows its own progress


@dataclass
class Registry:
    model_schemes: list[ModelScheme] = field(default_factory=list)
    task_sources: list[TaskSource] = field(default_factory=list)
    probing_sources: list[ProbingSource] = field(default_factory=list)
    preparations: list[Preparation] = field(default_factory=list)

    def add_model_scheme(self, scheme: ModelScheme) -> None:
        if any(s.prefix == scheme.prefix for s in self.model_schemes):
            raise MergepipeError(f"model scheme {scheme.prefix} is registered twice")
        self.model_schemes.append(scheme)

    def add_task_source(self, source: TaskSource) -> None:
        self.task_sources.append(source)

    def add_probing_source(self, source: ProbingSource) -> None:
        self.probing_sources.append(source)

    def add_preparation(self, preparation: Preparation) -> None:
        self.preparations.append(preparation)

    def scheme_for(self, reference: str) -> ModelScheme | None:
        return next((s for s in self.model_schemes if reference.startswith(s.prefix)), None)

    def task_source_for(self, task: str) -> TaskSource | None:
        return next((s for s in self.task_sources if s.provides(task)), None)

    def default_probing_source(self) -> ProbingSource | None:
        return self.probing_sources[0] if self.probing_sources else None


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The registry, with every installed plugin registered (loaded once per process)."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                entry.load()(reg)
            except Exception as exc:  # a broken plugin must not break the pipeline
                log.warning("plugin %s could not be loaded: %s", entry.name, exc)
        _REGISTRY = reg
    return _REGISTRY
