"""Adapter output mode (``merge.output: adapter``): save a merge as a PEFT LoRA adapter of the base.

The merge itself runs exactly as in full-model mode (so every method works). Then, per target
module, the merged weight's difference to the base is factored by truncated SVD at the chosen
rank: ``delta ~= B @ A`` with ``B = U_r sqrt(S_r)`` and ``A = sqrt(S_r) Vh_r`` and
``lora_alpha = r`` (scaling 1). At full rank the factorisation is exact up to float rounding;
below it, the relative Frobenius error ``|delta - B A| / |delta|`` of every module is written
to ``adapter_rank_errors.json`` and summarised in the merge record.

Tensors outside the target modules that the merge changed (an adapter's ``modules_to_save``,
or norms changed by a method) cannot be low-rank updates: they are stored whole as PEFT
``modules_to_save``, so the adapter still reproduces the merge.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergepipe.config import PipelineConfig
from mergepipe.core.models import ResolvedModel, inspect_model
from mergepipe.core.tensor_names import is_input_embedding, is_output_head
from mergepipe.errors import ConfigError
from mergepipe.merge.adapters import AdapterInfo, base_modules, matches_target

ERRORS_FILE = "adapter_rank_errors.json"
FULL_MODEL_SUBDIR = "_full_model"  # inside the temporary output dir; never in a finished one
# The merged model's own weight files and configs; everything else (tokenizer, model card,
# mergekit_config.yml) moves over to the adapter folder.
_FULL_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
# A non-target tensor counts as changed by the merge when it differs from the base by more than
# rounding to the merge dtype would explain.
_CHANGED_RTOL = 1e-4


@dataclass(frozen=True)
class AdapterOutputSpec:
    """What to factor, at which rank, against which base (decided at planning time)."""

    rank: int
    modules: tuple[str, ...]  # base module names (``model.layers.0.self_attn.q_proj``)
    target_modules: tuple[str, ...]  # as written to adapter_config.json
    base_dir: Path
    base_name: str  # base_model_name_or_path of the adapter: the Hub id or the local folder

    def hash_payload(self) -> dict[str, Any]:
        return {"mode": "adapter", "rank": self.rank, "modules": list(self.modules)}


def plan_adapter_output(
    config: PipelineConfig,
    base: ResolvedModel | None,
    adapters: dict[int, AdapterInfo],
) -> AdapterOutputSpec | None:
    """Validate the adapter output settings against the base; None in full-model mode."""
    section = config.merge
    if section.output != "adapter":
        return None
    if section.raw_config is not None:
        raise ConfigError("merge.output: adapter output needs a pipeline config (base_model, models), "
                          "not a raw mergekit config")
    # Default: the sum of the experts' ranks, the rank of any linear combination of their
    # updates, so linear and task-arithmetic merges of adapters come out exact.
    rank = section.adapter_rank or sum(info.max_rank for info in adapters.values())
    if base is not None and base.kind == "remote":  # dry run, base not fetched: plan unchecked
        return AdapterOutputSpec(rank, (), tuple(section.adapter_target_modules or ()), base.local_dir,
                                 str(base.hub_id))
    if base is None or base.kind != "full":
        raise ConfigError("merge.output: adapter output needs base_model set to a full model "
                          "(the adapter is the merge's difference to it)")
    weights = {n: s for n, s in base_modules(inspect_model(base.local_dir)).items() if len(s) == 2}
    if not weights:
        raise ConfigError(f"base_model: {base.ref.path} has no safetensors weights to factor an adapter against")
    linear = {n: s for n, s in weights.items() if not is_input_embedding(n)}
    if section.adapter_target_modules:
        modules: list[str] = []
        for i, target in enumerate(section.adapter_target_modules):
            found = [n for n in linear if matches_target(n, (target,))]
            if not found:
                raise ConfigError(f"merge.adapter_target_modules[{i}]: {target!r} matches no linear weight "
                                  f"of base_model {base.ref.path} (missing target module)")
            modules += [n for n in found if n not in modules]
    elif adapters:
        modules = sorted({n for info in adapters.values() for n, m in info.modules.items() if not m.embedding})
    else:
        modules = sorted(n for n in linear if not is_output_head(n))
    if rank <= 0:
        raise ConfigError("merge.adapter_rank: no expert is an adapter to take the rank from; "
                          "set a positive rank")
    return AdapterOutputSpec(
        rank=rank,
        modules=tuple(modules),
        target_modules=_short_targets(modules, linear),
        base_dir=base.local_dir,
        base_name=base.hub_id or str(base.local_dir),
    )


def _short_targets(modules: list[str], candidates: dict[str, Any]) -> tuple[str, ...]:
    """Suffixes (``q_proj``) when they pick exactly ``modules``, else the full module names."""
    suffixes = sorted({m.rsplit(".", 1)[-1] for m in modules})
    if {n for n in candidates if matches_target(n, tuple(suffixes))} == set(modules):
        return tuple(suffixes)
    return tuple(modules)


class _Tensors:
    """Read single tensors from a model folder (safetensors shards, or a .bin loaded once)."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self._files: dict[str, Any] = {}
        self._loaded: dict[str, Any] = {}
        for path in sorted(folder.glob("*.safetensors")):
            handle = safe_open(str(path), framework="pt")
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                self._files[key] = handle
        if not self._files:
            import torch

            for path in sorted(folder.glob("*.bin")):
                self._loaded.update(torch.load(path, map_location="cpu", weights_only=True))

    def names(self) -> list[str]:
        return sorted([*self._files, *self._loaded])

    def get(self, name: str) -> Any:
        if name in self._files:
            return self._files[name].get_tensor(name)
        return self._loaded[name]


