"""Sweeps (one merge per grid point), per-layer gradients passed to mergekit, and merges of merges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mergepipe.cli import main
from mergepipe.config import load_config
from mergepipe.core.records import MergeRecord
from mergepipe.errors import ConfigError
from mergepipe.merge.plan import merge_names
from mergepipe.merge.run import prepare, run_merges
from mergepipe.publish.card import build_model_card
from tests.merge.test_merge import weights, write_config

TIES_GRID = {"name": "ties", "sweep": {"density": [0.3, 0.5, 0.7], "weight": {"start": 0.5, "stop": 1.0, "step": 0.5}}}
GRID_NAMES = [f"ties-density{d}-weight{w}" for d in ("0.3", "0.5", "0.7") for w in ("0.5", "1")]


def test_ties_grid_expands_to_six_named_merges_and_each_runs(tmp_path, tiny_models, capsys):
    path = write_config(tmp_path, tiny_models, ["linear", TIES_GRID])
    assert main(["merge", "--config", str(path), "--dry-run"]) == 0
    shown = capsys.readouterr().out
    for name in GRID_NAMES:
        assert name in shown
    assert "sweep density=0.3 weight=0.5" in shown  # the dry run shows each point's values
    config = load_config(path)
    plans, _ = prepare(config)
    assert [p.name for p in plans] == ["linear", *GRID_NAMES]
    assert len({p.config_hash for p in plans}) == 7
    outcomes = run_merges(config, plans, report=lambda _m: None)
    assert [o.status for o in outcomes] == ["merged"] * 7
    record = MergeRecord.read(config.outputs.merged_models / "t" / "ties-density0.7-weight0.5")
    assert record.parameters["density"] == 0.7 and record.parameters["weight"] == 0.5
    first = weights(plans[1].output_dir)["model.layers.0.mlp.up_proj.weight"]
    other = weights(plans[3].output_dir)["model.layers.0.mlp.up_proj.weight"]
    assert not torch.equal(first, other)  # the points really differ (ties normalises the weights)


def test_a_sweep_point_out_of_range_is_refused_naming_the_point(tmp_path, tiny_models):
    path = write_config(tmp_path, tiny_models, [{"name": "ties", "sweep": {"density": [0.5, 1.5]}}])
    with pytest.raises(ConfigError, match=r"merge.methods\[0\] \(sweep point density=1.5\)\.parameters\.density: "
                                          r"1.5 is outside \(0.0, 1.0\]"):
        prepare(load_config(path))


@pytest.mark.parametrize("sweep, message", [
    ({"density": []}, "sweep of 'density' lists no values"),
    ({"density": {"start": 0.7, "stop": 0.3, "step": 0.1}}, "stop 0.3 is below start 0.7"),
    ({"density": {"start": 0.1, "stop": 0.3, "step": 0}}, "greater than 0"),
])
def test_malformed_sweeps_are_one_line_errors(tmp_path, tiny_models, sweep, message):
    path = write_config(tmp_path, tiny_models, [{"name": "ties", "sweep": sweep}])
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_parameter_both_fixed_and_swept_is_refused(tmp_path, tiny_models):
    path = write_config(tmp_path, tiny_models, [{"name": "ties", "parameters": {"density": 0.5},
                                                 "sweep": {"density": [0.3]}}])
    with pytest.raises(ConfigError, match="'density' is both in parameters and in sweep"):
        load_config(path)


def test_sweep_names_use_the_label_and_a_range_has_clean_values(tmp_path, tiny_models):
    config = load_config(write_config(tmp_path, tiny_models, [
        {"name": "slerp", "label": "s", "sweep": {"t": {"start": 0.1, "stop": 0.3, "step": 0.1}}}]))
    assert merge_names(config.merge.methods) == ["s-t0.1", "s-t0.2", "s-t0.3"]


def test_a_shared_list_is_a_per_layer_gradient_passed_to_mergekit_unchanged(tmp_path, tiny_models):
    path = write_config(tmp_path, tiny_models, [{"name": "slerp", "parameters": {"t": [0.0, 1.0]}}])
    config = load_config(path)
    (plan,) = prepare(config)[0]
    assert plan.mergekit_config["parameters"] == {"t": [0.0, 1.0]}
    written = yaml.safe_load(Path(plan.config_file).read_text()) if plan.config_file.exists() else None
    assert written is None
    (outcome,) = run_merges(config, [plan], report=lambda _m: None)
    assert outcome.status == "merged"
    assert yaml.safe_load(plan.config_file.read_text())["parameters"] == {"t": [0.0, 1.0]}
    merged, first, second = (weights(p) for p in (plan.output_dir, *tiny_models.experts[:2]))
    # t interpolates across the layers: 0 at the first layer (the first model), 1 at the last.
    name0, name1 = "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"
    assert torch.allclose(merged[name0], first[name0], atol=1e-6)
    assert torch.allclose(merged[name1], second[name1], atol=1e-6)


def test_filtered_values_and_per_expert_gradients_are_checked_and_kept(tmp_path, tiny_models):
    cond = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"value": 0.5}]
    path = write_config(tmp_path, tiny_models, [
        {"name": "slerp", "parameters": {"t": cond}},
        {"name": "task_arithmetic", "parameters": {"weight": [[1.0, 0.5], 0.7]}}])
    plans, _ = prepare(load_config(path))
    assert plans[0].mergekit_config["parameters"] == {"t": cond}
    assert [m["parameters"]["weight"] for m in plans[1].mergekit_config["models"]] == [[1.0, 0.5], 0.7]
    bad = write_config(tmp_path, tiny_models, [{"name": "slerp", "parameters": {"t": [0.0, 1.5]}}])
    with pytest.raises(ConfigError, match=r"parameters\.t: 1.5 is outside \[0.0, 1.0\]"):
        prepare(load_config(bad))


# -- merges of merges ----------------------------------------------------------------------------

def two_stage(tmp_path, family, order=("first", "final")) -> Path:
    first = {"name": "slerp", "label": "first",
             "inputs": [str(family.experts[0]), str(family.experts[1])]}
    final = {"name": "ties", "label": "final", "inputs": ["first", str(family.experts[2])]}
    methods = [first, final] if order == ("first", "final") else [final, first]
    return write_config(tmp_path, family, methods, experts=family.experts[:3])


def test_two_stage_merge_plans_in_order_runs_resumes_and_lists_its_lineage(tmp_path, tiny_models, capsys):
    path = two_stage(tmp_path, tiny_models, order=("final", "first"))  # written out of order
    assert main(["merge", "--config", str(path), "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert shown.index("first") < shown.index("final") and "stage 2, from first (merge)" in shown
    config = load_config(path)
    plans, _ = prepare(config)
    assert [p.name for p in plans] == ["first", "final"]
    assert plans[1].mergekit_config["models"][0]["model"] == str(plans[0].output_dir)
    outcomes = run_merges(config, plans, report=lambda _m: None)
    assert [o.status for o in outcomes] == ["merged", "merged"]
    record = MergeRecord.read(plans[1].output_dir)
    assert [s["name"] for s in record.stages] == ["first"]
    assert record.inputs["experts"][0] == "merge:first"
    card = build_model_card(record, "merge_method: ties\n")
    assert "## Lineage" in card and "1. `first`: `slerp`" in card and "2. `final` (this model): `ties`" in card
    assert str(tiny_models.experts[0]) in card  # the first stage's inputs are named too

    # resume: both up to date; a changed first stage re-makes both (the second's hash covers it)
    again = run_merges(config, prepare(config)[0], report=lambda _m: None)
    assert [o.status for o in again] == ["skipped", "skipped"]
    data = yaml.safe_load(path.read_text())
    data["merge"]["methods"][1]["parameters"] = {"t": 0.3}
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    changed = prepare(config)[0]
    assert changed[1].config_hash != plans[1].config_hash
    assert [o.status for o in run_merges(config, changed, report=lambda _m: None)] == ["merged", "merged"]


def test_stage_killed_after_the_first_merge_resumes_with_the_second(tmp_path, tiny_models):
    config = load_config(two_stage(tmp_path, tiny_models))
    plans, _ = prepare(config)
    run_merges(config, plans[:1], report=lambda _m: None)  # as if killed during the second merge
    assert [o.status for o in run_merges(config, prepare(config)[0], report=lambda _m: None)] == \
        ["skipped", "merged"]


def test_a_failed_stage_fails_the_merges_made_from_it(tmp_path, tiny_models):
    config = load_config(two_stage(tmp_path, tiny_models))
    plans, _ = prepare(config)
    plans[0].mergekit_config = {**plans[0].mergekit_config, "merge_method": "no_such_method"}
    outcomes = run_merges(config, plans, report=lambda _m: None)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert outcomes[1].error == "input merge first failed"


def test_cycles_and_unknown_inputs_are_one_line_errors(tmp_path, tiny_models):
    experts = [str(p) for p in tiny_models.experts[:2]]
    cyc = write_config(tmp_path, tiny_models, [
        {"name": "linear", "label": "a", "inputs": ["b", experts[0]]},
        {"name": "linear", "label": "b", "inputs": ["a", experts[1]]}])
    with pytest.raises(ConfigError, match=r"merge.methods\[\d\]\.inputs: merges take each other as inputs in a "
                                          r"cycle: (a -> b -> a|b -> a -> b)"):
        prepare(load_config(cyc))
    typo = write_config(tmp_path, tiny_models, [
        {"name": "linear", "label": "first"},
        {"name": "linear", "label": "second", "inputs": ["frist", experts[0]]}])
    with pytest.raises(ConfigError, match=r"merge.methods\[1\]\.inputs\[0\]: 'frist' is neither a merge of this "
                                          r"run \(did you mean 'first'\?\) nor a model"):
        prepare(load_config(typo))
    assert main(["merge", "--config", str(typo), "--dry-run"]) == 2


def test_single_stage_hashes_are_unchanged_by_the_stage_support(tmp_path, tiny_models):
    # The payload of a one-stage merge is what it always was: an existing output stays up to date.
    config = load_config(write_config(tmp_path, tiny_models, ["linear"]))
    (plan,) = prepare(config)[0]
    from mergepipe.merge.plan import _hash, _input_identity, mergekit_version, resolve_inputs

    base, experts = resolve_inputs(config)
    expected = _hash({"mergekit_config": plan.mergekit_config,
                      "inputs": [_input_identity(m) for m in [base, *experts]],
                      "seed": config.seed, "mergekit": mergekit_version()})
    assert plan.config_hash == expected
    assert json.dumps(plan.stages) == "[]"
