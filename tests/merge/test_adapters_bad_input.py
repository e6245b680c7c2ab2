"""Bad adapter inputs and adapter-output settings: one clear ``error:`` line, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mergepipe.cli import main
from tests.helpers.adapters import AdapterFamily, make_adapter_family


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory) -> tuple[AdapterFamily, object]:
    fam = make_adapter_family(tmp_path_factory.mktemp("bad_adapters"), tiny_models.base, tiny_models.other_arch)
    return fam, tiny_models


def _config(fam: AdapterFamily, tiny, tmp: Path, experts: list[str], base: str | None, merge: dict) -> dict:
    names = {"A": fam.a, "B": fam.b, "OTHER_BASE": fam.other_base, "RENAMED": fam.renamed,
             "MISTRAL_BASE": fam.mistral_base, "NOT_LORA": fam.not_lora, "ZERO_RANK": fam.zero_rank,
             "FULL0": tiny.experts[0], "FULL1": tiny.experts[1], "BASE": fam.base}
    cfg = {
        "run": "bad",
        "models": [str(names[e]) for e in experts],
        "dtype": "float32",
        "merge": {"methods": ["linear"], **merge},
        "outputs": {"merged_models": str(tmp / "merged"), "merge_config": str(tmp / "configs")},
    }
    if base:
        cfg["base_model"] = str(names[base])
    return cfg


# (case id, experts, base, merge section additions, text the one-line error must contain)
CASES = [
    ("adapter for another base (shapes)", ["OTHER_BASE", "A"], "BASE", {},
     "models[0] (" + "{OTHER_BASE}" + "): model.layers.0.self_attn.q_proj has shape [32, 32] in base_model"),
    ("adapter naming a base of another architecture", ["MISTRAL_BASE", "B"], "BASE", {},
     "(MistralForCausalLM) but base_model"),
    ("adapter targets a module the base lacks", ["A", "RENAMED"], "BASE", {},
     "models[1] (" + "{RENAMED}" + "): target module 'c_attn' of the adapter is not in base_model"),
    ("adapter without base_model", ["A", "B"], None, {}, "is a LoRA adapter; set base_model"),
    ("not a LoRA adapter", ["NOT_LORA", "A"], "BASE", {}, "a IA3 adapter; only LoRA adapters"),
    ("adapter with rank 0 in its config", ["ZERO_RANK", "A"], "BASE", {}, "has rank r=0; a LoRA rank must be"),
    ("output rank zero", ["A", "B"], "BASE", {"output": "adapter", "adapter_rank": 0},
     "merge.adapter_rank: adapter_rank must be a positive integer, got 0"),
    ("output rank negative", ["A", "B"], "BASE", {"output": "adapter", "adapter_rank": -4},
     "merge.adapter_rank: adapter_rank must be a positive integer, got -4"),
    ("output rank not a number", ["A", "B"], "BASE", {"output": "adapter", "adapter_rank": "high"},
     "merge.adapter_rank"),
    ("unknown output mode", ["A", "B"], "BASE", {"output": "lora"}, "merge.output"),
    ("output target module missing from the base", ["A", "B"], "BASE",
     {"output": "adapter", "adapter_target_modules": ["q_proj", "c_attn"]},
     "merge.adapter_target_modules[1]: 'c_attn' matches no linear weight of base_model"),
    ("rank given in full-model mode", ["A", "B"], "BASE", {"adapter_rank": 8},
     "merge: adapter_rank is set but output is 'full'"),
    ("adapter output without a base", ["FULL0", "FULL1"], None, {"output": "adapter", "adapter_rank": 4},
     "merge.output: adapter output needs base_model"),
    ("adapter output of full experts without a rank", ["FULL0", "FULL1"], "BASE", {"output": "adapter"},
     "merge.adapter_rank: no expert is an adapter to take the rank from"),
]


@pytest.mark.parametrize(("case", "experts", "base", "merge", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_adapter_input_fails_early_with_one_clear_line(case, experts, base, merge, expected, adapters,
                                                          tmp_path, capsys):
    fam, tiny = adapters
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(_config(fam, tiny, tmp_path, experts, base, merge)))
    code = main(["merge", "--config", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    expected = expected.replace("{OTHER_BASE}", str(fam.other_base)).replace("{RENAMED}", str(fam.renamed))
    assert expected in err[0], err[0]
    assert not (tmp_path / "merged").exists() and not (tmp_path / "configs").exists()

