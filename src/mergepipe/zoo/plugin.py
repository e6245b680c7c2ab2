"""The demo zoo's registration with the pipeline: its one seam (see :mod:`mergepipe.core.plugins`).

Registered as the ``zoo`` entry point of the ``mergepipe.plugins`` group (pyproject.toml):
``zoo://`` model references, the ``zoo`` / ``zoo_*`` lm-eval tasks, the probing sets as the
default Holmes data, and the build as a stage of its own when a config uses any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergepipe.core.plugins import ModelScheme, Preparation, ProbingSource, Registry, TaskSource
from mergepipe.zoo.store import SCHEME


def is_zoo_task(name: str) -> bool:
    return name == "zoo" or name.startswith("zoo_")


def _resolve(reference: str) -> Path:
    from mergepipe import zoo

    return zoo.resolve_reference(reference)


def _include_path() -> Path:
    from mergepipe import zoo

    return zoo.task_include_path()


def _probing_dir() -> Path:
    from mergepipe import zoo

    return zoo.probing_data_dir()


def needed(config: Any) -> bool:
    """Whether a pipeline config uses the zoo: a zoo model, a zoo task, or the default probing data."""
    refs = [m.path for m in ([config.base_model] if config.base_model else []) + list(config.models)]
    if any(r.startswith(SCHEME) for r in refs):
        return True
    ev = config.evaluate
    if ev.do_harness and any(is_zoo_task(t) for tasks in ev.suites.values() for t in tasks):
        return True
    return bool(ev.do_holmes and config.holmes.engine == "builtin" and config.holmes.data_dir is None)


def _build() -> Any:
    from mergepipe import zoo

    return zoo.ensure_built()


def register(registry: Registry) -> None:
    registry.add_model_scheme(ModelScheme(SCHEME, _resolve))
    registry.add_task_source(TaskSource("zoo", is_zoo_task, _include_path))
    registry.add_probing_source(ProbingSource("zoo", _probing_dir))
    registry.add_preparation(Preparation("zoo", needed, _build))
