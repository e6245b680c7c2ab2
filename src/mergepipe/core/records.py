"""The files passed between stages: each one's name, schema, writer and reader, in one place.

- :class:`MergeRecord` -- ``merged_models/<run>/<name>/mergepipe_merge.json``, written last by
  the merge stage (its presence with a matching ``config_hash`` is what "complete" means); read
  by evaluation (role, method), publishing (model card) and the run summary.
- :class:`ModelInfo` -- ``<results>/<model-id>/model_info.json``, written beside every model's
  harness and Holmes results; organize labels table rows with it (role "unknown" without it).
- :class:`RunSummary` -- ``organized_results/run_summary.json``, written by ``mergepipe run``
  (stages, timings, peak memory, failures); the report shows it.

Every other module calls these; none spells a file name itself. Readers return None for a file
that is missing or unreadable (a half-written file can only be a temporary: writes are atomic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergepipe.core.atomic import write_json
from mergepipe.errors import MergepipeError, ModelError

ROLES = ("base", "expert", "merged")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


class _Record(BaseModel):
    # Older and newer mergepipe versions may add fields: keep what we do not know.
    model_config = ConfigDict(extra="allow")


# -- the merge record ----------------------------------------------------------------------------

MERGE_RECORD = "mergepipe_merge.json"


class MergeRecord(_Record):
    """How a merged model was made; written last into its folder."""

    name: str
    run: str | None = None
    method: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    mergekit_config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    mergekit_version: str | None = None
    seed: int | None = None
    dtype: str | None = None
    device: str | None = None
    wall_seconds: float | None = None
    peak_rss_bytes: int | None = None
    output_bytes: int | None = None
    created_at: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    output: Literal["full", "adapter"] = "full"
    adapter: dict[str, Any] | None = None
    stages: list[dict[str, Any]] | None = None  # earlier merges this one is made from (lineage)

    def write(self, model_dir: Path) -> Path:
        path = Path(model_dir) / MERGE_RECORD
        write_json(path, self.model_dump(mode="json", exclude_none=True))
        return path

    @classmethod
    def read(cls, model_dir: Path) -> MergeRecord | None:
        """The record of a merged model folder; None when there is none (or it is unreadable)."""
        data = _read_json(Path(model_dir) / MERGE_RECORD)
        if data is None:
            return None
        try:
            return cls.model_validate(data)
        except ValidationError:
            return None

    @classmethod
    def require(cls, model_dir: Path) -> MergeRecord:
        """The record, or a one-line ModelError naming the folder."""
        path = Path(model_dir) / MERGE_RECORD
        if not path.is_file():
            raise ModelError(f"{model_dir}: not a merged model directory (no {MERGE_RECORD})")
        record = cls.read(model_dir)
        if record is None:
            raise ModelError(f"{path}: unreadable or invalid merge record")
        return record


def is_merged_model(model_dir: Path) -> bool:
    return (Path(model_dir) / MERGE_RECORD).is_file()


def merged_model_dirs(run_dir: Path) -> list[Path]:
    """Every finished merge under ``merged_models/<run>/`` (a folder holding a merge record)."""
    if not Path(run_dir).is_dir():
        return []
    return sorted(p for p in Path(run_dir).iterdir()
                  if p.is_dir() and not p.name.startswith(".") and is_merged_model(p))


# -- model info beside results -------------------------------------------------------------------

MODEL_INFO = "model_info.json"


class ModelInfo(_Record):
    """Who a results folder belongs to."""

    model_id: str
    reference: str | None = None
    local_dir: str | None = None
    role: str | None = None  # base | expert | merged; None = not known
    merge_method: str | None = None
    merge_parameters: dict[str, Any] | None = None
    run: str | None = None

    @classmethod
    def describe(cls, model_id: str, reference: str, local_dir: Path, role: str | None = None,
                 run: str | None = None) -> ModelInfo:
        """The info of a model; a folder with a merge record is a merged model of its run."""
        record = MergeRecord.read(local_dir)
        if record is not None:
            role = role or "merged"
            run = run or record.run or Path(local_dir).parent.name
        return cls(model_id=model_id, reference=reference, local_dir=str(local_dir), role=role,
                   merge_method=record.method if record else None,
                   merge_parameters=record.parameters if record else None, run=run)

    def write(self, results_dir: Path) -> Path:
        """Write ``<results_dir>/<model_id>/model_info.json`` (atomically); fields left unknown
        (None) keep the value already on disk, so a later job that does not know the role does
        not erase the role recorded earlier."""
        path = Path(results_dir) / self.model_id / MODEL_INFO
        data = self.model_dump(mode="json")
        old = ModelInfo.read(path.parent)
        if old is not None:
            known = old.model_dump(mode="json")
            data = {k: (known.get(k) if v is None else v) for k, v in {**known, **data}.items()}
        write_json(path, data)
        return path

    @classmethod
    def read(cls, model_dir: Path) -> ModelInfo | None:
        """``<results>/<model-id>/model_info.json``, or None when absent or invalid."""
        data = _read_json(Path(model_dir) / MODEL_INFO)
        if data is None or "model_id" not in data:
            return None
        try:
            return cls.model_validate(data)
        except ValidationError:
            return None


# -- the run summary -----------------------------------------------------------------------------

RUN_SUMMARY = "run_summary.json"


class StageSummary(_Record):
    name: str
    status: str = "ok"  # ok | failed | partial | skipped
    seconds: float | None = None
    wall_seconds: float | None = None
    peak_rss_bytes: int | None = None
    peak_gpu_bytes: int | None = None
    detail: str = ""
    jobs: int | None = None
    failed_jobs: int | None = None

    @property
    def duration(self) -> float | None:
        return self.seconds if self.seconds is not None else self.wall_seconds


class Failure(_Record):
    stage: str
    job: str = ""
    message: str = ""
    log: str = ""


class RunSummary(_Record):
    """What ``mergepipe run`` did: stages with timings and memory, and every failure."""

    run: str | None = None
    config_file: str | None = None
    config_hash: str | None = None
    config: dict[str, Any] | None = None
    mergepipe_version: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    stages: list[StageSummary] = Field(default_factory=list)
    total_seconds: float | None = None
    failures: list[Failure] = Field(default_factory=list)

    @property
    def total(self) -> float:
        if self.total_seconds is not None:
            return self.total_seconds
        return sum(s.duration or 0.0 for s in self.stages)

    def write(self, organized_dir: Path) -> Path:
        path = Path(organized_dir) / RUN_SUMMARY
        write_json(path, self.model_dump(mode="json"))
        return path

    @classmethod
    def read(cls, organized_dir: Path) -> RunSummary | None:
        """The summary, or None when there is none; a file that is not a summary is an error."""
        path = Path(organized_dir) / RUN_SUMMARY
        if not path.is_file():
            return None
        data = _read_json(path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MergepipeError(f"{path}: not a run summary ({exc.errors()[0]['msg']})") from None
