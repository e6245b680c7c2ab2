"""Run a user's checkout of the upstream Holmes code and copy its results into our layout.

Upstream facts this adapter works around (see docs/holmes.md):

- ``src/investigate.py`` must run with ``src/`` as working directory: it globs
  ``../data/<version>/*/*<control>*.yaml`` and starts ``python3 encode.py`` / ``python3 probe.py``
  through the shell, so ``python3`` must be the Holmes environment's and paths must not contain
  spaces or shell characters.
- Its result parser splits paths on ``done`` and its model loader special-cases names containing
  ``bart``, so neither word may appear in any path we hand it.
- It always exits 0. Failure shows as ``<model_name with / -> _>_fails.txt`` in ``src/`` or as a
  missing ``<result_folder>/results_<version>.csv`` (written with a pandas index column;
  ``model_name`` there is the model name with ``/`` replaced by ``__``).

The upstream code itself is never run in CI; tests cover the command construction and the
normalisation of a results CSV in the upstream schema.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mergepipe.core import paths
from mergepipe.core.atomic import write_json, write_text
from mergepipe.core.records import ModelInfo
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.holmes.results_file import RESULT_COLUMNS, read_results_csv

log = logging.getLogger(__name__)

SAFE_PATH = re.compile(r"^[A-Za-z0-9._/@+=:,-]+$")
FORBIDDEN_WORDS = ("done", "bart")


class UpstreamError(MergepipeError):
    """The upstream Holmes run could not start or did not produce results."""

    exit_code = 1


@dataclass(frozen=True)
class UpstreamLayout:
    """Where things are in an upstream checkout (data, not code, so a fork can differ)."""

    script: str = "src/investigate.py"
    data_subdir: str = "data"
    results_name: str = "results_{version}.csv"
    fails_name: str = "{model}_fails.txt"
    control_configs: tuple[str, ...] = ("randomization",)  # config-<name>.yaml per control task

    def workdir(self, checkout: Path) -> Path:
        return (checkout / self.script).parent

    def fails_file(self, checkout: Path, model_name: str) -> Path:
        return self.workdir(checkout) / self.fails_name.format(model=model_name.replace("/", "_"))

    def results_file(self, result_folder: Path, version: str) -> Path:
        return result_folder / self.results_name.format(version=version)


@dataclass
class UpstreamResult:
    model_id: str
    results_csv: Path
    command: list[str]


def check_path(path: str, what: str) -> str:
    """Reject what upstream's shell-built commands and path parsing cannot handle."""
    if not SAFE_PATH.match(path):
        raise UpstreamError(f"{what} {path!r} contains spaces or shell characters, which upstream Holmes cannot handle")
    lowered = path.lower()
    for word in FORBIDDEN_WORDS:
        if word in lowered:
            raise UpstreamError(f"{what} {path!r} contains {word!r}, which breaks upstream Holmes' path parsing")
    return path


def default_version(checkout: Path, layout: UpstreamLayout = UpstreamLayout()) -> str:
    data = checkout / layout.data_subdir
    for name in ("flash-holmes", "holmes"):
        if (data / name).is_dir():
            return name
    raise UpstreamError(f"{data}: no downloaded Holmes data (expected data/flash-holmes or data/holmes)")


def build_command(
    python: Path, checkout: Path, model_name: str, version: str, seeds: int, control_task: bool,
    dump_folder: Path, result_folder: Path, layout: UpstreamLayout = UpstreamLayout(),
    extra: list[str] | None = None,
) -> list[str]:
    """argv for investigate.py (run with cwd = ``layout.workdir(checkout)``); every path absolute."""
    for value, what in [(str(checkout), "Holmes checkout"), (model_name, "model"),
                        (str(dump_folder), "dump folder"), (str(result_folder), "result folder")]:
        check_path(value, what)
    for p, what in [(checkout, "Holmes checkout"), (dump_folder, "dump folder"), (result_folder, "result folder")]:
        if not p.is_absolute():
            raise UpstreamError(f"{what} {p} must be an absolute path")
    script = checkout / layout.script
    controls = ["none", *layout.control_configs] if control_task else ["none"]
    return [
        str(python), script.name,
        "--model_name", model_name,
        "--version", version,
        "--seeds", ",".join(str(s) for s in range(seeds)),
        "--control_task_types", ",".join(controls),
        "--num_hidden_layers", "0",
        "--dump_folder", str(dump_folder),
        "--result_folder", str(result_folder),
        *(extra or []),
    ]


