"""Shared fixtures. Heavy artefacts (the demo zoo, tiny models) are built once per session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers.demo import reduced_demo_config, start_script
from tests.helpers.paths import REPO

# Tests never touch the network: Hub lookups must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """A base and three experts: tiny random Llama models sharing one architecture."""
    from tests.helpers.tiny_models import make_model_family

    return make_model_family(tmp_path_factory.mktemp("tiny_models"))


def _module_name(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    return module.__name__ if module is not None else item.nodeid.split("::")[0]


def _module_uses_zoo(items: list[pytest.Item]) -> set[str]:
    return {_module_name(item) for item in items if "zoo" in getattr(item, "fixturenames", ())}


_zoo_build: tuple[subprocess.Popen, Path] | None = None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules that need the demo zoo run last, and the zoo builds meanwhile in a background
    process: on a fresh machine its build (minutes) overlaps the tests that do not need it.
    Whole modules move, so module-scoped fixtures are still set up once."""
    global _zoo_build
    zoo_modules = _module_uses_zoo(items)
    if config.option.collectonly or not zoo_modules or all(_module_name(item) in zoo_modules for item in items):
        return  # nothing to overlap: the fixture builds in-process, with its progress bars
    items.sort(key=lambda item: _module_name(item) in zoo_modules)  # stable: file order otherwise
    log = Path(tempfile.mkstemp(prefix="mergepipe-zoo-build-", suffix=".log")[1])
    with log.open("w") as out:  # the zoo's own build lock keeps this and any other build apart
        process = subprocess.Popen([sys.executable, "-c", "from mergepipe.zoo import ensure_built; ensure_built()"],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    _zoo_build = (process, log)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A run stopped early (-x, Ctrl-C) must not leave a build running; the zoo's temporaries
    # of a killed build are cleared by the next build.
    if _zoo_build is None:
        return
    process, log = _zoo_build
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
    if process.returncode == 0 or process.returncode == -signal.SIGTERM:
        log.unlink(missing_ok=True)  # a failed build's log stays: the zoo fixture named it


@pytest.fixture(scope="session")
def zoo():
    """The demo zoo's manifest: built once per machine (shared cache), reused by every test."""
    from mergepipe.zoo import ensure_built

    if _zoo_build is not None:
        process, log = _zoo_build
        if process.wait() != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the background build of the demo zoo failed (log {log}):\n{tail}")
        log.unlink(missing_ok=True)
    return ensure_built()


@pytest.fixture(scope="session")
def demo_run(zoo, tmp_path_factory: pytest.TempPathFactory):
    """One reduced demo run through script.sh: (work dir, exit code, output)."""
    work = tmp_path_factory.mktemp("demo_run")
    reduced_demo_config(work)
    proc = start_script(work, "--config", "pipeline.yaml")
    out, _ = proc.communicate(timeout=1200)
    return work, proc.returncode, out
