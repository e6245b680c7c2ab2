"""Which lm-eval tasks a job runs: names resolved, task folders checked, built-in tasks indexed
only when needed.

Only the task folders we know of (``include_paths``, a plugin's folder for a task name it
provides, such as the demo zoo's, and the generated tinyBenchmarks ``_mean`` folder) are
indexed; lm-eval's thousands of built-in task YAMLs are looked up in a cached index, and a job
indexes only the built-in folders its tasks live in. No task is special-cased here: a plugin's
tasks are found through :mod:`mergepipe.core.plugins`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergepipe.core.plugins import registry
from mergepipe.errors import MergepipeError, close_matches
from mergepipe.evaluate.harness.catalog import Resolution, builtin_index, builtin_task_names, describe_manager, resolve
from mergepipe.evaluate.harness.offline import ensure_offline_if_unreachable

__all__ = ["FoundTasks", "TaskSelection", "builtin_task_names", "check_backend", "check_task_yamls",
           "find_tasks", "include_paths_for", "parse_tasks", "select_tasks"]


def parse_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"a,b c"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    names: list[str] = []
    for item in items:
        for name in re.split(r"[,\s]+", item.strip()):
            if name and name not in names:
                names.append(name)
    if not names:
        raise MergepipeError("TASKS: no task names given")
    return names


def check_backend(backend: str) -> None:
    """The vllm backend needs the vllm package, which is not part of the default environment."""
    import importlib.util

    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise MergepipeError("--backend vllm: the vllm package is not installed (pip install 'lm-eval[vllm]' "
                             "into environments/main, on a machine with a CUDA GPU)")


def check_task_yamls(include_paths: list[Path]) -> None:
    """Parse every task YAML under ``include_paths``; lm-eval would silently skip a broken one."""
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    for root in include_paths:
        files = [root] if root.is_file() else sorted(root.glob("**/*.yaml"))
        for path in files:
            try:
                load_yaml(path, resolve_func=False, recursive=False)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" line {mark.line + 1}" if mark else ""
                problem = getattr(exc, "problem", None) or "syntax error"
                raise MergepipeError(f"task YAML {path}:{where}: {problem}") from None
            except (OSError, ValueError) as exc:
                raise MergepipeError(f"task YAML {path}: {exc}") from None


def include_paths_for(include_paths: list[Path | str] | None) -> list[Path]:
    """The user's task folders, absolute; a folder that does not exist is an error."""
    paths: list[Path] = []
    for p in include_paths or []:
        path = Path(p).expanduser().resolve()
        if not path.exists():
            raise MergepipeError(f"--include-path: task folder not found: {path}")
        if path not in paths:
            paths.append(path)
    return paths


@dataclass
class TaskSelection:
    task_manager: Any
    uses_builtin: bool
    include_paths: list[Path] = field(default_factory=list)
    resolution: Resolution | None = None


@dataclass
class FoundTasks:
    """Every requested name found: in the include paths (ours, plugins', generated) or built in."""

    tasks: list[str]
    include_paths: list[Path]
    manager: Any  # a TaskManager over ``include_paths`` only
    builtin: list[str]  # requested names only lm-eval's built-in tasks define
    _entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lookup(self, name: str) -> dict[str, Any] | None:
        if name in self._entries:
            return self._entries[name]
        return builtin_index().get(name)

    def resolve(self) -> Resolution:
        return resolve(self.tasks, self.lookup)


def _missing(manager: Any, tasks: list[str]) -> list[str]:
    return [t for t in tasks if t not in manager.all_tasks and not Path(t).is_file()]


def find_tasks(tasks: list[str], include_paths: list[Path]) -> FoundTasks:
    """Find every requested name; a one-line error names unknown ones with their closest known names.

    Only the task folders we know of are indexed (the user's, and a plugin's or the generated
    tinyBenchmarks ``_mean`` folder for a name it provides); lm-eval's built-in tasks come from
    the cached index (:mod:`mergepipe.evaluate.harness.catalog`).
    """
    from lm_eval.tasks import TaskManager

    from mergepipe.evaluate.harness import tinybench

    include_paths = list(include_paths)
    check_task_yamls(include_paths)
    manager = TaskManager(include_path=[str(p) for p in include_paths] or None, include_defaults=False)
    missing = _missing(manager, tasks)
    # A plugin that provides a missing name adds its folder (built on first use).
    extra: list[Path] = []
    for name in missing:
        source = registry().task_source_for(name)
        folder = Path(source.include_path()) if source is not None else (
            tinybench.mean_tasks_folder() if tinybench.provides(name) else None)
        if folder is not None and folder not in include_paths and folder not in extra:
            extra.append(folder)
    if extra:
        include_paths += extra
        manager = TaskManager(include_path=[str(p) for p in include_paths], include_defaults=False)
        missing = _missing(manager, tasks)
    builtin: list[str] = []
    if missing:
        known_builtin = builtin_index()
        unknown = [t for t in missing if t not in known_builtin]
        if unknown:
            known = set(manager.all_tasks) | set(known_builtin)
            parts = []
            for name in unknown:
                close = close_matches(name, known, n=3)
                parts.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise MergepipeError(f"unknown lm-eval task {'; '.join(parts)}")
        builtin = missing
    return FoundTasks(list(tasks), include_paths, manager, builtin, describe_manager(manager))


def select_tasks(tasks: list[str], include_paths: list[Path], load_builtin: bool = True) -> TaskSelection:
    """A TaskManager that knows every requested task, indexing built-in tasks only if needed.

    Raises a one-line error naming unknown tasks with their closest known names. With
    ``load_builtin`` False the names are only validated (the scheduler's pre-flight check).
    Built-in tasks are loaded by indexing only the folders that define them (found in the cached
    index); lm-eval's whole task tree is indexed only if that ever misses a name.
    """
    found = find_tasks(tasks, include_paths)
    resolution = found.resolve()
    uses_builtin = bool(found.builtin or resolution.builtin_folders)
    if not uses_builtin:
        return TaskSelection(found.manager, False, found.include_paths, resolution)
    # Built-in tasks fetch their data from the Hub: go offline up front when it is unreachable,
    # so a missing dataset fails in one clear line instead of after minutes of retries.
    ensure_offline_if_unreachable()
    manager = found.manager
    if load_builtin:
        from lm_eval.tasks import TaskManager

        paths = [str(p) for p in (*resolution.builtin_folders, *found.include_paths)]
        manager = TaskManager(include_path=paths, include_defaults=False)
        if _missing(manager, tasks):
            manager = TaskManager(include_path=[str(p) for p in found.include_paths] or None,
                                  include_defaults=True)
    return TaskSelection(manager, True, found.include_paths, resolution)


def leaf_tasks(manager: Any, name: str) -> set[str]:
    """The tasks a task, group or tag name stands for, groups and tags expanded (from the index:
    nothing is loaded). A name the index does not know stands for itself."""
    seen: set[str] = set()

    def expand(item: Any) -> set[str]:
        if isinstance(item, dict):
            item = item.get("task") or item.get("group")
        if not isinstance(item, str) or item in seen:
            return set()
        seen.add(item)
        entry = manager.task_index.get(item)
        kind = getattr(getattr(entry, "kind", None), "name", "")
        if kind == "GROUP":
            members = (entry.cfg or {}).get("task") or []
            return set().union(*(expand(m) for m in (members if isinstance(members, list) else [members])))
        if kind == "TAG":
            return set().union(*(expand(m) for m in sorted(entry.tags)))
        return {item}

    return expand(name)
