"""What a task name stands for: its leaf tasks, their YAML files, Python functions and datasets.

lm-eval's built-in tasks (about 15 000 names) take tens of seconds to index. They are indexed
once per lm-eval installation into a compact cache (``lm_eval_index-<version>-<hash>.json``
under the cache folder): per name its kind, its YAML file, and for a task its dataset, for a
group its children, for a tag its members. From it a name is resolved without lm-eval:

- :func:`resolve` expands groups and tags to :class:`Leaf` tasks (the dataset each loads, as
  ``dataset_path`` / ``dataset_name`` / ``dataset_kwargs`` reach ``datasets.load_dataset``) and
  lists the YAML files involved and the built-in folders a job must index to load them;
- :func:`function_refs` lists the ``!function`` references of those YAML files, so a missing
  Python package is found before any model is loaded.

Tasks under the user's include paths are described the same way from a TaskManager built over
only those folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

INDEX_FORMAT = 1
# The task fields that decide which data a task loads.
DATASET_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs")


def lm_eval_tasks_dir() -> Path:
    """The folder of lm-eval's built-in task YAMLs."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval.tasks")
    if spec is None or not spec.submodule_search_locations:
        from mergepipe.errors import MergepipeError

        raise MergepipeError("lm-eval is not installed (run ./setup.sh)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


# -- descriptions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetRef:
    """The data one task loads: ``datasets.load_dataset(path, name, **kwargs)``."""

    path: str
    name: str | None = None
    kwargs_json: str = "{}"  # hashable

    @property
    def kwargs(self) -> dict[str, Any]:
        return json.loads(self.kwargs_json)

    @property
    def revision(self) -> str | None:
        value = self.kwargs.get("revision")
        return str(value) if value else None

    def label(self) -> str:
        return self.path + (f" ({self.name})" if self.name else "")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> DatasetRef | None:
        path = cfg.get("dataset_path")
        if not isinstance(path, str) or not path:
            return None
        name = cfg.get("dataset_name")
        kwargs = cfg.get("dataset_kwargs") if isinstance(cfg.get("dataset_kwargs"), dict) else {}
        return cls(path, None if name is None else str(name), json.dumps(kwargs, sort_keys=True, default=str))


@dataclass(frozen=True)
class Leaf:
    """One task lm-eval runs, and the requested name it came from (a group, a tag or itself)."""

    task: str
    requested: str
    yaml: Path | None
    dataset: DatasetRef | None  # None: defined in Python, its data are not known here


@dataclass
class Resolution:
    leaves: list[Leaf] = field(default_factory=list)
    yaml_files: list[Path] = field(default_factory=list)
    builtin_folders: list[Path] = field(default_factory=list)

    def datasets(self) -> dict[DatasetRef, list[Leaf]]:
        out: dict[DatasetRef, list[Leaf]] = {}
        for leaf in self.leaves:
            if leaf.dataset is not None:
                out.setdefault(leaf.dataset, []).append(leaf)
        return out


def compact(kind: str, yaml_path: Path | None, cfg: dict[str, Any] | None,
            members: Iterable[str] = ()) -> dict[str, Any]:
    """The cached description of one index entry (JSON-safe)."""
    out: dict[str, Any] = {"kind": kind, "yaml": str(yaml_path) if yaml_path else None}
    cfg = cfg or {}
    if kind in ("task", "py_task"):
        out["data"] = {k: cfg[k] for k in DATASET_KEYS if k in cfg}
    elif kind == "group":
        children = cfg.get("task")
        out["children"] = children if isinstance(children, list) else ([children] if children else [])
    elif kind == "tag":
        out["members"] = sorted(members)
    return json.loads(json.dumps(out, default=str))


def describe_manager(manager: Any, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Compact entries of every name a TaskManager knows (paths relative to ``root`` when given)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in manager.task_index.items():
        kind = entry.kind.name.lower()
        path = entry.yaml_path
        if path is not None and root is not None:
            with contextlib.suppress(ValueError):
                path = Path(path).resolve().relative_to(root)
        out[name] = compact(kind, path, entry.cfg, entry.tags if kind == "tag" else ())
    return out


def _index_file() -> Path:
    from mergepipe.core.paths import cache_dir
    from mergepipe.evaluate.harness.results import versions

    root = lm_eval_tasks_dir()
    where = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return cache_dir() / f"lm_eval_index-{versions()['lm_eval_version']}-{where}-v{INDEX_FORMAT}.json"


_MEMO: dict[str, dict[str, dict[str, Any]]] = {}


def builtin_index() -> dict[str, dict[str, Any]]:
    """lm-eval's built-in tasks, groups and tags as compact entries (YAML paths absolute)."""
    from mergepipe.core.atomic import write_json

    cache = _index_file()
    key = str(cache)
    if key in _MEMO:
        return _MEMO[key]
    root = lm_eval_tasks_dir()
    entries: dict[str, dict[str, Any]] | None = None
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("format") == INDEX_FORMAT:
            entries = data["entries"]
    except (OSError, json.JSONDecodeError, KeyError):
        entries = None
    if entries is None:
        import logging

        from lm_eval.tasks import TaskManager

        # lm-eval logs a line for each of the few YAMLs it cannot index; not ours to show.
        logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)
        entries = describe_manager(TaskManager(include_defaults=True), root)
        with contextlib.suppress(OSError):  # a read-only cache only costs time
            write_json(cache, {"format": INDEX_FORMAT, "entries": entries})
    for entry in entries.values():
        if entry.get("yaml") and not Path(entry["yaml"]).is_absolute():
            entry["yaml"] = str(root / entry["yaml"])
    _MEMO[key] = entries
    return entries


def builtin_task_names() -> list[str]:
    """Names of lm-eval's built-in tasks, groups and tags (from the cached index)."""
    return sorted(builtin_index())


# -- resolution --------------------------------------------------------------------------------

Lookup = Callable[[str], "dict[str, Any] | None"]


def resolve(names: list[str], lookup: Lookup, builtin_root: Path | None = None) -> Resolution:
    """Expand ``names`` (tasks, groups, tags) to leaf tasks; names ``lookup`` does not know are skipped."""
    builtin_root = builtin_root or lm_eval_tasks_dir()
    out = Resolution()
    folders: list[Path] = []

    def visit_yaml(path: str | Path | None) -> Path | None:
        if not path:
            return None
        p = Path(path)
        if p not in out.yaml_files:
            out.yaml_files.append(p)
        if p.is_relative_to(builtin_root) and p.parent not in folders:
            folders.append(p.parent)
        return p

    def add_leaf(task: str, requested: str, yaml_path: Path | None, cfg: dict[str, Any]) -> None:
        if any(leaf.task == task for leaf in out.leaves):
            return
        out.leaves.append(Leaf(task, requested, yaml_path, DatasetRef.from_config(cfg)))

    def expand(spec: Any, requested: str, base: Path | None, overrides: dict[str, Any], depth: int) -> None:
        if depth > 20:  # a cycle in group definitions; lm-eval reports it when loading
            return
        if isinstance(spec, str):
            entry = lookup(spec)
            if entry is None:
                if Path(spec).is_file():  # a YAML path given as a task
                    cfg = load_task_yaml(Path(spec))
                    add_leaf(str(cfg.get("task", spec)), requested, visit_yaml(spec), cfg)
                return
            kind = entry["kind"]
            yaml_path = visit_yaml(entry.get("yaml"))
            if kind in ("task", "py_task"):
                add_leaf(spec, requested, yaml_path, {**entry.get("data", {}), **overrides})
            elif kind == "group":
                for child in entry.get("children", []):
                    expand(child, requested, yaml_path, {}, depth + 1)
            elif kind == "tag":
                for member in entry.get("members", []):
                    expand(member, requested, None, overrides, depth + 1)
            return
        if not isinstance(spec, dict):
            return
        if "group" in spec:  # an inline group
            children = spec.get("task") or []
            for child in children if isinstance(children, list) else [children]:
                expand(child, requested, base, {}, depth + 1)
            return
        name = spec.get("task")
        if not isinstance(name, str):
            return
        cfg = dict(spec)
        if "include" in cfg and base is not None:
            included: dict[str, Any] = {}
            for inc in cfg["include"] if isinstance(cfg["include"], list) else [cfg["include"]]:
                inc_path = Path(inc) if Path(inc).is_absolute() else base.parent / inc
                with contextlib.suppress(OSError, yaml.YAMLError, ValueError):
                    included.update(load_task_yaml(inc_path))
                    visit_yaml(inc_path)
            cfg = {**included, **cfg}
        entry = lookup(name)
        data = {k: cfg[k] for k in DATASET_KEYS if k in cfg}
        if entry is not None and "dataset_path" not in cfg:
            expand(name, requested, base, data, depth + 1)  # a registered task, maybe re-configured
        else:
            add_leaf(name, requested, base, cfg)

    for name in names:
        expand(name, name, None, {}, 0)
    # A folder inside another chosen folder is indexed with it.
    out.builtin_folders = [f for f in folders if not any(f != g and f.is_relative_to(g) for g in folders)]
    return out


# -- YAML with !function -----------------------------------------------------------------------

@dataclass(frozen=True)
class FunctionRef:
    """A ``!function module.name`` in a task YAML, resolved the way lm-eval resolves it."""

    spec: str
    base_dir: Path
    yaml: Path

    @property
    def module(self) -> str:
        return self.spec.rpartition(".")[0]

    @property
    def function(self) -> str:
        return self.spec.rpartition(".")[2]

    @property
    def local_file(self) -> Path | None:
        """The module file next to the YAML that lm-eval loads first, if there is one."""
        candidate = (self.base_dir / f"{self.module.replace('.', '/')}.py").resolve()
        return candidate if candidate.is_file() else None


def _loader(path: Path, refs: list[FunctionRef] | None) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def ctor(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        ref = FunctionRef(str(loader.construct_scalar(node)), path.parent, path)  # type: ignore[arg-type]
        if refs is not None:
            refs.append(ref)
        return ref

    Loader.add_constructor("!function", ctor)
    return Loader


def load_task_yaml(path: Path, refs: list[FunctionRef] | None = None, _seen: set[Path] | None = None
                   ) -> dict[str, Any]:
    """A task YAML with its ``include``s merged (local keys win), ``!function`` values kept as
    :class:`FunctionRef` (and appended to ``refs``), nothing imported."""
    path = Path(path).expanduser().resolve()
    seen = _seen if _seen is not None else set()
    if path in seen:
        raise ValueError(f"include cycle at {path}")
    seen.add(path)
    with path.open("rb") as fh:
        cfg = yaml.load(fh, Loader=_loader(path, refs))
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(cfg).__name__}")
    includes = cfg.pop("include", None)
    if includes is None:
        return cfg
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        merged.update(load_task_yaml(inc_path, refs, seen))
    merged.update(cfg)
    return merged


def function_refs(yaml_files: Iterable[Path]) -> list[FunctionRef]:
    """Every ``!function`` reference in ``yaml_files`` (and what they include), deduplicated."""
    refs: list[FunctionRef] = []
    for path in yaml_files:
        with contextlib.suppress(OSError, yaml.YAMLError, ValueError):
            load_task_yaml(path, refs)
    unique: dict[tuple[str, Path], FunctionRef] = {}
    for ref in refs:
        unique.setdefault((ref.spec, ref.base_dir), ref)
    return list(unique.values())
