"""Every number that shapes the zoo models. Part of the build code, hence of the cache key."""

from __future__ import annotations

from dataclasses import dataclass, field

from mergepipe.zoo.training import ModelShape, Schedule

DEFAULT_SEED = 0
DEFAULT_EXPERTS = 4
# Skills that also get a LoRA expert (the default pair, so LoRA and full merges compare).
LORA_SKILLS = ("inc", "next")
# The two experts the demo pipeline merges: one digit skill and one letter skill.
DEFAULT_PAIR = ("inc", "next")
# Fixed so that weights are bit-identical on machines with different core counts.
BUILD_THREADS = 2


@dataclass(frozen=True)
class Recipe:
    shape: ModelShape = field(default_factory=ModelShape)
    base: Schedule = field(default_factory=lambda: Schedule(steps=1500, lr=3e-3, batch=64, warmup=50))
    # Plain SGD moves only the weights the skill needs: small, nearly orthogonal task vectors.
    expert: Schedule = field(
        default_factory=lambda: Schedule(steps=250, lr=0.1, batch=64, warmup=10, optimizer="sgd")
    )
    lora: Schedule = field(default_factory=lambda: Schedule(steps=200, lr=3e-3, batch=64, warmup=10))
    lora_rank: int = 8
    lora_alpha: int = 16
    # Share of base-corpus lines in an expert's fine-tuning data.
    replay: float = 0.5


RECIPE = Recipe()
