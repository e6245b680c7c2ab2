"""The demo zoo: manifest, zoo:// references, specialisation, tasks, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from mergepipe.errors import MergepipeError, ModelError
from mergepipe.zoo import is_zoo_reference, resolve_reference
from mergepipe.zoo.corpus import Streams
from mergepipe.zoo.corpus import test_items as held_out_items
from mergepipe.zoo.skills import SKILL_NAMES, SKILLS, skill
from mergepipe.zoo.training import exact_match

SAMPLE = 60  # test items per skill in the quick specialisation checks


def _examples(name: str, n: int = SAMPLE) -> list[tuple[str, str]]:
    return [(t.prompt, t.answer + "\n") for t in held_out_items(skill(name), 0)[:n]]


def _load(path: str) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_manifest_lists_base_experts_and_lora(zoo) -> None:
    kinds = {m.name: m.kind for m in zoo.models}
    assert kinds["base"] == "base"
    assert [m.skill for m in zoo.models if m.kind == "expert"][:4] == list(SKILL_NAMES[:4])
    assert {m.name for m in zoo.models if m.kind == "lora"} >= {"inc-lora", "next-lora"}
    for m in zoo.models:
        assert Path(m.path, "tokenizer_config.json").is_file(), m.name
        assert m.build_seconds > 0
        if m.kind != "lora":
            assert Path(m.path, "model.safetensors").is_file()
    assert zoo.model("inc").tasks == ["zoo_inc", "zoo_inc_mc"]
    assert set(zoo.default_pair) <= set(zoo.experts)
    on_disk = json.loads(Path(zoo.root, "manifest.json").read_text())
    assert [m["name"] for m in on_disk["models"]] == [m.name for m in zoo.models]


def test_references_resolve_to_manifest_paths(zoo) -> None:
    assert resolve_reference("zoo://base") == Path(zoo.model("base").path)
    assert resolve_reference("zoo://sort") == Path(zoo.model("sort").path)
    lora = resolve_reference("zoo://inc-lora")
    cfg = json.loads((lora / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == zoo.model("base").path
    assert (lora / "adapter_model.safetensors").is_file()
    assert is_zoo_reference("zoo://inc") and not is_zoo_reference("/models/inc")


def test_unknown_reference_lists_available() -> None:
    with pytest.raises(ModelError) as err:
        resolve_reference("zoo://nope")
    message = str(err.value)
    assert message.startswith("unknown zoo model 'zoo://nope'; available:")
    assert "zoo://inc" in message and "zoo://base" in message and "zoo://next-lora" in message
    with pytest.raises(ModelError):
        resolve_reference("zoo://sort-lora")  # no LoRA expert for that skill


def test_base_has_no_skill(zoo) -> None:
    torch.set_num_threads(1)
    base = _load(zoo.model("base").path)
    for s in SKILL_NAMES[:4]:
        assert exact_match(base, _examples(s)) <= 0.25, f"base solves {s}"


@pytest.mark.parametrize("name", ["inc", "next", "mirror", "sort"])
def test_expert_specialises(zoo, name: str) -> None:
    torch.set_num_threads(1)
    model = _load(zoo.model(name).path)
    for s in SKILL_NAMES[:4]:
        score = exact_match(model, _examples(s))
        if s == name:
            assert score >= 0.8, f"expert {name} only {score:.2f} on its own skill"
        else:
            assert score <= 0.4, f"expert {name} scores {score:.2f} on {s}"


@pytest.mark.parametrize("name", ["inc", "next"])
def test_lora_expert_has_its_skill(zoo, name: str) -> None:
    from peft import PeftModel

    torch.set_num_threads(1)
    model = PeftModel.from_pretrained(_load(zoo.model("base").path), zoo.model(f"{name}-lora").path)
    assert exact_match(model, _examples(name)) >= 0.7
    for other in ("inc", "next"):
        if other != name:
            assert exact_match(model, _examples(other)) <= 0.4


def test_test_items_never_appear_in_training_data() -> None:
    streams = Streams(0)
    rng = random.Random(1)
    held_out = {s.name: {t.input for t in held_out_items(s, 0)} for s in SKILLS}
    prompts = {p for s in SKILLS for t in held_out_items(s, 0) for p in (t.prompt, s.alt_prompt(t.input))}
    samplers = [streams.base_mix()] + [streams.expert_mix(s, 0.5) for s in SKILLS]
    for sampler in samplers:
        for _ in range(3000):
            context, _target = sampler(rng)
            assert context not in prompts
    assert all(len(v) == 200 for v in held_out.values())


def test_task_yamls_point_at_absolute_data(zoo) -> None:
    import yaml

    include = Path(zoo.task_include_path)
    group = yaml.safe_load((include / "zoo.yaml").read_text())
    assert group["group"] == "zoo"
    assert set(group["task"]) == {t for s in SKILL_NAMES for t in (f"zoo_{s}", f"zoo_{s}_mc")}
    for name in group["task"]:
        doc = yaml.safe_load((include / f"{name}.yaml").read_text())
        data = Path(doc["dataset_kwargs"]["data_files"]["test"])
        assert data.is_absolute() and data.is_file(), name
        assert doc["output_type"] == ("multiple_choice" if name.endswith("_mc") else "generate_until")
        if doc["output_type"] == "generate_until":
            assert doc["generation_kwargs"]["until"] == ["\n"]
            assert doc["filter_list"][0]["filter"][0]["function"] == "remove_whitespace"


def test_lm_eval_scores_an_expert(zoo) -> None:
    """The generated YAMLs load in lm-eval and score the expert as the quick check does."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(1)
    manager = TaskManager(include_path=zoo.task_include_path, include_defaults=False)
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={zoo.model('next').path},dtype=float32",
        tasks=["zoo_next", "zoo_next_mc", "zoo_inc"],
        task_manager=manager,
        limit=30,
        batch_size=32,
        device="cpu",
    )
    results = out["results"]
    assert results["zoo_next"]["exact_match,strip"] >= 0.8
    assert results["zoo_next_mc"]["acc,none"] >= 0.8
    assert results["zoo_inc"]["exact_match,strip"] <= 0.4


def test_cli_list_json_and_tasks(zoo, capsys: pytest.CaptureFixture[str]) -> None:
    from mergepipe.cli import main

    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["zoo://inc"] == {
        "name": "zoo://inc",
        "path": zoo.model("inc").path,
        "kind": "expert",
        "skill": "inc",
        "tasks": ["zoo_inc", "zoo_inc_mc"],
    }
    assert by_name["zoo://next-lora"]["kind"] == "lora"
    assert main(["zoo", "tasks"]) == 0
    assert capsys.readouterr().out.strip() == zoo.task_include_path


def test_cli_rejects_bad_expert_count(capsys: pytest.CaptureFixture[str]) -> None:
    from mergepipe.cli import main

    assert main(["zoo", "build", "--experts", "99"]) == MergepipeError.exit_code
    assert "--experts must be between 1 and 8" in capsys.readouterr().err
