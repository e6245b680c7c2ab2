"""The built-in Holmes-compatible probing engine: one model over a folder of Holmes datasets.

For every dataset folder: validate it, encode its inputs with the frozen model (cached), train a
linear probe per seed (and, optionally, per seed on permuted labels: the control task), and keep
the test scores. Results go to ``<out>/<model-id>/results_<version>.csv`` in upstream Holmes'
column schema, so one reader serves this engine and the upstream one.

Resuming is per dataset: a finished dataset's rows are stored (atomically) under
``<out>/<model-id>/datasets_<version>/<dataset>.csv`` with the settings that produced them, and a
re-run with the same model, data and settings reuses them instead of recomputing. A dataset that
fails (bad data) is reported and the others still run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from mergepipe.core import paths
from mergepipe.core.atomic import remove_stale_temporaries, write_json, write_text
from mergepipe.core.records import ModelInfo
from mergepipe.errors import MergepipeError, StageFailed
from mergepipe.evaluate.holmes.data import (
    HolmesDataError,
    HolmesDataset,
    UnsupportedProbeType,
    dataset_folders,
    load_dataset,
)
from mergepipe.evaluate.holmes.results_file import (
    CONTROL_TYPE,
    NO_CONTROL,
    RESULT_COLUMNS,
    results_path,
    run_record_path,
)
from mergepipe.evaluate.holmes.train import ProbeHyper, train_probe

if TYPE_CHECKING:
    from mergepipe.evaluate.jobs import ProbeJobSpec

log = logging.getLogger(__name__)

ENGINE_VERSION = "1"
CONTROL_PERMUTATION_SEED = 0
DEFAULT_HYPER = ProbeHyper()


@dataclass
class DatasetOutcome:
    name: str
    status: str  # done | reused | failed | skipped
    seconds: float = 0.0
    message: str = ""
    mean_score: float | None = None
    mean_control: float | None = None


@dataclass
class ProbingRun:
    model_id: str
    results_csv: Path
    outcomes: list[DatasetOutcome] = field(default_factory=list)
    load_seconds: float = 0.0

    @property
    def failed(self) -> list[DatasetOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def default_version(data_dir: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", data_dir.resolve().name) or "holmes"


def control_labels(labels: np.ndarray) -> np.ndarray:
    """The control task: the dataset's labels permuted over all rows with a fixed seed."""
    return np.random.default_rng(CONTROL_PERMUTATION_SEED).permutation(labels)


def probe_scores(ds: HolmesDataset, feats: torch.Tensor, seeds: int, control: bool,
                 hyper: ProbeHyper = DEFAULT_HYPER) -> list[tuple[str, int, float]]:
    """(control_task_type, seed, test score) for every seed, and the control task if asked."""
    labels = np.array([s.label for s in ds.samples], dtype=np.float64)
    splits = np.array([s.split for s in ds.samples])
    runs = [(NO_CONTROL, labels)] + ([(CONTROL_TYPE, control_labels(labels))] if control else [])
    out: list[tuple[str, int, float]] = []
    # A linear probe on a few hundred rows is too small to gain from threads; extra threads only
    # spin and fight for the cores (measured: 3-4x slower with 2 threads on a busy 2-core box).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind, y in runs:
            out += _seed_scores(ds, feats, kind, y, splits, seeds, hyper)
    finally:
        torch.set_num_threads(threads)
    return out


def _seed_scores(ds: HolmesDataset, feats: torch.Tensor, kind: str, y: np.ndarray, splits: np.ndarray,
                 seeds: int, hyper: ProbeHyper) -> list[tuple[str, int, float]]:
    yt = torch.tensor(y, dtype=torch.float32 if ds.is_regression else torch.long)
    part = {name: torch.from_numpy(np.flatnonzero(splits == name)) for name in ("train", "dev", "test")}
    out: list[tuple[str, int, float]] = []
    for seed in range(seeds):
        score = train_probe(
            feats[part["train"]], yt[part["train"]], feats[part["dev"]], yt[part["dev"]],
            feats[part["test"]], yt[part["test"]], ds.num_labels, seed, hyper,
        )
        out.append((kind, seed, score))
    return out


