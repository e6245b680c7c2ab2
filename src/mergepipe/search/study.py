"""The Optuna study behind a search: its storage, sampler, lock and recovery after a crash.

The study lives in ``<outputs.search>/<name>/study.db`` (Optuna's RDB storage on SQLite), so a
search killed at any point resumes from it: finished trials are never proposed again, and a trial
that was running when the process died is proposed again with the same parameters and the same
candidate name, so its merge and any finished evaluation job are skipped by their hashes.

One process runs a study at a time: ``study.lock`` is held with ``flock`` (released by the kernel
when the holder dies; works on local filesystems and on NFS v4, not on every network filesystem).
A study refuses to resume when the search settings it was started with changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mergepipe.config import PipelineConfig
from mergepipe.errors import ConfigError, MergepipeError

STUDY_DB = "study.db"
LOCK_FILE = "study.lock"
CANDIDATE_ATTR = "candidate"  # the merge name of a trial (kept when an interrupted trial is re-run)
FAILED_ATTR = "failed"  # why a trial failed (set only for real failures, which count as done)
SETTINGS_ATTR = "settings_hash"


def study_dir(config: PipelineConfig) -> Path:
    return config.outputs.search / config.search_name


@contextlib.contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Hold the study's lock, or refuse in one line naming the holder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with path.open("a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise MergepipeError(f"search {folder.name} is already running ({holder}); wait for it or "
                                 "stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def settings_hash(config: PipelineConfig) -> str:
    """What makes two runs of a study the same search: the space, objective and models, the
    evaluation settings; not the trial budget, parallelism or what is kept on disk."""
    search = config.search.model_dump(mode="json", exclude={"trials", "parallel", "keep_models", "baseline"})
    payload = {
        "search": search,
        "base": config.base_model.model_dump(mode="json") if config.base_model else None,
        "models": [m.model_dump(mode="json") for m in config.models],
        "dtype": config.dtype,
        "seed": config.seed,
        "harness": config.evaluate.harness_settings(config.seed).model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def make_sampler(config: PipelineConfig, parallel: int) -> Any:
    import optuna

    section = config.search
    seed = config.seed if section.seed is None else section.seed
    startup = min(10, max(3, section.trials // 3))
    if section.sampler == "tpe":
        # constant_liar: candidates proposed together (one round) are spread out, not piled up.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                          group=len(section.methods) > 1, constant_liar=parallel > 1)
    if section.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    if section.sampler == "nsga2":
        population = max(2, min(50, max(parallel, section.trials // 3)))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(config: PipelineConfig, parallel: int) -> Any:
    """Create or load the study; a study started with other search settings is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = study_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    directions = ["maximize"] + (["minimize"] if config.search.multi_objective else [])
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / STUDY_DB}")
    try:
        study = optuna.create_study(study_name=config.search_name, storage=storage, load_if_exists=True,
                                    directions=directions, sampler=make_sampler(config, parallel))
    except ValueError as exc:  # directions differ from the stored study's
        raise ConfigError(f"search: the study in {folder} was made with other objectives ({exc}); set "
                          "search.name to start a new one") from None
    wanted = settings_hash(config)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, wanted)
    elif stored != wanted:
        raise ConfigError(f"search: the settings changed since study {config.search_name} started (space, "
                          f"objective, models or evaluation settings); set search.name to start a new study, "
                          f"or delete {folder} to start this one again")
    return study


def recover_interrupted(study: Any) -> list[int]:
    """Trials left running by a process that died: closed as failed and proposed again, with the
    same parameters and candidate name (so finished merges and jobs are reused). Returns their numbers."""
    from optuna.trial import TrialState

    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name = trial.user_attrs.get(CANDIDATE_ATTR)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={CANDIDATE_ATTR: name} if name else None)
        numbers.append(trial.number)
    return numbers


def counted(study: Any) -> tuple[int, int]:
    """(finished candidates, of which failed): what counts against ``search.trials``."""
    from optuna.trial import TrialState

    done = failed = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            done += 1
        elif trial.state == TrialState.FAIL and trial.user_attrs.get(FAILED_ATTR):
            done += 1
            failed += 1
    return done, failed
