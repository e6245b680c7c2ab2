"""The zoo's probing sets follow the upstream Holmes dataset format exactly."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import yaml

from mergepipe.zoo import probing_data_dir
from tests.helpers.paths import SHARED_FIXTURES

HOLMES_FIXTURES = SHARED_FIXTURES / "holmes"
HEADER = "inputs,context,topic,org_label,set-0,string_label,label,id"
COMPETENCES = {"morphology", "syntax", "semantics", "reasoning", "discourse"}


def _datasets(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_every_dataset_has_upstream_files_and_schema(zoo) -> None:
    root = Path(zoo.probing_data_dir)
    assert probing_data_dir() == root
    datasets = _datasets(root)
    assert len(datasets) >= 5
    upstream_keys = None
    if HOLMES_FIXTURES.is_dir():
        sample = next((HOLMES_FIXTURES / "flash-holmes").iterdir()) / "config-none.yaml"
        upstream_keys = set(yaml.safe_load(sample.read_text()))
    for folder in datasets:
        cfg = yaml.safe_load((folder / "config-none.yaml").read_text())
        if upstream_keys is not None:
            assert set(cfg) == upstream_keys, folder.name
        assert cfg["probe_name"] == f"probe-{folder.name}"
        assert cfg["control_task_type"] == "NONE"
        text = (folder / "samples.csv").read_text()
        assert text.splitlines()[0] == HEADER
        frame = pd.read_csv(folder / "samples.csv", keep_default_na=False)
        # pandas round-trips the file byte for byte, as with the upstream files.
        assert frame.to_csv(index=False) == text
        splits = list(dict.fromkeys(frame["set-0"]))
        assert splits == ["train", "dev", "test"], folder.name
        assert list(frame["id"]) == list(range(len(frame)))
        assert set(frame["label"]) == {0, 1}
        for value in frame["inputs"].head(20):
            inputs = ast.literal_eval(value)
            assert isinstance(inputs, tuple) and len(inputs) == cfg["num_inputs"], folder.name
        if cfg["probe_task_type"] == "SENTENCE_TOKENS":
            for value, context in zip(frame["inputs"].head(20), frame["context"].head(20)):
                ((token, index, start, end),) = ast.literal_eval(value)
                assert ast.literal_eval(context)[index][start:end] == token


def test_mapping_covers_all_competences_and_probe_types(zoo) -> None:
    mapping = pd.read_csv(zoo.mapping_csv)
    assert list(mapping.columns) == [
        "probing dataset",
        "linguistic subfield",
        "linguistic phenomena",
        "probe type",
    ]
    assert set(mapping["linguistic subfield"]) == COMPETENCES
    assert {"sentence pair classification", "token(s) classification"} <= set(mapping["probe type"])
    assert set(mapping["probing dataset"]) == {p.name for p in _datasets(Path(zoo.probing_data_dir))}
    if HOLMES_FIXTURES.is_dir():
        board = pd.read_csv(HOLMES_FIXTURES / "leaderboard-holmes.csv")
        assert set(mapping["probe type"]) <= set(board["probe type"])
        assert set(mapping["linguistic subfield"]) <= set(board["linguistic subfield"])


def test_pair_dataset_ships_bi_and_cross_configs(zoo) -> None:
    folder = Path(zoo.probing_data_dir) / "zoo-negation"
    bi = yaml.safe_load((folder / "config-bi-none.yaml").read_text())
    cross = yaml.safe_load((folder / "config-cross-none.yaml").read_text())
    assert (bi["probe_task_type"], bi["num_inputs"]) == ("SENTENCE_PAIR_BI", 2)
    assert (cross["probe_task_type"], cross["num_inputs"]) == ("SENTENCE_PAIR_CROSS", 1)
