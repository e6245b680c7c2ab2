"""LoRA adapters for tests: random non-zero adapters of the tiny models, and broken variants."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from tests.helpers.tiny_models import save_model


def make_adapter(base_dir: Path, path: Path, rank: int, seed: int,
                 targets: tuple[str, ...] = ("q_proj", "v_proj"), materialise: bool = True) -> Path:
    """A LoRA adapter with random non-zero B (a fresh adapter is a no-op); with ``materialise``
    its merged full model is saved too, at ``<path>-full``."""
    torch.manual_seed(seed)
    model = get_peft_model(
        LlamaForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1)
    model.save_pretrained(path)
    if materialise:
        save_model(model.merge_and_unload(), path.with_name(path.name + "-full"))
    return path


def rename_module(adapter: Path, path: Path, old: str, new: str) -> Path:
    """A copy of ``adapter`` whose module ``old`` is called ``new`` (weights and config)."""
    path.mkdir(parents=True)
    tensors = load_file(adapter / "adapter_model.safetensors")
    save_file({k.replace(old, new): v for k, v in tensors.items()}, path / "adapter_model.safetensors")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["target_modules"] = [new if t == old else t for t in cfg["target_modules"]]
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def edit_config(adapter: Path, path: Path, **changes: object) -> Path:
    """A copy of ``adapter`` with ``adapter_config.json`` keys changed."""
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


@dataclass(frozen=True)
class AdapterFamily:
    base: Path
    a: Path  # rank 4, q_proj + v_proj
    b: Path  # rank 8, q_proj + v_proj
    c: Path  # rank 4, every projection (q k v o gate up down)
    other_base: Path  # an adapter of a model with another hidden size
    renamed: Path  # targets a module the base lacks
    mistral_base: Path  # same shapes, but names a base of another architecture
    not_lora: Path  # peft_type IA3
    zero_rank: Path  # r = 0 in its config


def make_adapter_family(root: Path, base: Path, other_arch: Path) -> AdapterFamily:
    a = make_adapter(base, root / "a", rank=4, seed=1)
    mistral = root / "mistral_like"
    mistral.mkdir()
    for f in base.iterdir():
        (mistral / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((mistral / "config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (mistral / "config.json").write_text(json.dumps(cfg))
    return AdapterFamily(
        base=base,
        a=a,
        b=make_adapter(base, root / "b", rank=8, seed=2),
        c=make_adapter(base, root / "c", rank=4, seed=3,
                       targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
        other_base=make_adapter(other_arch, root / "other_base", rank=4, seed=4, materialise=False),
        renamed=rename_module(a, root / "renamed", "q_proj", "c_attn"),
        mistral_base=edit_config(a, root / "mistral_base", base_model_name_or_path=str(mistral)),
        not_lora=edit_config(a, root / "not_lora", peft_type="IA3"),
        zero_rank=edit_config(a, root / "zero_rank", r=0),
    )