def _factor(delta: Any, rank: int) -> tuple[Any, Any, float, int]:
    """Truncated SVD: (B, A, relative Frobenius error, rank used)."""
    import torch

    norm = torch.linalg.matrix_norm(delta).item()
    r = min(rank, *delta.shape)
    if norm == 0.0:  # the merge left this module unchanged: a zero update
        return delta.new_zeros(delta.shape[0], r), delta.new_zeros(r, delta.shape[1]), 0.0, r
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    root = s[:r].sqrt()
    b, a = u[:, :r] * root, root[:, None] * vh[:r]
    err = torch.linalg.matrix_norm(delta - b @ a).item() / norm
    return b, a, err, r


def convert_to_adapter(full_dir: Path, out_dir: Path, spec: AdapterOutputSpec, dtype: str,
                       device: str = "cpu") -> dict[str, Any]:
    """Factor the merged model in ``full_dir`` into a PEFT adapter in ``out_dir``; returns a summary.

    ``full_dir`` is removed afterwards; its tokenizer and model card move into ``out_dir``.
    """
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    out_dtype = getattr(torch, dtype)
    merged, base = _Tensors(full_dir), _Tensors(spec.base_dir)
    tensors: dict[str, torch.Tensor] = {}
    per_module: dict[str, dict[str, Any]] = {}
    ranks: dict[str, int] = {}
    for name in spec.modules:
        key = f"{name}.weight"
        delta = merged.get(key).to(device, torch.float32) - base.get(key).to(device, torch.float32)
        b, a, err, r = _factor(delta, spec.rank)
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.to("cpu", out_dtype).contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.to("cpu", out_dtype).contiguous()
        ranks[name] = r
        per_module[name] = {"rank": r, "shape": list(delta.shape), "relative_error": err,
                            "delta_norm": torch.linalg.matrix_norm(delta).item()}
    targets = {f"{m}.weight" for m in spec.modules}
    saved: dict[str, float] = {}
    have = set(merged.names())
    for key in base.names():
        if key in targets or key not in have:
            continue
        new = merged.get(key)
        old = base.get(key).to(new.dtype)
        diff = torch.linalg.vector_norm((new - old).float()).item()
        scale = torch.linalg.vector_norm(old.float()).item() or 1.0
        if diff / scale > _CHANGED_RTOL:
            tensors[f"base_model.model.{key}"] = new.to(out_dtype).contiguous()
            saved[key.rsplit(".", 1)[0]] = diff / scale
    del merged, base  # close the weight files before the full model is deleted
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    rank_pattern = {m: r for m, r in ranks.items() if r != spec.rank}
    LoraConfig(
        r=spec.rank,
        lora_alpha=spec.rank,
        rank_pattern=rank_pattern,
        alpha_pattern=dict(rank_pattern),  # alpha = r everywhere: scaling 1
        target_modules=list(spec.target_modules),
        modules_to_save=sorted(saved) or None,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=spec.base_name,
        inference_mode=True,
    ).save_pretrained(str(out_dir))
    errors = [m["relative_error"] for m in per_module.values()]
    summary = {
        "rank": spec.rank,
        "target_modules": list(spec.target_modules),
        "modules": len(per_module),
        "max_relative_error": max(errors, default=0.0),
        "mean_relative_error": sum(errors) / len(errors) if errors else 0.0,
        "worst_module": max(per_module, key=lambda m: per_module[m]["relative_error"], default=None),
        "modules_to_save": sorted(saved),
        "errors_file": ERRORS_FILE,
        "base_model": spec.base_name,
    }
    (out_dir / ERRORS_FILE).write_text(
        json.dumps({**summary, "per_module": per_module, "modules_to_save_change": saved}, indent=2,
                   sort_keys=True) + "\n", encoding="utf-8")
    _move_extras(full_dir, out_dir)
    shutil.rmtree(full_dir)
    return summary


def _move_extras(full_dir: Path, out_dir: Path) -> None:
    for path in full_dir.iterdir():
        if path.name in _FULL_MODEL_FILES or path.suffix in (".safetensors", ".bin"):
            continue
        if not (out_dir / path.name).exists():
            shutil.move(str(path), str(out_dir / path.name))
