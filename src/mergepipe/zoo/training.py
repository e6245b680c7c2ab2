"""Deterministic training of the zoo models and a fast teacher-forced exact-match check.

Byte ids are computed directly (byte + offset), identical to the saved byte tokenizer, so
training needs no tokenizer calls. Loss is on the target bytes only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mergepipe.zoo.corpus import Example, Sampler
from mergepipe.zoo.tokenizer import BYTE_OFFSET, VOCAB_SIZE

PAD_ID = 0
IGNORE = -100


@dataclass(frozen=True)
class ModelShape:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    max_positions: int = 256


def make_config(shape: ModelShape) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float32",
    )


def new_model(shape: ModelShape, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(make_config(shape))
    model.generation_config.pad_token_id = PAD_ID
    return model


def encode(text: str) -> list[int]:
    return [b + BYTE_OFFSET for b in text.encode("utf-8")]


def collate(batch: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (context positions ignored)."""
    seqs = []
    for context, target in batch:
        c, t = encode(context), encode(target)
        seqs.append((c + t, [IGNORE] * len(c) + t))
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (x, y) in enumerate(seqs):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, mask, labels


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    batch: int = 64
    warmup: int = 30
    weight_decay: float = 0.0
    final_lr: float = 0.0  # share of lr left at the end of the linear decay
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9): moves only weights the data needs


def train(model: torch.nn.Module, sampler: Sampler, schedule: Schedule, seed: int,
          on_step: Callable[[], None] | None = None) -> float:
    """Train in place with AdamW and a linear-decay schedule; returns the last loss.

    ``on_step`` is called after every optimiser step (progress display; it must not touch the model).
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if schedule.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)

    def lr_at(step: int) -> float:
        if step < schedule.warmup:
            return (step + 1) / schedule.warmup
        return max(schedule.final_lr, 1.0 - (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    loss_value = float("nan")
    for _ in range(schedule.steps):
        ids, mask, labels = collate([sampler(rng) for _ in range(schedule.batch)])
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = float(out.loss.detach())
        if on_step is not None:
            on_step()
    model.eval()
    return loss_value


@torch.no_grad()
def exact_match(model: torch.nn.Module, examples: Sequence[Example], batch: int = 200) -> float:
    """Share of examples whose target (incl. the newline) is the greedy continuation.

    Teacher forcing gives the same verdict as greedy decoding for exact match: if every
    target byte is the argmax given the true prefix, greedy decoding produces exactly it.
    """
    model.eval()
    hits = 0
    for i in range(0, len(examples), batch):
        ids, mask, labels = collate(examples[i : i + batch])
        logits = model(input_ids=ids, attention_mask=mask).logits
        pred = logits[:, :-1].argmax(-1)
        gold = labels[:, 1:]
        ok = (pred == gold) | (gold == IGNORE)
        hits += int(ok.all(dim=1).sum())
    return hits / max(1, len(examples))