def _settings_key(fingerprint: str, ds: HolmesDataset, seeds: int, control: bool, layer: int,
                  max_length: int) -> str:
    blob = json.dumps([ENGINE_VERSION, fingerprint, ds.content_hash, seeds, control, layer, max_length])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reusable(csv_path: Path, meta_path: Path, key: str) -> pd.DataFrame | None:
    if not (csv_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("settings_key") != key:
            return None
        frame = pd.read_csv(csv_path)
    except (OSError, ValueError):
        return None
    return frame if list(frame.columns) == RESULT_COLUMNS and len(frame) == meta.get("rows") else None


def run_probing(
    model_ref: str,
    data_dir: Path | str,
    out_dir: Path | str,
    seeds: int = 5,
    *,
    control_task: bool = True,
    layer: int = -1,
    batch_size: int = 32,
    max_length: int = 512,
    device: str = "auto",
    version: str | None = None,
    cache_dir: Path | None = None,
    role: str | None = None,
    run_name: str | None = None,
    report: Callable[[str], None] | None = None,
    hyper: ProbeHyper = DEFAULT_HYPER,
) -> ProbingRun:
    """Probe ``model_ref`` on every dataset folder in ``data_dir``; write results under ``out_dir``.

    ``<out>/<model-id>/model_info.json`` records the model (``role`` and ``run_name`` when known,
    the merge method and parameters of a merged model). Returns the per-dataset outcomes; failed
    datasets are listed there (the caller decides the exit code).
    """
    from mergepipe.core.models import fingerprint, model_id, resolve
    from mergepipe.evaluate.holmes.encode import check_layer, encode_dataset, load_frozen_model

    say = report or log.info
    if seeds < 1:
        raise MergepipeError(f"--seeds must be at least 1, got {seeds}")
    data_dir = Path(data_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    folders = dataset_folders(data_dir)  # validates data_dir before loading any model
    version = version or default_version(data_dir)
    resolved = resolve(model_ref)
    mid = model_id(model_ref, resolved)
    fp = fingerprint(resolved.local_dir)
    model_out = out_dir / mid
    per_dataset = model_out / f"datasets_{version}"
    per_dataset.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(per_dataset)
    remove_stale_temporaries(model_out)
    ModelInfo.describe(mid, model_ref, resolved.local_dir, role=role, run=run_name).write(out_dir)
    cache = (cache_dir or paths.cache_dir() / "holmes_encodings").resolve()
    run = ProbingRun(mid, results_path(model_out, version))
    lm = None
    frames: list[pd.DataFrame] = []
    for folder in folders:
        t0 = time.perf_counter()
        name = folder.name
        try:
            ds = load_dataset(folder)
        except UnsupportedProbeType as exc:
            log.warning("skipped: %s", exc)
            run.outcomes.append(DatasetOutcome(name, "skipped", message=str(exc)))
            say(f"{name}: skipped ({exc})")
            continue
        except HolmesDataError as exc:
            run.outcomes.append(DatasetOutcome(name, "failed", message=str(exc)))
            say(f"{name}: FAILED: {exc}")
            continue
        key = _settings_key(fp, ds, seeds, control_task, layer, max_length)
        csv_path, meta_path = per_dataset / f"{name}.csv", per_dataset / f"{name}.json"
        frame = _reusable(csv_path, meta_path, key)
        status = "reused"
        if frame is None:
            status = "done"
            if lm is None:
                t_load = time.perf_counter()
                lm = load_frozen_model(resolved.local_dir, resolved.kind, fp, device)
                check_layer(layer, lm.num_layers)
                run.load_seconds = time.perf_counter() - t_load
                say(f"model {mid} loaded in {run.load_seconds:.2f}s ({lm.num_layers} layers, {lm.device})")
                t0 = time.perf_counter()  # dataset times exclude the one-off model load
            feats = encode_dataset(lm, ds, layer, batch_size, max_length, cache)
            scores = probe_scores(ds, feats, seeds, control_task, hyper)
            encoding = "full" if lm.device.type == "cpu" else "half"
            frame = pd.DataFrame(
                [(name, mid, encoding, kind, len(ds.samples), seed, 0, score) for kind, seed, score in scores],
                columns=RESULT_COLUMNS,
            )
            # Rows first, then the meta that marks them reusable: a crash in between recomputes.
            write_text(csv_path, frame.to_csv(index=False))
            write_json(meta_path, {"settings_key": key, "rows": len(frame), "layer": layer, "seeds": seeds,
                                   "control_task": control_task, "engine_version": ENGINE_VERSION,
                                   "probe_type": ds.probe_type, "data_hash": ds.content_hash})
        frames.append(frame)
        none = frame[frame["control_task_type"] == NO_CONTROL]["score"]
        ctrl = frame[frame["control_task_type"] != NO_CONTROL]["score"]
        outcome = DatasetOutcome(
            name, status, time.perf_counter() - t0,
            mean_score=float(none.mean()), mean_control=float(ctrl.mean()) if len(ctrl) else None,
        )
        run.outcomes.append(outcome)
        ctrl_txt = f" control {outcome.mean_control:.3f}" if outcome.mean_control is not None else ""
        say(f"{name}: {status} in {outcome.seconds:.2f}s score {outcome.mean_score:.3f}{ctrl_txt}")
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
    write_text(run.results_csv, results.to_csv(index=False))
    write_json(run_record_path(model_out, version), {
        "model_id": mid, "reference": model_ref, "data_dir": str(data_dir), "version": version,
        "engine": "builtin", "engine_version": ENGINE_VERSION, "seeds": seeds, "control_task": control_task,
        "layer": layer, "max_length": max_length, "model_load_seconds": round(run.load_seconds, 3),
        "datasets": {o.name: {"status": o.status, "seconds": round(o.seconds, 3), "message": o.message}
                     for o in run.outcomes},
        "complete": not run.failed,
    })
    return run


def probe_model(spec: ProbeJobSpec, report: Callable[[str], None] | None = None,
                cache_dir: Path | None = None, holmes_python: Path | None = None) -> None:
    """Run one probing job (either engine); raises StageFailed when a dataset failed."""
    say = report or (lambda line: print(line, flush=True))
    section = spec.holmes
    if section.engine == "upstream":
        from mergepipe.evaluate.holmes.upstream import run_upstream

        assert section.dir is not None  # the section's own validation ensures it
        result = run_upstream(
            spec.model.reference, section.dir, spec.results_dir, seeds=section.seeds, version=section.version,
            control_task=section.control_task, python=holmes_python, data_dir=spec.data_dir,
            role=spec.model.role, run_name=spec.model.run, report=say,
        )
        say(f"{result.model_id}: upstream Holmes results -> {result.results_csv}")
        return
    if spec.data_dir is None:
        raise MergepipeError("the built-in Holmes engine needs a data folder (holmes.data_dir)")
    t0 = time.perf_counter()
    run = run_probing(
        spec.model.reference, spec.data_dir, spec.results_dir, section.seeds,
        control_task=section.control_task, layer=section.layer, batch_size=section.batch_size,
        max_length=section.max_length, device=spec.device, version=section.version, cache_dir=cache_dir,
        role=spec.model.role, run_name=spec.model.run, report=say,
    )
    done = sum(o.status in ("done", "reused") for o in run.outcomes)
    say(f"{run.model_id}: {done} dataset(s) probed, {len(run.failed)} failed, "
        f"{sum(o.status == 'skipped' for o in run.outcomes)} skipped in {time.perf_counter() - t0:.1f}s "
        f"-> {run.results_csv}")
    if run.failed:
        for o in run.failed:
            print(f"error: {o.message}", file=sys.stderr, flush=True)
        raise StageFailed(f"{len(run.failed)} probing dataset(s) failed for {run.model_id}")
