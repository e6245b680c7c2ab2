"""lm-evaluation-harness result files -> one tidy row per (model, task, metric, filter).

Reads ``harness_results/<model-id>/<suite>/results_<timestamp>.json`` (lm-eval's own CLI layout
and schema, 0.4.x: metric keys are ``"<metric>,<filter>"``). Rules:

- the model id is the directory name, never lm-eval's ``model_name`` (which drops the Hub
  organisation for some backends, so ``orgA/llama`` and ``orgB/llama`` would collide);
- when several files hold the same (model, task, settings), the newest by the timestamp
  recorded *inside* the file wins; the others are reported as superseded;
- group scores come from lm-eval's own group results; they are never recomputed here;
- a value lm-eval could not compute (``"N/A"``) is NaN, never a string;
- ``aggregation`` says how a score was aggregated when mergepipe recorded it (a tinyBenchmarks
  IRT estimate, or the plain mean of its ``_mean`` variant), so the two are never confused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mergepipe.core.records import MODEL_INFO, ModelInfo

HARNESS_COLUMNS = [
    "run", "model_id", "role", "merge_method", "merge_parameters", "suite", "task", "group",
    "metric", "filter", "aggregation", "value", "stderr", "n_samples", "num_fewshot", "chat_template",
    "batch_size", "backend", "dtype", "limit", "lm_eval_version", "evaluated_at", "source_file",
]
ROLE_ORDER = {"base": 0, "expert": 1, "merged": 2, "unknown": 3}
_ENTRY_META = {"alias", "name", "sample_len", "sample_count", "samples"}
_FILE_TS = re.compile(r"results_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)")


@dataclass(frozen=True)
class Issue:
    """Something organize skipped or overrode, reported to the user and in the report."""

    kind: str  # "unreadable" | "layout" | "superseded" | "no-model-info" | "empty"
    path: str
    message: str


class LayoutError(ValueError):
    """A file that is not lm-eval 0.4.x results (other version, other tool)."""


# -- model info ------------------------------------------------------------------------------

def model_labels(info: ModelInfo | None) -> dict[str, Any]:
    """The label columns of a model's table rows, from its ``model_info.json`` (None: unknown)."""
    params = info.merge_parameters if info else None
    role = (info.role if info else None) or "unknown"
    return {
        "run": info.run if info else None,
        "role": role if role in ROLE_ORDER else "unknown",
        "merge_method": info.merge_method if info else None,
        "merge_parameters": json.dumps(params, sort_keys=True) if params is not None else None,
    }


# -- one file --------------------------------------------------------------------------------

def to_float(value: Any) -> float:
    """lm-eval writes "N/A" (or nothing) where it has no number; that is NaN here."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def file_timestamp(data: dict[str, Any], path: Path) -> tuple[float, str]:
    """(epoch seconds, where it came from): our own ``evaluated_at``, lm-eval's ``date``,
    and only as a last resort the timestamp in the file name."""
    ours = _settings(data).get("evaluated_at")
    if isinstance(ours, str):
        try:
            stamp = datetime.fromisoformat(ours.replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            return stamp.timestamp(), "mergepipe.evaluated_at"
        except ValueError:
            pass
    date = data.get("date")
    if isinstance(date, (int, float)) and not isinstance(date, bool):
        return float(date), "date"
    if isinstance(date, str):
        try:
            return float(date), "date"
        except ValueError:
            pass
    match = _FILE_TS.search(path.name)
    if match:
        day, clock = match.group(1).split("T")
        stamp = datetime.fromisoformat(f"{day}T{clock.replace('-', ':')}").replace(tzinfo=UTC)
        return stamp.timestamp(), "file name"
    return path.stat().st_mtime, "modification time"


def _settings(data: dict[str, Any]) -> dict[str, Any]:
    """Our settings: top-level ``mergepipe`` wins over ``config.mergepipe``."""
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    merged: dict[str, Any] = {}
    for part in (config.get("mergepipe"), data.get("mergepipe")):
        if isinstance(part, dict):
            merged.update(part)
    return merged


def _model_arg(config: dict[str, Any], key: str) -> str | None:
    args = config.get("model_args")
    if isinstance(args, dict):
        value = args.get(key)
        return None if value is None else str(value)
    if isinstance(args, str):
        for part in args.split(","):
            name, _, value = part.partition("=")
            if name.strip() == key:
                return value.strip()
    return None


def check_layout(data: Any) -> None:
    """Raise LayoutError unless ``data`` looks like lm-eval 0.4.x aggregated results."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise LayoutError("no 'results' mapping; not an lm-evaluation-harness results file")
    keys = [k for entry in data["results"].values() if isinstance(entry, dict) for k in entry]
    metric_keys = [k for k in keys if k not in _ENTRY_META]
    if metric_keys and not any("," in k for k in metric_keys):
        version = data.get("lm_eval_version") or "unknown (probably < 0.4)"
        raise LayoutError(
            f"metric keys have no ',<filter>' part (lm_eval_version {version}); "
            "only lm-evaluation-harness >= 0.4 result files are supported"
        )


