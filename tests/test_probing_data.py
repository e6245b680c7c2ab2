"""Reading and validating Holmes dataset folders: real FlashHolmes fixtures and every bad input."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mergepipe.evaluate.holmes_data import (
    HolmesDataError,
    UnsupportedProbeType,
    dataset_folders,
    load_dataset,
)

FLASH = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "holmes" / "flash-holmes"
needs_fixtures = pytest.mark.skipif(not FLASH.is_dir(), reason="shared Holmes fixtures not present")


def write_dataset(root: Path, name: str, probe_type: str, rows: list[dict[str, Any]],
                  num_labels: int = 2, config: dict[str, Any] | None = None) -> Path:
    """A Holmes-format dataset folder (config-none.yaml + samples.csv) written like upstream."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"control_task_type": "NONE", "num_inputs": 1, "num_labels": num_labels, "num_probe_folds": 1,
           "probe_name": f"probe-{name}", "probe_task_type": probe_type,
           "probes_samples_path": f"general-probes/{name}/"}
    cfg.update(config or {})
    (folder / "config-none.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    frame = pd.DataFrame([
        {"inputs": r["inputs"], "context": r.get("context", ""), "topic": "", "org_label": r["label"],
         "set-0": r["split"], "string_label": r["label"], "label": r["label"], "id": i}
        for i, r in enumerate(rows)
    ])
    frame.to_csv(folder / "samples.csv", index=False)
    return folder


def split_rows(make: Any, n_train: int = 24, n_dev: int = 12, n_test: int = 16) -> list[dict[str, Any]]:
    rows = []
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows += [dict(make(i), split=split) for i in range(n)]
    return rows


def sentence_rows(n_train: int = 24, n_dev: int = 12, n_test: int = 16) -> list[dict[str, Any]]:
    words = ["cat", "dog", "stone", "cup"]
    return split_rows(lambda i: {"inputs": repr((f"the {words[i % 4]} sleeps {i}",)), "label": i % 2},
                      n_train, n_dev, n_test)


def token_rows() -> list[dict[str, Any]]:
    def make(i: int) -> dict[str, Any]:
        sent = f"the cat sees {i} dogs"
        s = sent.index("cat")
        d = sent.index("dogs")
        return {"context": repr([sent]), "inputs": repr([("cat", 0, s, s + 3), ("dogs", 0, d, d + 4)]),
                "label": i % 2}
    return split_rows(make)


def span_rows() -> list[dict[str, Any]]:
    def make(i: int) -> dict[str, Any]:
        first, second = f"a red cat {i}.", "it sleeps."
        return {"context": repr([first, second]),
                "inputs": repr([("red", 0, 2, 5, 0), ("cat", 0, 6, 9, 0), ("it", 1, 0, 2, 1)]),
                "label": i % 3}
    return split_rows(make)


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


def copy_fixture(name: str, dest: Path) -> Path:
    return Path(shutil.copytree(FLASH / name, dest / name))
