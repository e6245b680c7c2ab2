"""Tiny Llama-architecture models made on the fly for merge tests (no network, ~100 kB each)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mergepipe.zoo.tokenizer import VOCAB_SIZE, build_byte_tokenizer


def tiny_config(vocab_size: int = VOCAB_SIZE, hidden: int = 32, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def save_model(model: LlamaForCausalLM, path: Path, with_tokenizer: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    if with_tokenizer:
        build_byte_tokenizer().save_pretrained(path)
    return path


def make_random(path: Path, seed: int, **config_kwargs: int) -> Path:
    torch.manual_seed(seed)
    return save_model(LlamaForCausalLM(tiny_config(**config_kwargs)), path)


def make_expert(base_dir: Path, path: Path, seed: int, scale: float = 0.05) -> Path:
    """The base plus a seeded random task vector, like a short fine-tune."""
    model = LlamaForCausalLM.from_pretrained(base_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)
    return save_model(model, path)


@dataclass(frozen=True)
class ModelFamily:
    base: Path
    experts: tuple[Path, ...]
    other_arch: Path  # different hidden size: not mergeable with the family
    other_vocab: Path  # same architecture, larger vocabulary
    not_a_model: Path  # a directory with files, but no config.json


def make_model_family(root: Path) -> ModelFamily:
    base = make_random(root / "base", seed=0)
    experts = tuple(make_expert(base, root / f"expert{i}", seed=100 + i) for i in range(3))
    not_a_model = root / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("just text\n")
    return ModelFamily(
        base=base,
        experts=experts,
        other_arch=make_random(root / "other_arch", seed=1, hidden=48),
        other_vocab=make_random(root / "other_vocab", seed=2, vocab_size=VOCAB_SIZE + 40),
        not_a_model=not_a_model,
    )