def parse_results(data: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Rows of one lm-eval results file (without model labels)."""
    check_layout(data)
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    ours = _settings(data)
    results: dict[str, Any] = data["results"]
    groups: dict[str, Any] = data.get("groups") if isinstance(data.get("groups"), dict) else {}
    group_subtasks = data.get("group_subtasks") if isinstance(data.get("group_subtasks"), dict) else {}
    parent: dict[str, str] = {}
    for group, subtasks in group_subtasks.items():
        for sub in subtasks or []:
            parent.setdefault(sub, group)
    entries = dict(results)
    for name, entry in groups.items():  # older 0.4 releases keep groups only here
        entries.setdefault(name, entry)
    group_names = set(groups) | {g for g in group_subtasks if g in entries}

    hib = data.get("higher_is_better") if isinstance(data.get("higher_is_better"), dict) else {}
    n_shot = data.get("n-shot") if isinstance(data.get("n-shot"), dict) else {}
    n_samples = data.get("n-samples") if isinstance(data.get("n-samples"), dict) else {}
    stamp, _ = file_timestamp(data, path)
    dtype = ours.get("dtype") or _model_arg(config, "dtype") or config.get("model_dtype")
    if isinstance(dtype, str):
        dtype = dtype.removeprefix("torch.")
    chat = ours.get("apply_chat_template")
    if chat is None:
        chat = bool(data.get("chat_template"))
    backend = ours.get("backend") or data.get("model_source") or config.get("model")
    common = {
        "chat_template": bool(chat),
        "batch_size": None if ours.get("batch_size", config.get("batch_size")) is None
        else str(ours.get("batch_size", config.get("batch_size"))),
        "backend": backend if isinstance(backend, str) else None,
        "dtype": dtype,
        "limit": to_float(ours.get("limit", config.get("limit"))),
        "lm_eval_version": ours.get("lm_eval_version") or data.get("lm_eval_version"),
        "evaluated_at": datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds"),
        "_ts": stamp,
    }
    # How a task's items were aggregated, where mergepipe recorded it (tinyBenchmarks: IRT estimate
    # or plain mean); empty for tasks aggregated the usual way.
    aggregation = ours.get("aggregation") if isinstance(ours.get("aggregation"), dict) else {}
    rows = []
    for task, entry in entries.items():
        if not isinstance(entry, dict):
            continue
        is_group = task in group_names
        count = (n_samples.get(task) or {}).get("effective") if isinstance(n_samples.get(task), dict) else None
        if count is None:
            count = entry.get("sample_len")
        shots = n_shot.get(task, ours.get("num_fewshot"))
        for key, value in entry.items():
            if key in _ENTRY_META or "," not in key:
                continue
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr"):
                continue
            rows.append({
                "task": task,
                "group": task if is_group else parent.get(task),
                "metric": metric,
                "filter": filt,
                "aggregation": aggregation.get(task),
                "value": to_float(value),
                "stderr": to_float(entry.get(f"{metric}_stderr,{filt}")),
                "n_samples": to_float(count),
                "num_fewshot": to_float(shots),
                "higher_is_better": (hib.get(task) or {}).get(metric),
                **common,
            })
    return rows


# -- a results directory ---------------------------------------------------------------------

def find_result_files(harness_dir: Path) -> list[Path]:
    if not harness_dir.is_dir():
        return []
    # Dot-folders are in-progress writes (staging, atomic temporaries): never read them.
    return sorted(
        p for p in harness_dir.rglob("results_*.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(harness_dir).parts)
    )


def _ids_from_path(path: Path, root: Path) -> tuple[str, str]:
    """(model_id, suite) from ``<model-id>/<suite>/results_*.json`` (or ``<model-id>/results_*``)."""
    parts = path.relative_to(root).parts
    if len(parts) >= 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return parts[0], "default"
    return "unknown", "default"


def read_harness_dir(harness_dir: Path) -> tuple[list[dict[str, Any]], list[Issue], int]:
    """All rows (newest wins per model/task/settings) and the issues met; plus files found."""
    harness_dir = Path(harness_dir)
    files = find_result_files(harness_dir)
    issues: list[Issue] = []
    rows: list[dict[str, Any]] = []
    infos: dict[str, ModelInfo | None] = {}
    for path in files:
        rel = str(path.relative_to(harness_dir))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            issues.append(Issue("unreadable", str(path), f"{path}: truncated or invalid JSON "
                                f"({exc.msg} at line {exc.lineno}); skipped"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(Issue("unreadable", str(path), f"{path}: cannot read ({exc}); skipped"))
            continue
        try:
            file_rows = parse_results(data, path)
        except LayoutError as exc:
            issues.append(Issue("layout", str(path), f"{path}: unsupported layout: {exc}; skipped"))
            continue
        model_id, suite = _ids_from_path(path, harness_dir)
        if model_id not in infos:
            infos[model_id] = ModelInfo.read(harness_dir / model_id)
            if infos[model_id] is None:
                issues.append(Issue("no-model-info", str(harness_dir / model_id / MODEL_INFO),
                                    f"{harness_dir / model_id / MODEL_INFO} missing: role unknown"))
        labels = model_labels(infos[model_id])
        for row in file_rows:
            row.update(labels, model_id=model_id, suite=suite, source_file=rel)
        rows.extend(file_rows)
    kept, superseded = newest_wins(rows)
    return kept, issues + superseded, len(files)


def _settings_key(row: dict[str, Any]) -> tuple[Any, ...]:
    def norm(v: Any) -> Any:
        return None if isinstance(v, float) and math.isnan(v) else v
    return (row["model_id"], row["task"], norm(row["num_fewshot"]), row["chat_template"],
            norm(row["limit"]), row["dtype"])


def newest_wins(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Issue]]:
    """Per (model, task, settings) keep the rows of the newest file; report the others."""
    best: dict[tuple[Any, ...], tuple[float, str]] = {}
    files: dict[tuple[Any, ...], set[str]] = {}
    for row in rows:
        key = _settings_key(row)
        cand = (row["_ts"], row["source_file"])
        if key not in best or cand > best[key]:
            best[key] = cand
        files.setdefault(key, set()).add(row["source_file"])
    kept = [r for r in rows if (r["_ts"], r["source_file"]) == best[_settings_key(r)]]
    issues = []
    for key, names in sorted(files.items(), key=lambda kv: str(kv[0])):
        winner = best[key][1]
        for name in sorted(names - {winner}):
            issues.append(Issue(
                "superseded", name,
                f"{name}: task {key[1]!r} of {key[0]} superseded by the newer {winner}",
            ))
    return kept, issues
