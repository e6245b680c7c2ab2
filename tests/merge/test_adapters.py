"""LoRA adapters as experts and as merge output: exact equivalence with materialised models,
SVD re-factoring at any rank, loading with PEFT, evaluation through lm-eval's ``peft=``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from mergepipe.config import load_config
from mergepipe.errors import ModelError
from mergepipe.merge.run import prepare, run_merges
from tests.helpers.adapters import make_adapter
from tests.helpers.tiny_models import save_model

PROMPT = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]])


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def write_config(tmp: Path, base: Path | str, experts: list, methods: list, **merge) -> Path:
    data = {
        "run": "t",
        "base_model": str(base),
        "models": [str(p) for p in experts],
        "dtype": "float32",
        "merge": {"methods": methods, **merge},
        "outputs": {"merged_models": str(tmp / "merged"), "merge_config": str(tmp / "configs")},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def merge(path: Path):
    config = load_config(path)
    plans, _ = prepare(config)
    outcomes = run_merges(config, plans, report=lambda _msg: None)
    assert all(o.status in ("merged", "skipped") for o in outcomes), [(o.name, o.error) for o in outcomes]
    return plans, outcomes


def full(adapter: Path) -> Path:
    return adapter.with_name(adapter.name + "-full")


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(PROMPT).logits


# -- adapters as experts -----------------------------------------------------------------------

METHODS = [
    {"name": "linear", "parameters": {"weight": [0.3, 0.7]}},
    "task_arithmetic",
    {"name": "ties", "parameters": {"density": 0.5}},
    {"name": "slerp", "parameters": {"t": 0.4}},
]


def test_adapter_experts_merge_exactly_like_their_materialised_models(adapters, tmp_path):
    """Different ranks (4 and 8), every kind of method: merging the adapters gives the very same
    weights as merging the full models PEFT makes of them."""
    (tmp_path / "ad").mkdir()
    (tmp_path / "mat").mkdir()
    _, via_adapters = merge(write_config(tmp_path / "ad", adapters.base, [adapters.a, adapters.b], METHODS))
    _, via_full = merge(write_config(tmp_path / "mat", adapters.base, [full(adapters.a), full(adapters.b)],
                                     METHODS))
    for x, y in zip(via_adapters, via_full):
        assert max_weight_diff(x.output_dir, y.output_dir) <= 1e-5, x.name
    # ...and the merge really moved away from the base (the adapters are not no-ops).
    assert max_weight_diff(via_adapters[0].output_dir, adapters.base) > 1e-2
    record = json.loads((via_adapters[0].output_dir / "mergepipe_merge.json").read_text())
    assert record["inputs"]["experts"] == [str(adapters.a), str(adapters.b)]
    assert "+" in record["mergekit_config"]["models"][0]["model"]


def test_retrained_adapter_in_place_is_not_served_from_a_stale_cache(adapters, tiny_models, tmp_path):
    """mergekit caches base+adapter materialisations by path; ours are keyed by content."""
    moving = make_adapter(tiny_models.base, tmp_path / "moving", rank=4, seed=11)
    cfg_dir = tmp_path / "run"
    cfg_dir.mkdir()
    path = write_config(cfg_dir, adapters.base, [moving, adapters.a], ["linear"])
    _, (first,) = merge(path)
    before = weights(first.output_dir)
    shutil.rmtree(moving)
    shutil.rmtree(full(moving))
    make_adapter(tiny_models.base, moving, rank=4, seed=12)  # retrained, same folder
    _, (second,) = merge(path)
    assert second.status == "merged"  # the input fingerprint changed the config hash
    after = weights(second.output_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    (cfg_dir / "mat").mkdir()
    _, (ref,) = merge(write_config(cfg_dir / "mat", adapters.base, [full(moving), full(adapters.a)], ["linear"]))
    assert max_weight_diff(second.output_dir, ref.output_dir) <= 1e-5


# -- adapter output --------------------------------------------------------------------------------

def test_adapter_output_at_full_rank_reproduces_the_full_merge(adapters, tmp_path):
    methods = [{"name": "linear", "parameters": {"weight": [0.3, 0.7]}},
               {"name": "ties", "parameters": {"density": 0.5}}]
    (tmp_path / "full").mkdir()
    (tmp_path / "adapter").mkdir()
    _, fulls = merge(write_config(tmp_path / "full", adapters.base, [adapters.a, adapters.c], methods))
    _, outs = merge(write_config(tmp_path / "adapter", adapters.base, [adapters.a, adapters.c], methods,
                                 output="adapter", adapter_rank=64))
    base = AutoModelForCausalLM.from_pretrained(adapters.base)
    for f, o in zip(fulls, outs):
        names = {p.name for p in o.output_dir.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "adapter_rank_errors.json",
                "mergepipe_merge.json", "tokenizer.json"} <= names
        assert not names & {"config.json", "model.safetensors", "_full_model"}, names
        cfg = json.loads((o.output_dir / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["base_model_name_or_path"] == str(adapters.base.resolve())
        # c targets every projection, a only q and v: the output targets the union.
        assert sorted(cfg["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])
        record = json.loads((o.output_dir / "mergepipe_merge.json").read_text())
        assert record["output"] == "adapter" and record["adapter"]["rank"] == 64
        assert record["adapter"]["max_relative_error"] < 1e-5
        errors = json.loads((o.output_dir / "adapter_rank_errors.json").read_text())
        assert len(errors["per_module"]) == 2 * 7
        peft_model = PeftModel.from_pretrained(base, o.output_dir)
        merged = AutoModelForCausalLM.from_pretrained(f.output_dir)
        diff = (logits(peft_model) - logits(merged)).abs().max().item()
        assert diff <= 1e-3, (f.name, diff)
        base = peft_model.unload()  # the same base object, adapter removed, for the next merge


def test_adapter_output_rank_truncation_error_is_reported_and_grows_as_rank_shrinks(adapters, tmp_path):
    errs = {}
    for rank in (2, 6, 12):
        d = tmp_path / f"r{rank}"
        d.mkdir()
        _, (out,) = merge(write_config(d, adapters.base, [adapters.a, adapters.b],
                                       [{"name": "linear", "parameters": {"weight": [0.5, 0.5]}}],
                                       output="adapter", adapter_rank=rank))
        errors = json.loads((out.output_dir / "adapter_rank_errors.json").read_text())
        assert set(errors["per_module"]) == {f"model.layers.{i}.self_attn.{m}" for i in (0, 1)
                                             for m in ("q_proj", "v_proj")}
        tensors = load_file(out.output_dir / "adapter_model.safetensors")
        a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
        assert a.shape == (rank, 32)
        errs[rank] = errors["max_relative_error"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(adapters.base), out.output_dir)
        assert torch.isfinite(logits(model)).all()
    # rank 4 + rank 8 experts: a linear merge has rank <= 12, so rank 12 is exact.
    assert errs[2] > errs[6] > 0.01 and errs[12] < 1e-5, errs


def test_default_rank_is_the_sum_of_expert_ranks_and_rank_is_part_of_the_hash(adapters, tmp_path):
    path = write_config(tmp_path, adapters.base, [adapters.a, adapters.b], ["linear"], output="adapter")
    (plan,) = prepare(load_config(path))[0]
    assert plan.adapter_output is not None and plan.adapter_output.rank == 4 + 8
    other = write_config(tmp_path, adapters.base, [adapters.a, adapters.b], ["linear"], output="adapter",
                         adapter_rank=4)
    (plan4,) = prepare(load_config(other))[0]
    full_mode = write_config(tmp_path, adapters.base, [adapters.a, adapters.b], ["linear"])
    (plan_full,) = prepare(load_config(full_mode))[0]
    assert len({plan.config_hash, plan4.config_hash, plan_full.config_hash}) == 3


def test_full_experts_to_adapter_output_keeps_non_linear_changes_whole(tiny_models, tmp_path):
    """Full experts change every tensor: linear layers become LoRA factors, while embeddings and
    norms (changed too) are stored whole as modules_to_save, so the adapter is still exact."""
    _, (f,) = merge(write_config(tmp_path, tiny_models.base, tiny_models.experts[:2], ["task_arithmetic"]))
    (tmp_path / "ad").mkdir()
    _, (o,) = merge(write_config(tmp_path / "ad", tiny_models.base, tiny_models.experts[:2], ["task_arithmetic"],
                                 output="adapter", adapter_rank=64))
    cfg = json.loads((o.output_dir / "adapter_config.json").read_text())
    assert "model.embed_tokens" in cfg["modules_to_save"] and "lm_head" in cfg["modules_to_save"]
    assert "q_proj" in cfg["target_modules"] and "lm_head" not in cfg["target_modules"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_models.base), o.output_dir)
    merged = AutoModelForCausalLM.from_pretrained(f.output_dir)
    assert (logits(model) - logits(merged)).abs().max().item() <= 1e-3


def test_explicit_target_modules_limit_the_adapter(adapters, tmp_path):
    _, (o,) = merge(write_config(tmp_path, adapters.base, [adapters.a, adapters.c], ["linear"],
                                 output="adapter", adapter_rank=4, adapter_target_modules=["q_proj"]))
    cfg = json.loads((o.output_dir / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["q_proj"] and cfg["r"] == 4
    # the other modules changed but are not low-rank targets: kept whole, never silently dropped
    assert "model.layers.0.self_attn.v_proj" in cfg["modules_to_save"]


# -- evaluation -------------------------------------------------------------------------------------

def _mc_task(root: Path) -> Path:
    root.mkdir()
    docs = [{"q": f"{a}+{b}=", "choices": [str(a + b), str(a + b + 1), str(a * 3)], "label": 0}
            for a in range(3) for b in range(2)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "adapter_mc.yaml").write_text(
        f"task: adapter_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n")
    return root


def _loglikelihoods(results_file: Path) -> list[float]:
    (samples,) = results_file.parent.glob("samples_adapter_mc_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return [float(resp[0][0]) for row in sorted(rows, key=lambda r: r["doc_id"]) for resp in row["resps"]]


@pytest.mark.slow
def test_adapter_output_is_evaluated_by_lm_eval_like_the_full_merge(adapters, tmp_path):
    from mergepipe.evaluate.harness.run import HarnessSettings, run_harness

    tasks = _mc_task(tmp_path / "tasks")
    (tmp_path / "full").mkdir()
    (tmp_path / "adapter").mkdir()
    _, (f,) = merge(write_config(tmp_path / "full", adapters.base, [adapters.a, adapters.b], ["linear"]))
    _, (o,) = merge(write_config(tmp_path / "adapter", adapters.base, [adapters.a, adapters.b], ["linear"],
                                 output="adapter", adapter_rank=32))
    settings = HarnessSettings(limit=6)
    outs = [run_harness(str(d), ["adapter_mc"], results_dir=tmp_path / "results", settings=settings,
                        include_paths=[tasks], device="cpu", role="merged", run="t")
            for d in (f.output_dir, o.output_dir)]
    record = json.loads(outs[1].results_file.read_text())
    assert record["config"]["model_args"]["peft"] == str(o.output_dir)
    assert record["config"]["model_args"]["pretrained"] == str(adapters.base.resolve())
    assert record["mergepipe"]["model_kind"] == "adapter"
    full_ll, adapter_ll = (_loglikelihoods(out.results_file) for out in outs)
    assert len(full_ll) == 18 and max(abs(x - y) for x, y in zip(full_ll, adapter_ll)) <= 1e-3
    assert outs[0].scores["adapter_mc"]["acc,none"] == outs[1].scores["adapter_mc"]["acc,none"]


# -- the zoo's LoRA experts --------------------------------------------------------------------------

@pytest.mark.slow
def test_zoo_lora_experts_linear_merge_and_full_rank_adapter_output(zoo, tmp_path):
    """With the zoo's LoRA experts: adapters merged in full-model mode equal the merge of their
    materialised models, and the full-rank adapter output reproduces the merge's logits."""
    from mergepipe.zoo import lora_skills
    from mergepipe.zoo.corpus import test_items
    from mergepipe.zoo.skills import skill

    skills = list(lora_skills())[:2]
    base = Path(zoo.model("base").path)
    refs = [zoo.model(f"{s}-lora").path for s in skills]  # the folders zoo://<skill>-lora resolve to
    mats = []
    for s in skills:
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                               zoo.model(f"{s}-lora").path)
        mats.append(save_model(peft_model.merge_and_unload(), tmp_path / f"{s}-materialised"))
    method = [{"name": "linear", "parameters": {"weight": 0.5}}]
    runs = {}
    for label, experts, extra in (("adapters", refs, {}), ("materialised", mats, {}),
                                  ("adapter_out", refs, {"output": "adapter", "adapter_rank": 4096})):
        (tmp_path / label).mkdir()
        _, (outcome,) = merge(write_config(tmp_path / label, base, experts, method, **extra))
        runs[label] = outcome.output_dir
    assert max_weight_diff(runs["adapters"], runs["materialised"]) <= 1e-5
    assert max_weight_diff(runs["adapters"], base) > 1e-3  # the experts really moved the weights

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(runs["adapters"])
    full_model = AutoModelForCausalLM.from_pretrained(runs["adapters"]).eval()
    adapter_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), runs["adapter_out"]).eval()
    worst = 0.0
    with torch.no_grad():
        for s in skills:
            for item in test_items(skill(s), 0)[:8]:
                ids = tok(item.prompt, return_tensors="pt").input_ids
                worst = max(worst, (adapter_model(ids).logits - full_model(ids).logits).abs().max().item())
    assert worst <= 1e-3, worst


def _to_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Put ``folder`` into a Hub cache the way huggingface_hub lays out a downloaded snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_adapter_given_by_hub_id_is_resolved_checked_and_merged(adapters, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub_cache"
    _to_hub_cache(cache, "someorg/lora-a", adapters.a)
    _to_hub_cache(cache, "someorg/lora-for-other-base", adapters.other_base)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    (tmp_path / "hub").mkdir()
    (tmp_path / "local").mkdir()
    _, (via_hub,) = merge(write_config(tmp_path / "hub", adapters.base, ["someorg/lora-a", adapters.b], ["linear"]))
    _, (local,) = merge(write_config(tmp_path / "local", adapters.base, [adapters.a, adapters.b], ["linear"]))
    assert max_weight_diff(via_hub.output_dir, local.output_dir) <= 1e-6
    (tmp_path / "bad").mkdir()
    bad = write_config(tmp_path / "bad", adapters.base, ["someorg/lora-for-other-base", adapters.b], ["linear"])
    with pytest.raises(ModelError, match=r"models\[0\] \(someorg/lora-for-other-base\): .* another base model"):
        prepare(load_config(bad))
