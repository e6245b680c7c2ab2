"""tinyBenchmarks: IRT estimates when they can be computed, otherwise plain means labelled as such.

lm-eval's six tinyBenchmarks tasks (the ``tinyBenchmarks`` group) score 100 items each and
aggregate them with the ``tinyBenchmarks`` package's IRT estimators (``agg_functions.py``). That
needs three things lm-eval does not check: the package (git only, not on the package index:
``./setup.sh --tinybenchmarks``), its IRT parameters file ``tinyBenchmarks.pkl`` (which the
package reads from the working directory and otherwise downloads from GitHub at the end of the
evaluation), and all 100 items (no ``limit`` below 100).

When any of them is missing, the tasks run as their ``_mean`` variants instead: the same YAMLs
(prompts, data, metrics) with the plain mean over the items as the aggregation and the task
names suffixed ``_mean`` (``tinyArc_mean``, group ``tinyBenchmarks_mean``). A mean is therefore
never filed under an IRT task name, and every results file records which aggregation each
task used (:func:`aggregation_labels`). The variants are generated from the installed lm-eval's
own YAMLs into the cache folder; they can also be requested by name.

With the package present, :func:`irt_parameters_in_place` lets the package find its parameters
file wherever setup put it, without depending on the working directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mergepipe.core.atomic import temp_sibling

GROUP = "tinyBenchmarks"
IRT_TASKS = ("tinyArc", "tinyGSM8k", "tinyMMLU", "tinyWinogrande", "tinyHellaswag", "tinyTruthfulQA")
MEAN_SUFFIX = "_mean"
PACKAGE = "tinyBenchmarks"
PARAMETERS_FILE = "tinyBenchmarks.pkl"
ITEMS = 100  # every tinyBenchmarks task has 100 items; the IRT estimate needs all of them
SOURCE_URL = "https://github.com/felipemaiapolo/tinyBenchmarks"
INSTALL_HINT = "./setup.sh --tinybenchmarks (installs the tinyBenchmarks package from its git repository)"
MEAN_LABEL = "mean of items (not IRT)"
IRT_LABEL = "gp-IRT estimate (tinyBenchmarks)"
_GITHUB = ("raw.githubusercontent.com", 443)


def mean_name(task: str) -> str:
    return task + MEAN_SUFFIX


def is_mean_variant(task: str) -> bool:
    return task.endswith(MEAN_SUFFIX) and task.removesuffix(MEAN_SUFFIX) in (GROUP, *IRT_TASKS)


def provides(task: str) -> bool:
    """Names the generated ``_mean`` folder defines."""
    return is_mean_variant(task)


# -- can IRT estimates be computed here? -------------------------------------------------------

def _spec() -> importlib.machinery.ModuleSpec | None:
    spec = importlib.util.find_spec(PACKAGE)
    # A folder left behind without the package's code (a namespace package) is not the package.
    return spec if spec is not None and spec.origin is not None else None


def package_installed() -> bool:
    return _spec() is not None


def _package_dir() -> Path | None:
    spec = _spec()
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _download_home() -> Path:
    from mergepipe.core.paths import cache_dir

    return cache_dir() / "tinyBenchmarks"


def parameters_file() -> Path | None:
    """Where ``tinyBenchmarks.pkl`` is: the working directory (the package's own choice), beside
    the installed package (where ``setup.sh`` puts it), or mergepipe's cache (an earlier download)."""
    candidates = [Path.cwd()]
    package = _package_dir()
    if package is not None:
        candidates.append(package)
    candidates.append(_download_home())
    for folder in candidates:
        path = folder / PARAMETERS_FILE
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _github_reachable(timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection(_GITHUB, timeout=timeout):
            return True
    except OSError:
        return False


def irt_unavailable_reason(limit: float | None) -> str | None:
    """Why IRT estimates cannot be computed for a job with ``limit``; None when they can."""
    if limit is not None and limit < ITEMS:
        return f"limit {limit:g} < {ITEMS}: the IRT estimate needs all {ITEMS} items"
    if not package_installed():
        return f"the {PACKAGE} package is not installed; for IRT estimates: {INSTALL_HINT}"
    if parameters_file() is None and not _github_reachable():
        return (f"the IRT parameters file {PARAMETERS_FILE} is not installed and GitHub cannot be reached "
                f"(re-run {INSTALL_HINT.split(' (')[0]} on a connected machine)")
    return None


def substitute(tasks: list[str], limit: float | None) -> tuple[list[str], str | None]:
    """``tasks`` with IRT tinyBenchmarks names replaced by their ``_mean`` variants when IRT
    estimates cannot be computed; and the reason (None when nothing was replaced)."""
    irt = [t for t in tasks if t in (GROUP, *IRT_TASKS)]
    if not irt:
        return list(tasks), None
    reason = irt_unavailable_reason(limit)
    if reason is None:
        return list(tasks), None
    out: list[str] = []
    for task in tasks:
        name = mean_name(task) if task in irt else task
        if name not in out:
            out.append(name)
    return out, reason


def aggregation_labels(task_names: list[str], reason: str | None = None) -> dict[str, str]:
    """Per tinyBenchmarks task in ``task_names`` (leaves and groups): how its score was aggregated."""
    out: dict[str, str] = {}
    for task in task_names:
        if is_mean_variant(task):
            out[task] = MEAN_LABEL + (f": {reason}" if reason else "")
        elif task in IRT_TASKS:
            out[task] = IRT_LABEL
    return out


# -- the _mean variants --------------------------------------------------------------------------

class _Function(str):
    """A ``!function`` value to write back."""


def _dumper() -> type[yaml.SafeDumper]:
    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Function, lambda d, v: d.represent_scalar("!function", str(v)))
    return Dumper


def _rewrite(value: Any, source_dir: Path, tasks_root: Path) -> Any:
    """Function references re-pointed so the copy works from another folder; IRT aggregations
    replaced by the plain mean."""
    from mergepipe.evaluate.harness.catalog import FunctionRef

    if isinstance(value, FunctionRef):
        if value.module == "agg_functions":
            return "mean"
        module_file = value.local_file
        if module_file is not None:
            dotted = ".".join(("lm_eval", "tasks", *module_file.relative_to(tasks_root).with_suffix("").parts))
            return _Function(f"{dotted}.{value.function}")
        return _Function(value.spec)
    if isinstance(value, dict):
        return {k: _rewrite(v, source_dir, tasks_root) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, source_dir, tasks_root) for v in value]
    return value


