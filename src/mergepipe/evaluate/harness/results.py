"""An lm-eval job's results folder: ``harness_results/<model-id>/<suite>/``, lm-eval's own layout.

``results_<timestamp>.json`` and ``samples_<task>_<timestamp>.jsonl`` exactly as ``lm_eval
--output_path ... --log_samples`` writes them, plus a top-level ``"mergepipe"`` key in the results
JSON recording every setting that can change a score and the job's settings hash.

Finished means: a ``results_*.json`` whose ``mergepipe.settings_hash`` matches the job. Files are
staged in a hidden temporary folder and moved into place samples first, results file last, so
an interrupted job never leaves a results file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mergepipe import __version__
from mergepipe.config import HarnessSettings
from mergepipe.config.evaluate import HASH_OPTIONAL_FIELDS
from mergepipe.core.atomic import remove_stale_temporaries
from mergepipe.core.locks import FileLock

RESULTS_GLOB = "results_*.json"
SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,95}$")


def default_suite_name(tasks: list[str]) -> str:
    """The results sub-folder of an ad-hoc task list (``eval-harness`` without ``--suite``)."""
    joined = "+".join(tasks)
    if SUITE_RE.match(joined) and len(joined) <= 64:
        return joined
    return "tasks-" + hashlib.sha256(joined.encode()).hexdigest()[:8]


def settings_hash(model_id: str, tasks: list[str], settings: HarnessSettings) -> str:
    """The identity of a harness job's results: same hash = same scores expected."""
    fields = {k: v for k, v in settings.model_dump(mode="json").items()
              if not (k in HASH_OPTIONAL_FIELDS and v is None)}
    payload = {"model_id": model_id, "tasks": sorted(tasks), **fields}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_finished(suite_dir: Path, job_hash: str) -> Path | None:
    """The newest complete results file in ``suite_dir`` made with settings hash ``job_hash``."""
    if not suite_dir.is_dir():
        return None
    for path in sorted(suite_dir.glob(RESULTS_GLOB), reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # unreadable = not finished
        if isinstance(data, dict) and (data.get("mergepipe") or {}).get("settings_hash") == job_hash:
            return path
    return None


def results_lock_file(model_dir: Path, suite: str) -> Path:
    return Path(model_dir) / f".{suite}.lock"


def results_lock(model_dir: Path, suite: str, model_id: str) -> contextlib.AbstractContextManager[FileLock]:
    """The lock a job holds while it writes ``<model-id>/<suite>/`` (waits for another holder)."""
    lock = FileLock(results_lock_file(model_dir, suite), f"evaluating {model_id} on {suite}")
    return waiting_for(lock, f"results of {model_id}/{suite}")


@contextlib.contextmanager
def waiting_for(lock: FileLock, what: str) -> Iterator[FileLock]:
    """Hold ``lock``, waiting as long as a live holder works on it (said once, with its name)."""
    if not lock.try_acquire():
        holder = lock.holder()
        print(f"waiting: {what} are being written by {holder.describe() if holder else 'another job'}",
              flush=True)
        lock.acquire(timeout=None, what=what)
    try:
        yield lock
    finally:
        lock.release()


def remove_incomplete(model_dir: Path, suite_dir: Path) -> list[Path]:
    """Delete what an interrupted job left: staging folders and samples without a results file."""
    removed = remove_stale_temporaries(model_dir)
    if suite_dir.is_dir():
        stamps = {p.stem.removeprefix("results_") for p in suite_dir.glob(RESULTS_GLOB)}
        for sample in suite_dir.glob("samples_*.jsonl"):
            stamp = sample.stem.rsplit("_", 1)[-1]
            if stamp not in stamps:
                sample.unlink(missing_ok=True)
                removed.append(sample)
    return removed


def scores_of(results_file: Path) -> dict[str, dict[str, Any]]:
    """Per task, the metrics of a results file (``{"zoo_inc": {"exact_match,strip": 0.6, ...}}``)."""
    try:
        data = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {task: {k: v for k, v in metrics.items() if k != "alias"}
            for task, metrics in (data.get("results") or {}).items()}


def versions() -> dict[str, str]:
    """The versions recorded with every result."""
    out = {"mergepipe_version": __version__}
    for name, key in (("lm_eval", "lm_eval_version"), ("transformers", "transformers_version"),
                      ("torch", "torch_version")):
        try:
            out[key] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[key] = "not installed"
    return out
