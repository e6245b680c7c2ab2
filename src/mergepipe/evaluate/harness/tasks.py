"""Which lm-eval tasks a job runs: names resolved, task folders checked, built-in tasks indexed
only when needed.

Only the task folders we know of (``include_paths``, and a plugin's folder for a task name it
provides, such as the demo zoo's) are indexed; lm-eval's thousands of built-in task YAMLs are
indexed only when a requested name is not found there. No task is special-cased here: a
plugin's tasks are found through :mod:`mergepipe.core.plugins`.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergepipe.core.plugins import registry
from mergepipe.errors import MergepipeError, close_matches
from mergepipe.evaluate.harness.offline import ensure_offline_if_unreachable
from mergepipe.evaluate.harness.results import versions


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


def builtin_task_names() -> list[str]:
    """Names of lm-eval's built-in tasks, groups and tags, cached per lm-eval version.

    Indexing the built-in YAMLs takes seconds to tens of seconds; the names only change with
    the lm-eval version, so validating a task name (and suggesting close ones) is instant after
    the first time.
    """
    from mergepipe.core.atomic import write_json
    from mergepipe.core.paths import cache_dir

    version = versions()["lm_eval_version"]
    cache = cache_dir() / f"lm_eval_task_names-{version}.json"
    try:
        names = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(names, list):
            return names
    except (OSError, json.JSONDecodeError):
        pass
    from lm_eval.tasks import TaskManager

    names = list(TaskManager(include_defaults=True).all_tasks)
    with contextlib.suppress(OSError):  # a read-only cache only costs time
        write_json(cache, names)
    return names


def _missing(manager: Any, tasks: list[str]) -> list[str]:
    return [t for t in tasks if t not in manager.all_tasks and not Path(t).is_file()]


def select_tasks(tasks: list[str], include_paths: list[Path], load_builtin: bool = True) -> TaskSelection:
    """A TaskManager that knows every requested task, indexing built-in tasks only if needed.

    Raises a one-line error naming unknown tasks with their closest known names. With
    ``load_builtin`` False the names are only validated (the scheduler's pre-flight check).
    """
    from lm_eval.tasks import TaskManager

    include_paths = list(include_paths)
    check_task_yamls(include_paths)
    paths = [str(p) for p in include_paths] or None
    manager = TaskManager(include_path=paths, include_defaults=False)
    missing = _missing(manager, tasks)
    # A plugin that provides a missing name adds its folder (built on first use).
    plugin_paths = []
    for name in missing:
        source = registry().task_source_for(name)
        if source is not None:
            folder = Path(source.include_path())
            if folder not in include_paths and folder not in plugin_paths:
                plugin_paths.append(folder)
    if plugin_paths:
        include_paths += plugin_paths
        paths = [str(p) for p in include_paths]
        manager = TaskManager(include_path=paths, include_defaults=False)
        missing = _missing(manager, tasks)
    if not missing:
        return TaskSelection(manager, False, include_paths)
    builtin = builtin_task_names()
    unknown = [t for t in missing if t not in builtin]
    if unknown:
        known = set(manager.all_tasks) | set(builtin)
        parts = []
        for name in unknown:
            close = close_matches(name, known, n=3)
            parts.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise MergepipeError(f"unknown lm-eval task {'; '.join(parts)}")
    # Built-in tasks fetch their data from the Hub: go offline up front when it is unreachable,
    # so a missing dataset fails in one clear line instead of after minutes of retries.
    ensure_offline_if_unreachable()
    if load_builtin:
        manager = TaskManager(include_path=paths, include_defaults=True)
    return TaskSelection(manager, True, include_paths)


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
