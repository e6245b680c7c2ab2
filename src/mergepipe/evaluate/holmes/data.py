"""Read and validate Holmes probing-dataset folders (``config-none.yaml`` + ``samples.csv``).

The format is upstream Holmes' own (see docs/holmes.md): ``inputs`` is a Python literal,
``set-0`` the split, ``label`` the class id (or a float when ``num_labels`` is 1). Per probe type:

- ``SENTENCE``: ``inputs = ('a sentence',)``
- ``SENTENCE_PAIR_BI`` / ``SENTENCE_PAIR_CROSS``: ``inputs = ('first', 'second')``
- ``SENTENCE_TOKENS``: ``context = ['sentence 0', ...]`` and
  ``inputs = [(token, context_index, char_start, char_end), ...]``; every token is encoded as the
  mean over the sub-tokens covering its characters, and the tokens are concatenated.
- ``SENTENCE_SPANS``: like tokens, with a fifth element ``span_index``:
  ``inputs = [(word, context_index, char_start, char_end, span_index), ...]``; the words of one
  span are averaged, and the spans are concatenated.

Every problem is reported as one line naming the dataset and, where it applies, the row.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mergepipe.errors import MergepipeError

log = logging.getLogger(__name__)

CONFIG_NAME = "config-none.yaml"
SAMPLES_NAME = "samples.csv"
SPLITS = ("train", "dev", "test")
SUPPORTED_TYPES = (
    "SENTENCE",
    "SENTENCE_PAIR_BI",
    "SENTENCE_PAIR_CROSS",
    "SENTENCE_TOKENS",
    "SENTENCE_SPANS",
)
# Known upstream types this engine does not implement: skipped with a warning, not an error.
UNSUPPORTED_TYPES = ("SENTENCE_PAIR_TOKENS_BI", "SENTENCE_PAIR_TOKENS_CROSS")
REQUIRED_COLUMNS = ("inputs", "label", "set-0")


class HolmesDataError(MergepipeError):
    """A probing dataset folder is malformed."""


class UnsupportedProbeType(HolmesDataError):
    """A known Holmes probe type the built-in engine does not implement (skipped, not failed)."""


@dataclass(frozen=True)
class TokenRef:
    """Characters ``start:end`` of ``context[context_index]``, pooled into one vector."""

    context_index: int
    start: int
    end: int
    group: int = 0  # span index (SENTENCE_SPANS); tokens of one group are averaged


@dataclass
class Sample:
    row: int  # 1-based line number of the data row in samples.csv (header is line 1)
    texts: tuple[str, ...]  # sentences / pair / contexts, depending on the probe type
    tokens: tuple[TokenRef, ...]  # empty for sentence-level probe types
    label: float
    split: str


@dataclass
class HolmesDataset:
    name: str
    path: Path
    probe_type: str
    num_labels: int
    samples: list[Sample]
    config: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]


def dataset_folders(data_dir: Path) -> list[Path]:
    """Every sub-folder of ``data_dir`` (each one is meant to be a dataset), sorted by name."""
    if not data_dir.is_dir():
        raise HolmesDataError(f"probing data directory not found: {data_dir}")
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not folders:
        raise HolmesDataError(f"{data_dir}: no dataset folders (expected <dataset>/{CONFIG_NAME} + {SAMPLES_NAME})")
    return folders


def read_config(folder: Path) -> dict[str, Any]:
    name = folder.name
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise HolmesDataError(f"dataset {name}: {CONFIG_NAME} is missing in {folder}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise HolmesDataError(f"dataset {name}: {CONFIG_NAME} is not valid YAML") from None
    if not isinstance(config, dict):
        raise HolmesDataError(f"dataset {name}: {CONFIG_NAME} must be a mapping")
    probe_type = str(config.get("probe_task_type", ""))
    if probe_type in UNSUPPORTED_TYPES:
        raise UnsupportedProbeType(f"dataset {name}: probe type {probe_type} is not supported by the built-in engine")
    if probe_type not in SUPPORTED_TYPES:
        raise HolmesDataError(
            f"dataset {name}: unknown probe_task_type {probe_type or '(missing)'!r} in {CONFIG_NAME}; "
            f"supported: {', '.join(SUPPORTED_TYPES)}"
        )
    num_labels = config.get("num_labels")
    if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
        raise HolmesDataError(f"dataset {name}: num_labels in {CONFIG_NAME} must be a positive integer")
    return config


def load_dataset(folder: Path) -> HolmesDataset:
    """Read and fully validate one dataset folder, or raise HolmesDataError naming the problem."""
    name = folder.name
    config = read_config(folder)
    probe_type = str(config["probe_task_type"])
    num_labels = int(config["num_labels"])
    samples_path = folder / SAMPLES_NAME
    if not samples_path.is_file():
        raise HolmesDataError(f"dataset {name}: {SAMPLES_NAME} is missing in {folder}")
    raw = samples_path.read_bytes()
    try:
        frame = pd.read_csv(samples_path, keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise HolmesDataError(f"dataset {name}: {SAMPLES_NAME} is not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise HolmesDataError(f"dataset {name}: {SAMPLES_NAME} lacks column(s) {', '.join(missing)}")
    has_context = "context" in frame.columns
    samples: list[Sample] = []
    for i, rec in enumerate(frame.to_dict("records")):
        row = i + 2  # line number in the file: the header is line 1
        where = f"dataset {name}, {SAMPLES_NAME} row {row}"
        split = str(rec["set-0"]).strip()
        if split not in SPLITS:
            raise HolmesDataError(f"{where}: set-0 is {split!r}, expected one of {', '.join(SPLITS)}")
        label = _parse_label(rec["label"], num_labels, where)
        context = rec["context"] if has_context else ""
        texts, tokens = _parse_inputs(rec["inputs"], context, probe_type, where)
        samples.append(Sample(row=row, texts=texts, tokens=tokens, label=label, split=split))
    for split in SPLITS:
        if not any(s.split == split for s in samples):
            raise HolmesDataError(f"dataset {name}: the {split!r} split is missing (no rows with set-0 = {split})")
    _check_consistent_shape(name, probe_type, samples)
    digest = hashlib.sha256(raw + (folder / CONFIG_NAME).read_bytes()).hexdigest()[:16]
    return HolmesDataset(name, folder, probe_type, num_labels, samples, config, digest)


def _parse_label(value: str, num_labels: int, where: str) -> float:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise HolmesDataError(f"{where}: label {text!r} is not a number") from None
    if not math.isfinite(number):
        raise HolmesDataError(f"{where}: label {text!r} is not finite")
    if num_labels == 1:
        return number
    if not number.is_integer() or not 0 <= number < num_labels:
        raise HolmesDataError(
            f"{where}: label {text} is out of range for num_labels {num_labels} (0..{num_labels - 1})")
    return number


def _literal(text: str, what: str, where: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        short = text if len(text) <= 60 else text[:57] + "..."
        raise HolmesDataError(f"{where}: {what} {short!r} is not a valid Python literal") from None


def _parse_inputs(inputs: str, context: str, probe_type: str, where: str
                  ) -> tuple[tuple[str, ...], tuple[TokenRef, ...]]:
    value = _literal(inputs, "inputs", where)
    if probe_type in ("SENTENCE", "SENTENCE_PAIR_BI", "SENTENCE_PAIR_CROSS"):
        want = 1 if probe_type == "SENTENCE" else 2
        if isinstance(value, str) and want == 1:
            value = (value,)
        if not isinstance(value, (tuple, list)) or len(value) != want or not all(isinstance(v, str) for v in value):
            raise HolmesDataError(f"{where}: inputs must be a tuple of {want} string(s) for {probe_type}")
        return tuple(value), ()
    # Token / span probes: positions inside the context sentences.
    if not str(context).strip():
        raise HolmesDataError(f"{where}: {probe_type} needs a context (a list of sentences)")
    ctx = _literal(context, "context", where)
    if isinstance(ctx, str):
        ctx = [ctx]
    if not isinstance(ctx, (list, tuple)) or not ctx or not all(isinstance(c, str) for c in ctx):
        raise HolmesDataError(f"{where}: context must be a list of sentences")
    arity = 4 if probe_type == "SENTENCE_TOKENS" else 5
    if isinstance(value, tuple) and value and not isinstance(value[0], (tuple, list)):
        value = [value]  # a single token written without the outer list
    if not isinstance(value, (list, tuple)) or not value:
        raise HolmesDataError(f"{where}: inputs must be a non-empty list of {arity}-tuples for {probe_type}")
    tokens: list[TokenRef] = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != arity:
            raise HolmesDataError(
                f"{where}: every inputs element must be (text, context_index, start, end"
                f"{', span_index' if arity == 5 else ''}) for {probe_type}"
            )
        text, idx, start, end = item[:4]
        group = item[4] if arity == 5 else 0
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (idx, start, end, group)):
            raise HolmesDataError(f"{where}: context index, start, end and span index must be integers")
        if not 0 <= idx < len(ctx):
            raise HolmesDataError(f"{where}: context index {idx} is out of range ({len(ctx)} context sentence(s))")
        if not 0 <= start < end <= len(ctx[idx]):
            raise HolmesDataError(f"{where}: characters {start}:{end} are outside context sentence {idx}")
        if isinstance(text, str) and text and ctx[idx][start:end] != text:
            raise HolmesDataError(
                f"{where}: characters {start}:{end} of context {idx} are {ctx[idx][start:end]!r}, not {text!r}"
            )
        tokens.append(TokenRef(idx, start, end, group))
    return tuple(ctx), tuple(tokens)


def _check_consistent_shape(name: str, probe_type: str, samples: list[Sample]) -> None:
    """Token/span probes concatenate their vectors: every row needs the same number of them."""
    if probe_type not in ("SENTENCE_TOKENS", "SENTENCE_SPANS"):
        return

    def width(s: Sample) -> int:
        return len(s.tokens) if probe_type == "SENTENCE_TOKENS" else len({t.group for t in s.tokens})

    first = width(samples[0])
    for s in samples:
        if width(s) != first:
            unit = "tokens" if probe_type == "SENTENCE_TOKENS" else "spans"
            raise HolmesDataError(
                f"dataset {name}, {SAMPLES_NAME} row {s.row}: {width(s)} {unit}, but row {samples[0].row} has {first}"
            )
        if probe_type == "SENTENCE_SPANS" and sorted({t.group for t in s.tokens}) != list(range(first)):
            raise HolmesDataError(f"dataset {name}, {SAMPLES_NAME} row {s.row}: span indices must be 0..{first - 1}")
