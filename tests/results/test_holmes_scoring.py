"""Aggregation of Holmes results: seed means, selectivity, competences, leaderboard ranks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mergepipe.evaluate.holmes.results_file import read_results, read_results_csv
from mergepipe.results.holmes_scoring import (
    competence_scores,
    dataset_scores,
    leaderboard_scores,
    load_mapping,
    normalised_ranks,
    selectivity,
)
from tests.helpers.paths import SHARED_FIXTURES

LEADERBOARD = SHARED_FIXTURES / "holmes" / "leaderboard-holmes.csv"


def _rows(model: str, dataset: str, scores: list[float], control: str = "NONE") -> list[dict]:
    return [
        {"probing_dataset": dataset, "model_name": model, "encoding": "full", "control_task_type": control,
         "sample_size": 643, "seed": seed, "num_hidden_layers": 0, "score": s}
        for seed, s in enumerate(scores)
    ]


def _write(root: Path, model: str, rows: list[dict], version: str = "flash-holmes", index: bool = False) -> Path:
    path = root / model / f"results_{version}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=index)
    return path


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    root = tmp_path / "holmes_results"
    _write(root, "m-a", _rows("m-a", "d1", [0.8, 0.9]) + _rows("m-a", "d2", [0.5, 0.7])
           + _rows("m-a", "d1", [0.5, 0.4], "RANDOMIZATION"))
    _write(root, "m-b", _rows("m-b", "d1", [0.6, 0.6]) + _rows("m-b", "d2", [0.9, 0.9]))
    # An upstream-written file: pandas index column, model name as upstream spells it.
    _write(root, "m-c", _rows("org__c", "d1", [0.7, 0.7]) + _rows("org__c", "d2", [0.6, 0.6]), index=True)
    return root


def test_read_results_and_dataset_means(pool: Path) -> None:
    results = read_results(pool)
    assert set(results["model_id"]) == {"m-a", "m-b", "m-c"}
    assert set(results["version"]) == {"flash-holmes"}
    assert "Unnamed: 0" not in results.columns
    per = dataset_scores(results)
    row = per[(per.model_id == "m-a") & (per.probing_dataset == "d1") & (per.control_task_type == "NONE")].iloc[0]
    assert row.score == pytest.approx(0.85) and row.n_seeds == 2 and row.score_std == pytest.approx(0.0707, abs=1e-3)
    sel = selectivity(per)
    a1 = sel[(sel.model_id == "m-a") & (sel.probing_dataset == "d1")].iloc[0]
    assert a1.control_score == pytest.approx(0.45) and a1.selectivity == pytest.approx(0.40)
    assert sel[sel.model_id == "m-b"]["control_score"].isna().all()


def test_leaderboard_ranks_are_min_max_normalised(pool: Path) -> None:
    per = dataset_scores(read_results(pool))
    ranks = normalised_ranks(per).set_index(["model_id", "probing_dataset"])["norm_rank"]
    # d1: a 0.85 > c 0.7 > b 0.6 ; d2: b 0.9 > c 0.6 = a 0.6 (tie shares rank 1.5)
    assert ranks[("m-a", "d1")] == 1.0 and ranks[("m-c", "d1")] == 0.5 and ranks[("m-b", "d1")] == 0.0
    assert ranks[("m-b", "d2")] == 1.0 and ranks[("m-a", "d2")] == 0.0 and ranks[("m-c", "d2")] == 0.0
    mapping = pd.DataFrame({"probing_dataset": ["d1", "d2"], "competence": ["syntax", "semantics"],
                            "phenomenon": ["x", "y"], "probe_type": ["s", "s"]})
    board = leaderboard_scores(per, mapping).set_index(["model_id", "competence"])["holmes_score"]
    assert board[("m-a", "overall")] == pytest.approx(50.0)
    assert board[("m-b", "overall")] == pytest.approx(50.0)
    assert board[("m-c", "overall")] == pytest.approx(25.0)
    assert board[("m-a", "syntax")] == pytest.approx(100.0) and board[("m-b", "semantics")] == pytest.approx(100.0)
    # Relative to the pool: without m-b, m-a ties m-c on d2 (0.5 each) instead of being last.
    without_b = leaderboard_scores(per[per.model_id != "m-b"]).set_index(["model_id", "competence"])["holmes_score"]
    assert without_b[("m-a", "overall")] == pytest.approx(75.0)


def test_pool_of_one_and_all_ties_give_half() -> None:
    per = dataset_scores(pd.DataFrame(_rows("solo", "d1", [0.7]) + _rows("solo", "d2", [0.2])).assign(model_id="solo"))
    board = leaderboard_scores(per)
    assert board["holmes_score"].tolist() == [50.0]


@pytest.mark.skipif(not LEADERBOARD.is_file(), reason="shared Holmes fixtures not present")
def test_mapping_from_real_leaderboard_and_competence_means() -> None:
    mapping = load_mapping(LEADERBOARD)
    assert len(mapping) == 208
    assert set(mapping["competence"]) == {"morphology", "syntax", "semantics", "reasoning", "discourse"}
    assert not mapping["phenomenon"].str.endswith(" ").any()  # trailing spaces stripped
    m = mapping.set_index("probing_dataset")
    assert m.loc["blimp-determiner_noun_agreement_1", "competence"] == "morphology"
    assert m.loc["blimp-inchoative", "phenomenon"] == "argument structure"
    results = pd.DataFrame(
        _rows("x", "blimp-determiner_noun_agreement_1", [0.9, 0.7]) + _rows("x", "blimp-drop_argument", [0.6])
        + _rows("x", "blimp-inchoative", [0.8]) + _rows("x", "blimp-inchoative", [0.5], "RANDOMIZATION")
        + _rows("x", "not-in-mapping", [0.1])
    ).assign(model_id="x")
    comp = competence_scores(dataset_scores(results), mapping).set_index("competence")
    assert comp.loc["morphology", "score"] == pytest.approx(0.8)
    assert comp.loc["syntax", "score"] == pytest.approx(0.7) and comp.loc["syntax", "n_datasets"] == 2
    assert comp.loc["syntax", "control_score"] == pytest.approx(0.5)
    assert "not-in-mapping" not in comp.index


def test_bad_results_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "m" / "results_v.csv"
    bad.parent.mkdir()
    bad.write_text("probing_dataset,score\nd1,0.5\n")
    with pytest.raises(Exception, match=r"results_v\.csv: not a Holmes results CSV, missing column"):
        read_results_csv(bad)


def test_mapping_resolution(tmp_path: Path) -> None:
    from mergepipe.errors import MergepipeError
    from mergepipe.results.holmes_scoring import resolve_mapping_csv

    data = tmp_path / "probes"
    data.mkdir()
    assert resolve_mapping_csv(None, data) is None
    (data / "mapping.csv").write_text("probing dataset,linguistic subfield\nd1,syntax\n")
    assert resolve_mapping_csv(None, data) == data / "mapping.csv"
    assert load_mapping(data / "mapping.csv")["competence"].tolist() == ["syntax"]
    with pytest.raises(MergepipeError, match=r"holmes\.mapping_csv: file not found"):
        resolve_mapping_csv(tmp_path / "nope.csv", data)


def test_several_control_types_follow_one_rule_everywhere(tmp_path: Path) -> None:
    """Per model and dataset one control type, the same for every seed, in every table."""
    from mergepipe.results.holmes_scoring import chosen_controls
    from mergepipe.results.tables import organize

    root = tmp_path / "holmes_results"
    rows = (_rows("m", "d1", [0.8, 0.9]) + _rows("m", "d1", [0.5, 0.3], "RANDOMIZATION")
            + _rows("m", "d1", [0.7, 0.7], "PERMUTATION")  # ignored: RANDOMIZATION comes first
            + _rows("m", "d2", [0.6, 0.6]) + _rows("m", "d2", [0.2, 0.4], "RANDOM_WEIGHTS")
            + _rows("m", "d2", [0.1, 0.1], "PERMUTATION"))  # chosen: no RANDOMIZATION here
    _write(root, "m", rows)
    chosen = chosen_controls(read_results(root)).set_index("probing_dataset")["control_task_type"]
    assert chosen.to_dict() == {"d1": "RANDOMIZATION", "d2": "PERMUTATION"}

    sel = selectivity(dataset_scores(read_results(root))).set_index("probing_dataset")
    assert sel.loc["d1", "control_score"] == pytest.approx(0.4) and sel.loc["d1", "selectivity"] == pytest.approx(0.45)
    assert sel.loc["d2", "control_score"] == pytest.approx(0.1) and sel.loc["d2", "selectivity"] == pytest.approx(0.5)

    mapping = tmp_path / "mapping.csv"
    mapping.write_text("probing dataset,linguistic subfield\nd1,syntax\nd2,syntax\n")
    tables = organize(tmp_path / "none", root, tmp_path / "out", mapping_csv=mapping).tables
    per_seed = tables.holmes.set_index(["probing_dataset", "seed"])
    assert per_seed.loc[("d1", 1), "control_task_type"] == "RANDOMIZATION"
    assert per_seed.loc[("d1", 1), "control_score"] == pytest.approx(0.3)
    assert per_seed.loc[("d2", 0), "control_task_type"] == "PERMUTATION"
    assert per_seed.loc[("d2", 0), "selectivity"] == pytest.approx(0.5)
    comp = tables.competences.set_index("competence")
    # The per-competence table and the per-seed table agree: the same control scores.
    assert comp.loc["syntax", "mean_control_score"] == pytest.approx(0.25)
    assert comp.loc["syntax", "mean_control_score"] == pytest.approx(tables.holmes["control_score"].mean())
    assert comp.loc["syntax", "mean_selectivity"] == pytest.approx(0.475)
