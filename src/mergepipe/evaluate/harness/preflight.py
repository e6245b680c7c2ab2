"""Pre-flight of lm-eval tasks: everything a job needs, checked before any merge or model load.

For the requested tasks (groups and tags expanded to their leaf tasks):

1. every name resolves (unknown names fail with close matches, :mod:`.tasks`);
2. tinyBenchmarks tasks whose IRT estimate cannot be computed here become their ``_mean``
   variants (:mod:`.tinybench`), and the reason is kept for the results;
3. every Python function the task YAMLs name (``!function``) imports; a missing package is
   reported with the exact ``pip install`` command;
4. every dataset is present (dataset mirror, Hugging Face cache, local files) or, online, the
   Hub serves it; a missing one is reported with the ``mergepipe datasets fetch`` command.

:func:`check_tasks` returns a :class:`TaskCheck`; its problems become one error line
(:meth:`TaskCheck.raise_for_problems`) or, in a dry run, lines of the plan.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mergepipe.errors import MergepipeError
from mergepipe.evaluate.harness import tinybench
from mergepipe.evaluate.harness.catalog import FunctionRef, Resolution, function_refs
from mergepipe.evaluate.harness.dataset_mirror import Located, hub_problem, locate
from mergepipe.evaluate.harness.offline import hub_online
from mergepipe.evaluate.harness.tasks import find_tasks

# Import names whose package on the index is called differently.
PIP_NAMES = {"sklearn": "scikit-learn", "rouge_score": "rouge-score", "yaml": "pyyaml", "PIL": "pillow",
             "cv2": "opencv-python", "Levenshtein": "levenshtein", "bs4": "beautifulsoup4"}


class PreflightError(MergepipeError):
    """A task cannot run here: a package or a dataset is missing (one line with the fix)."""


@dataclass(frozen=True)
class Problem:
    kind: str  # "package" | "dataset" | "function"
    tasks: tuple[str, ...]  # the requested names it concerns
    what: str  # "dataset aps/super_glue (boolq)", "package langdetect"
    reason: str
    fix: str
    fetch: bool = False  # fixed by fetching it into the dataset mirror

    def line(self) -> str:
        return f"{self.what} (task {', '.join(self.tasks)}): {self.reason}" + (f"; {self.fix}" if self.fix else "")


@dataclass
class TaskCheck:
    requested: list[str]
    tasks: list[str]  # what runs: requested names with tinyBenchmarks ``_mean`` substitutions
    substitution: str | None  # why tinyBenchmarks tasks run as plain means (None: they do not)
    include_paths: list[Path]
    resolution: Resolution
    datasets: list[Located] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    datasets_dir: Path | None = None

    @property
    def uses_builtin(self) -> bool:
        return bool(self.resolution.builtin_folders)

    @property
    def substituted(self) -> list[str]:
        return [t for t in self.tasks if tinybench.is_mean_variant(t) and t not in self.requested]

    def notes(self) -> list[str]:
        """What runs differently from what was asked, and why (tinyBenchmarks as plain means)."""
        if not self.substitution or not self.substituted:
            return []
        return [f"tinyBenchmarks scored as plain means of the items, not IRT estimates "
                f"({', '.join(self.substituted)}): {self.substitution}"]

    def missing_lines(self) -> list[str]:
        """What is missing here, one line each: the problems, grouped (datasets: one fetch command),
        and a missing tinyBenchmarks package or parameters file (its tasks then run as plain means)."""
        lines = [p.line() for p in self.problems if p.kind != "dataset"]
        datasets = [p for p in self.problems if p.kind == "dataset"]
        fetchable = [p for p in datasets if p.fetch and "--force" not in p.fix]
        lines += [p.line() for p in datasets if p not in fetchable]
        if fetchable:
            repos = list(dict.fromkeys(p.what.removeprefix("dataset ").split(" (")[0] for p in fetchable))
            shown = ", ".join(repos[:6]) + (f" (+{len(repos) - 6} more)" if len(repos) > 6 else "")
            tasks = list(dict.fromkeys(t for p in fetchable for t in p.tasks))
            lines.append(f"dataset{'s' if len(repos) > 1 else ''} {shown} (task {', '.join(tasks)}): "
                         f"{fetchable[0].reason}; {fetch_hint(tasks, self.datasets_dir)}")
        return lines

    def fallback_lines(self) -> list[str]:
        if self.substitution and self.substituted and not self.substitution.startswith("limit"):
            return [f"package {tinybench.PACKAGE}: {self.substitution} (until then its tasks run as "
                    f"{', '.join(self.substituted)}: plain means of the items)"]
        return []

    def error_line(self) -> str:
        """All problems in one line: packages first, then datasets with one fetch command."""
        return "; ".join(self.missing_lines())

    def raise_for_problems(self) -> None:
        if self.problems:
            raise PreflightError(self.error_line())


def fetch_command(tasks: list[str], datasets_dir: Path | None) -> str:
    to = f" --to {shlex.quote(str(datasets_dir))}" if datasets_dir is not None else ""
    return f"mergepipe datasets fetch {' '.join(shlex.quote(t) for t in tasks)}{to}"


def fetch_hint(tasks: list[str], datasets_dir: Path | None) -> str:
    return (f"on a connected machine run '{fetch_command(tasks, datasets_dir)}' and copy the folder here "
            f"(see docs/datasets.md)")


def pip_command(package: str) -> str:
    return f"{shlex.quote(sys.executable)} -m pip install {shlex.quote(package)}"


def _missing_module(exc: BaseException) -> tuple[str | None, str | None]:
    """(module name, an install command the message itself suggests) from an import failure."""
    name, suggested = None, None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name and name is None:
            name = current.name
        match = re.search(r"pip install ([^`'\"\s]+)", str(current))
        if match and suggested is None:
            suggested = match.group(1)
        current = current.__cause__ or current.__context__
    return name, suggested


def _import(ref: FunctionRef) -> BaseException | None:
    """Import the function the way lm-eval will; the exception if that fails."""
    try:
        from lm_eval.tasks._yaml_loader import _import_func_in_yml
    except ImportError:  # another lm-eval layout: import the module by name
        import importlib

        try:
            getattr(importlib.import_module(ref.module), ref.function)
        except (ImportError, AttributeError) as exc:
            return exc
        return None
    try:
        _import_func_in_yml(ref.spec, ref.base_dir)
    except Exception as exc:  # whatever the module raises while importing
        return exc
    return None


def check_functions(resolution: Resolution, requested_of: dict[Path, set[str]]) -> list[Problem]:
    """Import every ``!function`` of the YAML files (with their includes); one problem per package."""
    problems: dict[str, Problem] = {}
    for yaml_file in resolution.yaml_files:
        tasks = tuple(sorted(requested_of.get(Path(yaml_file).resolve(), set())))
        for ref in function_refs([yaml_file]):
            error = _import(ref)
            if error is None:
                continue
            module, suggested = _missing_module(error)
            if module is not None:
                top = module.split(".")[0]
                if top == tinybench.PACKAGE:
                    fix = f"install it with {tinybench.INSTALL_HINT}"
                else:
                    fix = f"install it: {pip_command(suggested or PIP_NAMES.get(top, top))}"
                key, what, reason = top, f"package {top}", f"needs the Python package {top!r}, which is not installed"
            else:
                text = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
                key, what, fix = ref.spec, f"function {ref.spec} of {ref.yaml.name}", ""
                reason = f"cannot be imported ({type(error).__name__}: {text})"
            old = problems.get(key)
            merged = tuple(sorted({*tasks, *(old.tasks if old else ())}))
            problems[key] = Problem("package" if module else "function", merged, what, reason, fix)
    return list(problems.values())


def check_tasks(tasks: list[str], include_paths: list[Path], *, datasets_dir: Path | None,
                limit: float | None = None, online: bool | None = None) -> TaskCheck:
    """Resolve ``tasks`` and check their functions and datasets; raises only for unknown names."""
    effective, reason = tinybench.substitute(list(tasks), limit)
    found = find_tasks(effective, include_paths)
    resolution = found.resolve()
    check = TaskCheck(list(tasks), effective, reason, found.include_paths, resolution,
                      datasets_dir=Path(datasets_dir) if datasets_dir is not None else None)
    shown = dict(zip(effective, effective, strict=True))  # what the user asked for, by effective name
    for name in tasks:
        if tinybench.mean_name(name) in effective and name not in effective:
            shown[tinybench.mean_name(name)] = name
    requested_of: dict[Path, set[str]] = {}
    for leaf in resolution.leaves:
        if leaf.yaml is not None:
            requested_of.setdefault(Path(leaf.yaml).resolve(), set()).add(shown.get(leaf.requested, leaf.requested))
    everything = {shown.get(leaf.requested, leaf.requested) for leaf in resolution.leaves}
    for path in resolution.yaml_files:  # group files: every requested name
        requested_of.setdefault(Path(path).resolve(), everything)
    check.problems += check_functions(resolution, requested_of)
    online = hub_online() if online is None else online
    for ref, leaves in resolution.datasets().items():
        located = locate(ref, check.datasets_dir, online, hub_problem)
        check.datasets.append(located)
        if located.present or located.where == "hub":
            continue
        names = tuple(dict.fromkeys(shown.get(leaf.requested, leaf.requested) for leaf in leaves))
        fetch = located.fetchable and not online
        if fetch:
            fix = fetch_hint(list(names), check.datasets_dir)
            if "no config" in located.detail:
                fix = fix.replace("datasets fetch ", "datasets fetch --force ", 1)
        else:
            fix = ""
        check.problems.append(Problem("dataset", names, f"dataset {ref.label()}", located.detail, fix, fetch))
    return check


def hub_datasets_of(tasks: list[str], include_paths: list[Path]) -> tuple[dict[str, str | None], list[str]]:
    """The Hub dataset repositories ``tasks`` load (id -> requested revision), and what they load
    that is not a Hub repository (local files, builder URLs, Python-defined tasks)."""
    from mergepipe.evaluate.harness.dataset_mirror import is_hub_dataset

    resolution = find_tasks(list(tasks), include_paths).resolve()
    repos: dict[str, str | None] = {}
    other: list[str] = []
    for leaf in resolution.leaves:
        if leaf.dataset is None:
            other.append(f"{leaf.task}: defined in Python; its data are not known here")
        elif is_hub_dataset(leaf.dataset.path):
            repos.setdefault(leaf.dataset.path, leaf.dataset.revision)
        else:
            other.append(f"{leaf.task}: {leaf.dataset.label()} (not a Hub dataset repository)")
    return repos, list(dict.fromkeys(other))
