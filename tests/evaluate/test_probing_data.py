"""Reading and validating Holmes dataset folders: real FlashHolmes fixtures and every bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mergepipe.evaluate.holmes.data import (
    HolmesDataError,
    UnsupportedProbeType,
    dataset_folders,
    load_dataset,
)
from tests.helpers.holmes_data import (
    FLASH,
    needs_fixtures,
    sentence_rows,
    span_rows,
    split_rows,
    token_rows,
    write_dataset,
)


@needs_fixtures
def test_reads_real_flash_holmes_datasets() -> None:
    folders = dataset_folders(FLASH)
    assert [f.name for f in folders] == [
        "blimp-determiner_noun_agreement_1", "blimp-drop_argument", "blimp-inchoative"]
    for folder in folders:
        ds = load_dataset(folder)
        assert ds.probe_type == "SENTENCE" and ds.num_labels == 2 and not ds.is_regression
        assert len(ds.samples) == 643
        assert [len(ds.split(s)) for s in ("train", "dev", "test")] == [43, 200, 400]
        assert {s.label for s in ds.samples} == {0.0, 1.0}
        assert all(len(s.texts) == 1 and s.tokens == () for s in ds.samples)
        assert len(ds.content_hash) == 16
    first = load_dataset(folders[2]).samples[0]
    assert first.texts == ("Patricia had changed.",) and first.label == 0 and first.row == 2
    # Apostrophes: the literal switches to double quotes, doubled again by CSV quoting.
    texts = {s.texts[0] for s in load_dataset(folders[0]).samples}
    assert "Carmen hadn't shocked these customers." in texts


def test_reads_pairs_tokens_and_spans(tmp_path: Path) -> None:
    pair = split_rows(lambda i: {"inputs": repr((f"a cat {i}.", "it sleeps.")), "label": i % 2})
    bi = load_dataset(write_dataset(tmp_path, "pair-bi", "SENTENCE_PAIR_BI", pair))
    assert bi.samples[3].texts == ("a cat 3.", "it sleeps.")
    cross = load_dataset(write_dataset(tmp_path, "pair-cross", "SENTENCE_PAIR_CROSS", pair))
    assert cross.probe_type == "SENTENCE_PAIR_CROSS" and len(cross.samples) == 52
    tok = load_dataset(write_dataset(tmp_path, "tok", "SENTENCE_TOKENS", token_rows()))
    assert tok.samples[0].texts == ("the cat sees 0 dogs",)
    assert [(t.start, t.end) for t in tok.samples[0].tokens] == [(4, 7), (15, 19)]
    spans = load_dataset(write_dataset(tmp_path, "spans", "SENTENCE_SPANS", span_rows(), num_labels=3))
    assert [t.group for t in spans.samples[0].tokens] == [0, 0, 1]
    assert spans.samples[0].tokens[2].context_index == 1


def test_regression_labels_are_floats(tmp_path: Path) -> None:
    rows = split_rows(lambda i: {"inputs": repr((f"s {i}",)), "label": i / 7})
    ds = load_dataset(write_dataset(tmp_path, "reg", "SENTENCE", rows, num_labels=1))
    assert ds.is_regression and ds.samples[1].label == pytest.approx(1 / 7)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: (f / "config-none.yaml").unlink(), r"dataset bad: config-none\.yaml is missing"),
        (lambda f: _edit_cell(f, 4, "inputs", "('unclosed',"),
         r"dataset bad, samples\.csv row 6: inputs .* not a valid Python literal"),
        (lambda f: _edit_config(f, probe_task_type="SENTENCE_TRIPLE"),
         r"dataset bad: unknown probe_task_type 'SENTENCE_TRIPLE'"),
        (lambda f: _edit_cell(f, 2, "label", "2"),
         r"dataset bad, samples\.csv row 4: label 2 is out of range for num_labels 2"),
        (lambda f: _edit_cell(f, 0, "label", "x"), r"dataset bad, samples\.csv row 2: label 'x' is not a number"),
        (lambda f: _drop_split(f, "dev"), r"dataset bad: the 'dev' split is missing"),
        (lambda f: _edit_cell(f, 1, "set-0", "valid"), r"dataset bad, samples\.csv row 3: set-0 is 'valid'"),
        (lambda f: _edit_cell(f, 1, "inputs", "('a', 'b')"), r"row 3: inputs must be a tuple of 1 string"),
        (lambda f: (f / "samples.csv").unlink(), r"dataset bad: samples\.csv is missing"),
    ],
)
def test_bad_input_names_dataset_and_row(tmp_path: Path, mutate: Any, message: str) -> None:
    folder = write_dataset(tmp_path, "bad", "SENTENCE", sentence_rows())
    mutate(folder)
    with pytest.raises(HolmesDataError, match=message):
        load_dataset(folder)


def test_bad_token_positions(tmp_path: Path) -> None:
    rows = token_rows()
    rows[5]["inputs"] = repr([("cat", 0, 5, 8), ("dogs", 0, 15, 19)])  # offsets do not spell 'cat'
    message = r"dataset tok, samples\.csv row 7: characters 5:8 of context 0 are 'at '"
    with pytest.raises(HolmesDataError, match=message):
        load_dataset(write_dataset(tmp_path, "tok", "SENTENCE_TOKENS", rows))
    rows = token_rows()
    rows[2]["inputs"] = repr([("cat", 0, 4, 7)])  # one token where the others have two
    with pytest.raises(HolmesDataError, match=r"row 4: 1 tokens, but row 2 has 2"):
        load_dataset(write_dataset(tmp_path, "tok2", "SENTENCE_TOKENS", rows))
    rows = token_rows()
    rows[0]["context"] = ""
    with pytest.raises(HolmesDataError, match=r"row 2: SENTENCE_TOKENS needs a context"):
        load_dataset(write_dataset(tmp_path, "tok3", "SENTENCE_TOKENS", rows))


def test_known_but_unsupported_type_is_its_own_error(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path, "pairtok", "SENTENCE_PAIR_TOKENS_BI", sentence_rows())
    with pytest.raises(UnsupportedProbeType, match="SENTENCE_PAIR_TOKENS_BI"):
        load_dataset(folder)


def test_data_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(HolmesDataError, match="probing data directory not found"):
        dataset_folders(tmp_path / "nope")
    with pytest.raises(HolmesDataError, match="no dataset folders"):
        dataset_folders(tmp_path)


def _edit_cell(folder: Path, index: int, column: str, value: str) -> None:
    frame = pd.read_csv(folder / "samples.csv", dtype=str, keep_default_na=False)
    frame.loc[index, column] = value
    frame.to_csv(folder / "samples.csv", index=False)


def _edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "config-none.yaml"
    cfg = yaml.safe_load(path.read_text()) | changes
    path.write_text(yaml.safe_dump(cfg))


def _drop_split(folder: Path, split: str) -> None:
    frame = pd.read_csv(folder / "samples.csv", dtype=str, keep_default_na=False)
    frame[frame["set-0"] != split].to_csv(folder / "samples.csv", index=False)
