"""Build the zoo's models into a cache folder: base, experts and LoRA experts.

Each part is written to a temporary folder and renamed into place when complete, so a part
that exists is finished; a later build with more experts only trains the missing ones. Every
part depends only on the seed and the code, never on the order in which parts were built.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from mergepipe.core import atomic
from mergepipe.zoo import corpus, training
from mergepipe.zoo.recipe import BUILD_THREADS, LORA_SKILLS, RECIPE
from mergepipe.zoo.skills import Skill
from mergepipe.zoo.tokenizer import build_byte_tokenizer

log = logging.getLogger(__name__)

BUILD_INFO = "zoo_build.json"


def part_seed(seed: int, part: str) -> int:
    """A per-part training seed, stable across Python runs (no ``hash()`` randomisation)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{part}".encode()).digest()[:4], "little")


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """Fixed thread count and deterministic kernels for the duration of a build step."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(BUILD_THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_part(final: Path, build: Callable[[Path], dict | None], stamp: dict | None = None) -> None:
    """Build one part into a temporary folder, record its cost, rename it into place."""
    start = time.perf_counter()
    with atomic.atomic_dir(final) as tmp:
        extra = {**(build(tmp) or {}), **(stamp or {})}
        info = {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mib": round(peak_rss_mib(), 1)}
        atomic.write_json(tmp / BUILD_INFO, {**info, **extra})
    log.info("zoo: built %s in %.1fs", final.name, info["seconds"])


def save_model(model: torch.nn.Module, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    build_byte_tokenizer().save_pretrained(out)


def load_base(base_dir: Path) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)


Step = Callable[[], None] | None  # called after every training step (progress)


def train_base(shape: training.ModelShape, schedule: training.Schedule, seed: int,
               on_step: Step = None) -> tuple[torch.nn.Module, float]:
    """Pre-train a base of ``shape`` on the zoo's generic corpus (the model and its last loss);
    the zoo's own base is ``train_base(RECIPE.shape, RECIPE.base, seed)``."""
    with deterministic_torch():
        model = training.new_model(shape, part_seed(seed, "base-init"))
        loss = training.train(model, corpus.Streams(seed).base_mix(), schedule, part_seed(seed, "base"), on_step)
    return model, loss


def build_base(out: Path, seed: int, on_step: Step = None) -> None:
    def make(tmp: Path) -> dict:
        model, loss = train_base(RECIPE.shape, RECIPE.base, seed, on_step)
        save_model(model, tmp)
        return {"final_loss": round(loss, 4)}

    timed_part(out, make)


def build_expert(out: Path, base_dir: Path, s: Skill, seed: int, on_step: Step = None) -> None:
    def make(tmp: Path) -> dict:
        with deterministic_torch():
            model = load_base(base_dir)
            sampler = corpus.Streams(seed).expert_mix(s, RECIPE.replay)
            loss = training.train(model, sampler, RECIPE.expert, part_seed(seed, f"expert:{s.name}"), on_step)
        save_model(model, tmp)
        return {"final_loss": round(loss, 4)}

    timed_part(out, make)


def build_lora(out: Path, base_dir: Path, s: Skill, seed: int, on_step: Step = None) -> None:
    from peft import LoraConfig, get_peft_model

    def make(tmp: Path) -> dict:
        with deterministic_torch():
            torch.manual_seed(part_seed(seed, f"lora-init:{s.name}"))
            cfg = LoraConfig(
                r=RECIPE.lora_rank,
                lora_alpha=RECIPE.lora_alpha,
                lora_dropout=0.0,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(load_base(base_dir), cfg)
            sampler = corpus.Streams(seed).expert_mix(s, RECIPE.replay)
            loss = training.train(model, sampler, RECIPE.lora, part_seed(seed, f"lora:{s.name}"), on_step)
        # Adapters name their base by absolute path, so they load from anywhere.
        model.peft_config["default"].base_model_name_or_path = str(base_dir.resolve())
        model.save_pretrained(tmp, safe_serialization=True)
        build_byte_tokenizer().save_pretrained(tmp)
        return {"final_loss": round(loss, 4)}

    timed_part(out, make)


def wants_lora(s: Skill) -> bool:
    return s.name in LORA_SKILLS