def mean_tasks_folder() -> Path:
    """The generated ``_mean`` task folder for the installed lm-eval (built on first use)."""
    from mergepipe.core.paths import cache_dir
    from mergepipe.errors import MergepipeError
    from mergepipe.evaluate.harness.catalog import lm_eval_tasks_dir, load_task_yaml

    tasks_root = lm_eval_tasks_dir()
    source = tasks_root / GROUP
    by_name: dict[str, Path] = {}
    for path in sorted(source.glob("*.yaml")):
        with contextlib.suppress(OSError, yaml.YAMLError, ValueError):
            cfg = load_task_yaml(path)
            name = cfg.get("task") if "group" not in cfg else cfg.get("group")
            if isinstance(name, str):
                by_name.setdefault(name, path)
    missing = [name for name in (*IRT_TASKS, GROUP) if name not in by_name]
    if missing:
        raise MergepipeError(f"lm-eval's {GROUP} tasks not found under {source} ({', '.join(missing)}); "
                             "is lm-eval installed?")
    files = {task: by_name[task] for task in IRT_TASKS}
    group_file = by_name[GROUP]
    digest = hashlib.sha256()
    for path in sorted(source.glob("*.yaml")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(str(tasks_root).encode())
    folder = cache_dir() / "tasks" / f"tinybenchmarks-mean-{digest.hexdigest()[:12]}"
    if (folder / f"{mean_name(GROUP)}.yaml").is_file():
        return folder
    dumper = _dumper()
    tmp = temp_sibling(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for task, path in files.items():
            cfg = _rewrite(load_task_yaml(path), source, tasks_root)
            cfg["task"] = mean_name(task)
            cfg.pop("tag", None)
            text = (f"# Generated by mergepipe from lm-eval's {GROUP}/{path.name}: the same task scored as\n"
                    f"# the plain mean of its items ({MEAN_LABEL}), for machines without IRT estimates.\n")
            (tmp / f"{mean_name(task)}.yaml").write_text(
                text + yaml.dump(cfg, Dumper=dumper, sort_keys=False, allow_unicode=True), encoding="utf-8")
        group = load_task_yaml(group_file)
        children = []
        for child in group.get("task", []):
            if isinstance(child, dict) and child.get("task") in IRT_TASKS:
                children.append({**child, "task": mean_name(child["task"])})
            elif isinstance(child, str) and child in IRT_TASKS:
                children.append(mean_name(child))
            else:
                children.append(child)
        group_cfg = {**group, "group": mean_name(GROUP), "task": children}
        (tmp / f"{mean_name(GROUP)}.yaml").write_text(
            f"# Generated by mergepipe: lm-eval's {GROUP} group with every task scored as a plain mean.\n"
            + yaml.dump(group_cfg, Dumper=dumper, sort_keys=False), encoding="utf-8")
        # Never replaced once there: a job started at the same time may be reading it.
        with contextlib.suppress(OSError):
            os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (folder / f"{mean_name(GROUP)}.yaml").is_file():
        raise MergepipeError(f"could not write the tinyBenchmarks _mean tasks into {folder}")
    return folder


# -- running with IRT ----------------------------------------------------------------------------

@contextlib.contextmanager
def irt_parameters_in_place() -> Iterator[None]:
    """While lm-eval aggregates, let ``tinyBenchmarks.evaluate`` find (or download) its parameters
    file in the folder that holds it instead of the working directory."""
    if not package_installed():
        yield
        return
    import tinyBenchmarks as tb

    found = parameters_file()
    home = found.parent if found is not None else _download_home()
    original = tb.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        home.mkdir(parents=True, exist_ok=True)
        previous = os.getcwd()
        os.chdir(home)  # aggregation runs single-threaded at the end of the evaluation
        try:
            return original(*args, **kwargs)
        finally:
            os.chdir(previous)

    tb.evaluate = evaluate
    try:
        yield
    finally:
        tb.evaluate = original
