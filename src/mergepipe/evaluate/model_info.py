"""``model_info.json``: who a results folder belongs to (written beside every model's results).

Contract: ``<results>/<model-id>/model_info.json`` = {"model_id", "reference", "local_dir",
"role" ("base"|"expert"|"merged"), "merge_method" (or null), "merge_parameters" (or null), "run"}.
The organize stage labels table rows with it; a folder without it has role "unknown".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mergepipe.atomic import write_json

FILENAME = "model_info.json"
ROLES = ("base", "expert", "merged")


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    reference: str
    local_dir: str
    role: str | None = None
    merge_method: str | None = None
    merge_parameters: dict[str, Any] | None = None
    run: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def merge_record(local_dir: Path) -> dict[str, Any] | None:
    """The merge stage's ``mergepipe_merge.json`` of a merged model directory, if it has one."""
    path = Path(local_dir) / "mergepipe_merge.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def describe(model_id: str, reference: str, local_dir: Path, role: str | None = None,
             run: str | None = None) -> ModelInfo:
    """Model info for a model; a directory with a merge record is a merged model."""
    record = merge_record(local_dir)
    if record is not None:
        role = role or "merged"
        if run is None:
            run = Path(local_dir).parent.name
    return ModelInfo(
        model_id=model_id,
        reference=reference,
        local_dir=str(local_dir),
        role=role,
        merge_method=record.get("method") if record else None,
        merge_parameters=record.get("parameters") if record else None,
        run=run,
    )


def write(results_dir: Path, info: ModelInfo) -> Path:
    """Write ``<results_dir>/<model_id>/model_info.json`` (atomically) and return its path.

    Fields left unknown (None) keep the value already on disk, so evaluating a model again
    without saying its role does not erase the role recorded earlier.
    """
    path = Path(results_dir) / info.model_id / FILENAME
    data = info.to_json()
    old = read(path.parent)
    if old is not None:
        data = {k: (old.to_json()[k] if v is None else v) for k, v in data.items()}
    write_json(path, data)
    return path


def read(model_dir: Path) -> ModelInfo | None:
    """Read ``model_info.json`` from a ``<results>/<model-id>/`` folder (None if absent or invalid)."""
    try:
        data = json.loads((Path(model_dir) / FILENAME).read_text(encoding="utf-8"))
        return ModelInfo(**{k: data.get(k) for k in ModelInfo.__dataclass_fields__})
    except (OSError, json.JSONDecodeError, TypeError):
        return None
