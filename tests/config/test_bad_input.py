"""A catalogue of bad inputs: each fails before any merge, with one line naming what is wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mergepipe.cli import main


@pytest.fixture(scope="module")
def family(tiny_models, tmp_path_factory):
    """The tiny family plus a model of another architecture type (same tensors, other class)."""
    root = tmp_path_factory.mktemp("bad_input_models")
    mistral = root / "mistral_like"
    shutil.copytree(tiny_models.base, mistral)
    cfg = json.loads((mistral / "config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (mistral / "config.json").write_text(json.dumps(cfg))
    return tiny_models, mistral


def _base_config(fam, tmp: Path) -> dict:
    return {
        "run": "bad",
        "base_model": str(fam.base),
        "models": [str(fam.experts[0]), str(fam.experts[1])],
        "dtype": "float32",
        "merge": {"methods": ["linear"]},
        "outputs": {"merged_models": str(tmp / "merged"), "merge_config": str(tmp / "configs")},
    }


def _set(cfg: dict, dotted: str, value) -> dict:
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return cfg


_DELETE = object()

# (case id, edits to a valid config, text the one-line error must contain)
CASES = [
    ("unknown method", {"merge.methods": ["tiez"]}, "did you mean 'ties'"),
    ("slerp with 3 models", {"merge.methods": ["slerp"], "models": "3 experts"}, "slerp needs 2 expert"),
    ("ties without base", {"merge.methods": ["ties"], "base_model": _DELETE}, "ties needs base_model"),
    ("model_stock with one expert", {"merge.methods": ["model_stock"], "models": "1 expert"},
     "model_stock needs 2+"),
    ("negative density", {"merge.methods": [{"name": "ties", "parameters": {"density": -0.2}}]},
     "merge.methods[0].parameters.density"),
    ("density above one", {"merge.methods": [{"name": "dare_ties", "parameters": {"density": 1.5}}]},
     "parameters.density: 1.5 is outside"),
    ("weight list of wrong length",
     {"merge.methods": [{"name": "linear", "parameters": {"weight": [0.2, 0.3, 0.5]}}]},
     "list has 3 values but there are 2 experts"),
    ("weight not a number", {"merge.methods": [{"name": "linear", "parameters": {"weight": "heavy"}}]},
     "parameters.weight: expected a number"),
    ("unknown parameter", {"merge.methods": [{"name": "ties", "parameters": {"t": 0.5}}]},
     "ties has no parameter 't'"),
    ("slerp t out of range", {"merge.methods": [{"name": "slerp", "parameters": {"t": 1.5}}]},
     "parameters.t: 1.5 is outside"),
    ("della epsilon too wide",
     {"merge.methods": [{"name": "della", "parameters": {"density": 0.95, "epsilon": 0.3}}]},
     "density +- epsilon/2"),
    ("unknown solver",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"solver": "exakt"}}]},
     "parameters.solver: 'exakt' is not one of lowrank, exact (did you mean 'exact'?)"),
    ("rank below one", {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"rank": 0}}]},
     "parameters.rank: must be at least 1"),
    ("unknown weighting",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"weighting": "flat"}}]},
     "parameters.weighting: 'flat' is not one of auto, energy, signal"),
    ("background with the signal weighting",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"weighting": "signal", "background": 1.0}}]},
     "merge.methods[0].parameters.background: applies to weighting: energy only"),
    ("background with the default weighting",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"background": 1.0}}]},
     "merge.methods[0].parameters.background: applies to weighting: energy only, got 1.0 with weighting: auto "
     "(set weighting: energy)"),
    ("negative output weight",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"output_weight": -1}}]},
     "parameters.output_weight: must be at least 0"),
    ("negative signal output weight",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"signal_output_weight": -0.1}}]},
     "parameters.signal_output_weight: must be at least 0"),
    ("base-metric term with the energy weighting",
     {"merge.methods": [{"name": "bilateral_consensus",
                         "parameters": {"weighting": "energy", "base_metric_weight": 0.5}}]},
     "merge.methods[0].parameters.base_metric_weight: applies to weighting: signal or auto only, got 0.5 "
     "with weighting: energy"),
    ("negative base-metric weight",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"base_metric_weight": -2}}]},
     "parameters.base_metric_weight: must be at least 0"),
    ("negative background",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"background": -0.5}}]},
     "parameters.background: must be at least 0"),
    ("presence exponent above 1",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"presence_exponent": 2}}]},
     "merge.methods[0].parameters.presence_exponent: 2 is outside [0.0, 1.0]"),
    ("normalize not a boolean",
     {"merge.methods": [{"name": "bilateral_consensus", "parameters": {"normalize": "yes"}}]},
     "parameters.normalize: expected true or false"),
    ("passthrough with two experts", {"merge.methods": ["passthrough"]}, "passthrough needs 1 expert"),
    ("missing model path", {"models": ["/nonexistent/expert-a", "REPLACE_EXPERT"]},
     "models[0]: model path not found: /nonexistent/expert-a"),
    ("a file that is not a model", {"models": ["NOT_A_MODEL", "REPLACE_EXPERT"]},
     "is not a model directory"),
    ("model path is a file", {"models": ["A_FILE", "REPLACE_EXPERT"]}, "is a file, not a model directory"),
    ("architectures differ", {"models": ["MISTRAL", "REPLACE_EXPERT"], "merge.methods": ["ties"]},
     "architecture MistralForCausalLM differs"),
    ("tensor shapes differ", {"models": ["OTHER_ARCH", "REPLACE_EXPERT"]}, "has shape"),
    ("vocab mismatch", {"models": ["OTHER_VOCAB", "REPLACE_EXPERT"]}, "tokenizer_source"),
    ("unknown config key", {"modles": ["x"]}, "unknown key 'modles' (did you mean 'models'?)"),
    ("unknown nested key", {"merge.method": ["linear"]}, "unknown key 'merge.method' (did you mean 'merge.methods'?)"),
    ("empty models list", {"models": []}, "models: the list of expert models is empty"),
    ("no methods", {"merge.methods": []}, "merge.methods: no merge method given"),
    ("wrong dtype name", {"dtype": "float33"}, "unknown dtype 'float33' (did you mean 'float32'?)"),
    ("bad run name", {"run": "my run!"}, "run: run name 'my run!'"),
    ("bad device", {"merge.device": "tpu"}, "merge.device"),
    ("bad shard size", {"merge.shard_size": "lots"}, "shard_size 'lots' is not a size"),
    ("output dir not writable", {"outputs.merged_models": "/proc/mergepipe-out"}, "is not writable"),
    ("token in config", {"hub": {"push": True, "token": "hf_notarealtoken"}}, "Hub token must not be stored"),
    ("hub id not reachable", {"models": ["someorg/not-cached-model", "REPLACE_EXPERT"]},
     "not in the local Hub cache"),
]


def _materialise(edits: dict, fam, mistral: Path, tmp: Path) -> dict:
    cfg = _base_config(fam, tmp)
    a_file = tmp / "weights.txt"
    a_file.write_text("not a model")
    names = {
        "REPLACE_EXPERT": str(fam.experts[1]), "NOT_A_MODEL": str(fam.not_a_model), "A_FILE": str(a_file),
        "MISTRAL": str(mistral), "OTHER_ARCH": str(fam.other_arch), "OTHER_VOCAB": str(fam.other_vocab),
    }
    for key, value in edits.items():
        if value == "3 experts":
            value = [str(p) for p in fam.experts[:3]]
        elif value == "1 expert":
            value = [str(fam.experts[0])]
        elif isinstance(value, list):
            value = [names.get(v, v) if isinstance(v, str) else v for v in value]
        _set(cfg, key, value)
    return cfg


@pytest.mark.parametrize(("case", "edits", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_early_with_one_clear_line(case, edits, expected, family, tmp_path, capsys):
    fam, mistral = family
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(_materialise(edits, fam, mistral, tmp_path)))
    code = main(["merge", "--config", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert expected in err[0], err[0]
    assert not (tmp_path / "merged").exists() and not (tmp_path / "configs").exists()


def test_not_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "notes.yaml"
    bad.write_text("models: [a, b\n  : : nope")
    assert main(["merge", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x89PNG\x00\xff\xfe")
    assert main(["merge", "--config", str(binary)]) == 2
    assert str(binary) in capsys.readouterr().err
    assert main(["merge", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    top_list = tmp_path / "list.yaml"
    top_list.write_text("- a\n- b\n")
    assert main(["merge", "--config", str(top_list)]) == 2
    assert "expected a mapping" in capsys.readouterr().err


def test_shell_entry_point_exits_nonzero_with_one_line(tmp_path, repo_root):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"models": ["a"], "merge": {"methods": ["tiez"]}}))
    result = subprocess.run([str(repo_root / "merge_only.sh"), "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: merge.methods: unknown merge method 'tiez' "
                                                  "(did you mean 'ties'?); see 'mergepipe methods'"]