def command_env(python: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """investigate.py starts ``python3 ...`` through the shell: put the Holmes env first on PATH."""
    env = dict(os.environ if base is None else base)
    bindir = str(python.parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    env.pop("PYTHONPATH", None)
    return env


def normalise_results(upstream_csv: Path, model_name: str, model_id: str) -> pd.DataFrame:
    """Rows of ``model_name`` from an upstream results CSV, renamed to ``model_id``, our columns."""
    frame = read_results_csv(upstream_csv)
    mangled = model_name.replace("/", "__")
    mine = frame[frame["model_name"].astype(str).isin({mangled, model_name})].copy()
    if mine.empty:
        raise UpstreamError(f"{upstream_csv}: no rows for model {mangled}")
    mine["model_name"] = model_id
    mine["probing_dataset"] = mine["probing_dataset"].astype(str).str.replace(r"^(flash-)?holmes-", "", regex=True)
    return mine[RESULT_COLUMNS].sort_values(["probing_dataset", "control_task_type", "seed"], ignore_index=True)


def judge(checkout: Path, model_name: str, result_folder: Path, version: str,
          layout: UpstreamLayout = UpstreamLayout()) -> Path:
    """The results CSV if the run succeeded; otherwise UpstreamError (upstream always exits 0)."""
    fails = layout.fails_file(checkout, model_name)
    if fails.is_file():
        first = fails.read_text(encoding="utf-8", errors="replace").strip()[:200]
        raise UpstreamError(f"upstream Holmes reported failed steps in {fails}: {first}")
    results = layout.results_file(result_folder, version)
    if not results.is_file():
        raise UpstreamError(f"upstream Holmes wrote no results ({results} is missing); see its log")
    return results


def run_upstream(
    model_ref: str, checkout: Path, out_dir: Path, *, seeds: int = 5, version: str | None = None,
    control_task: bool = True, python: Path | None = None, data_dir: Path | None = None,
    role: str | None = None, run_name: str | None = None, report: Callable[[str], None] | None = None,
    layout: UpstreamLayout = UpstreamLayout(), runner: Callable[..., Any] = subprocess.run,
) -> UpstreamResult:
    """Run investigate.py for one model and copy its rows to ``<out>/<model-id>/results_<version>.csv``."""
    from mergepipe.core.models import model_id, resolve

    say = report or log.info
    checkout = Path(checkout).expanduser().resolve()
    if not (checkout / layout.script).is_file():
        raise UpstreamError(f"holmes.dir {checkout}: no {layout.script} (not an upstream Holmes checkout?)")
    version = version or default_version(checkout, layout)
    expected_data = checkout / layout.data_subdir / version
    if not expected_data.is_dir():
        raise UpstreamError(f"{expected_data}: Holmes data for version {version!r} is not downloaded")
    if data_dir is not None and Path(data_dir).resolve() != expected_data.resolve():
        raise UpstreamError(f"upstream Holmes reads its data from {expected_data}; holmes.data_dir cannot move it")
    python = Path(python) if python else paths.project_root() / "environments" / "holmes" / "bin" / "python"
    if not python.is_file():
        raise UpstreamError(f"{python}: no Holmes environment; run 'setup.sh --holmes {checkout}' first")
    resolved = resolve(model_ref)
    mid = model_id(model_ref, resolved)
    model_name = resolved.hub_id or str(resolved.local_dir)
    out_dir = Path(out_dir).expanduser().resolve()
    work = out_dir / mid / f"upstream_{version}"
    dump_folder, result_folder = work / "dumps", work / "results"
    cmd = build_command(python, checkout, model_name, version, seeds, control_task, dump_folder, result_folder, layout)
    result_folder.mkdir(parents=True, exist_ok=True)
    dump_folder.mkdir(parents=True, exist_ok=True)
    # Stale markers from an earlier run must not decide this one.
    layout.fails_file(checkout, model_name).unlink(missing_ok=True)
    layout.results_file(result_folder, version).unlink(missing_ok=True)
    say("running upstream Holmes: " + " ".join(cmd))
    with (work / "investigate.log").open("w", encoding="utf-8") as logf:
        runner(cmd, cwd=str(layout.workdir(checkout)), env=command_env(python), stdout=logf,
               stderr=subprocess.STDOUT, check=False)
    upstream_csv = judge(checkout, model_name, result_folder, version, layout)
    frame = normalise_results(upstream_csv, model_name, mid)
    target = out_dir / mid / f"results_{version}.csv"
    write_text(target, frame.to_csv(index=False))
    write_json(out_dir / mid / f"run_{version}.json", {
        "model_id": mid, "reference": model_ref, "engine": "upstream", "version": version,
        "checkout": str(checkout), "data_dir": str(expected_data), "command": cmd, "seeds": seeds,
        "control_task": control_task, "complete": True,
    })
    ModelInfo.describe(mid, model_ref, resolved.local_dir, role=role, run=run_name).write(out_dir)
    return UpstreamResult(mid, target, cmd)
