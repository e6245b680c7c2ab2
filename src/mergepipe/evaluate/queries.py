"""The competition's files: a queries CSV in, a predictions CSV out, and the progress in between.

The LLM-merging starter kit's formats (``data/test.csv`` and what its ``evaluate_model`` writes
to ``output/test.csv``):

- queries: columns ``id, input, eval_type, answer_choices`` (a validation file also has
  ``target``); ``eval_type`` is ``multiple_choice`` (``answer_choices`` is a Python list
  literal such as ``['A', 'B', 'C', 'D']``) or ``generation`` (``answer_choices`` empty);
- predictions: columns ``id, prediction, dummy_field``, one row per query in the queries'
  order; ``prediction`` is the index of the chosen answer (``"2"``) or the generated text;
  ``dummy_field`` is 0.

While answering, finished rows are appended to a hidden progress file beside the output
(``.<name>.partial.jsonl``, first line: the settings key), so a killed run resumes where it
stopped; the predictions file itself is written atomically once every query is answered, with
a record (``.<name>.mergepipe.json``) that makes a re-run with the same key skip the work.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergepipe.core.atomic import write_json, write_text
from mergepipe.errors import MergepipeError

REQUIRED_COLUMNS = ("id", "input", "eval_type")
EVAL_TYPES = ("multiple_choice", "generation")
OUTPUT_COLUMNS = ("id", "prediction", "dummy_field")
FORMAT = 1


class QueriesError(MergepipeError):
    """A queries file the predict stage cannot read (names the file and the line)."""


@dataclass(frozen=True)
class Query:
    id: str
    input: str
    eval_type: str  # "multiple_choice" | "generation"
    choices: tuple[str, ...] = ()


def read_queries(path: Path) -> list[Query]:
    """Every query of ``path``, checked: columns, unique ids, eval types, answer choices."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise QueriesError(f"queries file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QueriesError(f"queries file {path}: cannot read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        found = ", ".join(header) or "none"
        raise QueriesError(f"queries file {path}: missing column(s) {', '.join(missing)} "
                           f"(expected {', '.join(REQUIRED_COLUMNS)}, answer_choices; found {found})")
    queries: list[Query] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        qid = (row.get("id") or "").strip()
        if not qid:
            raise QueriesError(f"queries file {path}: line {line}: empty id")
        if qid in seen:
            raise QueriesError(f"queries file {path}: line {line}: duplicate id {qid!r}")
        seen.add(qid)
        kind = (row.get("eval_type") or "").strip()
        if kind not in EVAL_TYPES:
            raise QueriesError(f"queries file {path}: line {line}: eval_type {kind!r} is not one of "
                               f"{', '.join(EVAL_TYPES)}")
        choices: tuple[str, ...] = ()
        if kind == "multiple_choice":
            choices = _choices(row.get("answer_choices"), path, line)
        queries.append(Query(qid, row.get("input") or "", kind, choices))
    if not queries:
        raise QueriesError(f"queries file {path}: no queries")
    return queries


def _choices(raw: str | None, path: Path, line: int) -> tuple[str, ...]:
    try:
        value = ast.literal_eval((raw or "").strip())
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, (str, int, float)) for v in value):
        raise QueriesError(f"queries file {path}: line {line}: answer_choices must be a non-empty list such "
                           f"as ['A', 'B'], got {raw!r}")
    return tuple(str(v) for v in value)


def predictions_csv(queries: list[Query], answers: dict[str, str]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    for q in queries:
        writer.writerow([q.id, answers[q.id], 0])
    return out.getvalue()


def read_predictions(path: Path) -> dict[str, str]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return {row["id"]: row["prediction"] for row in csv.DictReader(fh)}


# -- progress and completion --------------------------------------------------------------------

def partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial.jsonl")


def record_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.mergepipe.json")


def is_finished(out: Path, key: str) -> bool:
    """``out`` exists and its record says it was made with settings key ``key``."""
    try:
        record = json.loads(record_path(out).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return out.is_file() and isinstance(record, dict) and record.get("key") == key


class Progress:
    """The answers so far, appended line by line (flushed and synced) to the progress file."""

    def __init__(self, out: Path, key: str) -> None:
        self.path = partial_path(out)
        self.key = key
        self.answers: dict[str, str] = {}
        self.discarded = False
        self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with self.path.open("w", encoding="utf-8") as fh:
                fh.write(json.dumps({"mergepipe_predict": FORMAT, "key": key}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if not isinstance(header, dict) or header.get("key") != self.key:
            self.path.unlink(missing_ok=True)  # made with other settings or another model
            self.discarded = bool(lines)
            return
        kept = [lines[0]]
        for line in lines[1:]:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut off by the kill
            if isinstance(item, dict) and "id" in item and "prediction" in item:
                self.answers[str(item["id"])] = str(item["prediction"])
                kept.append(line)
        if len(kept) < len(lines):  # drop the cut-off tail before appending to the file again
            write_text(self.path, "\n".join(kept) + "\n")

    def add(self, items: Iterable[tuple[str, str]]) -> None:
        for qid, prediction in items:
            self.answers[qid] = prediction
            self._fh.write(json.dumps({"id": qid, "prediction": prediction}) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def finish(self, out: Path, queries: list[Query], record: dict[str, Any]) -> None:
        """Write the predictions file atomically, then its record, then drop the progress file."""
        self.close()
        write_text(out, predictions_csv(queries, self.answers))
        write_json(record_path(out), {**record, "key": self.key})
        self.path.unlink(missing_ok=True)
