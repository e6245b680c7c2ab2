"""Checks that run before any merge: the models fit together and the outputs have room.

All of them read only configs and safetensors headers, so they take milliseconds even for
large models, and a bad input fails before minutes of merging are spent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mergepipe.config import PipelineConfig
from mergepipe.core.models import ModelHeader, ResolvedModel, inspect_model
from mergepipe.core.paths import check_writable
from mergepipe.core.tensor_names import is_vocabulary_tensor
from mergepipe.errors import ConfigError, ModelError
from mergepipe.merge.plan import PlannedMerge

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def check_compatible(
    base: ResolvedModel | None, experts: list[ResolvedModel], tokenizer_source: str | None
) -> None:
    """All full models share the reference model's architecture and tensor shapes."""
    full = [(f"base_model ({base.ref.path})", base)] if base and base.kind == "full" else []
    full += [(f"models[{i}] ({m.ref.path})", m) for i, m in enumerate(experts) if m.kind == "full"]
    if len(full) < 2:
        return
    ref_label, ref_model = full[0]
    ref = inspect_model(ref_model.local_dir)
    for label, model in full[1:]:
        info = inspect_model(model.local_dir)
        _compare(ref_label, ref, label, info, tokenizer_source)


def _compare(ref_label: str, ref: ModelHeader, label: str, info: ModelHeader, tokenizer_source: str | None) -> None:
    if ref.architectures != info.architectures or ref.model_type != info.model_type:
        raise ModelError(
            f"{label}: architecture {'/'.join(info.architectures) or info.model_type} differs from "
            f"{ref_label}'s {'/'.join(ref.architectures) or ref.model_type}; only models of one "
            "architecture can be merged"
        )
    vocab_differs = ref.vocab_size != info.vocab_size
    if vocab_differs and not tokenizer_source:
        raise ModelError(
            f"{label}: vocabulary size {info.vocab_size} differs from {ref_label}'s {ref.vocab_size}; "
            "set merge.tokenizer_source to 'base' (keep the base's tokens), 'union' (all tokens) or a "
            "model path, so mergekit aligns the embeddings"
        )
    missing = sorted(set(ref.tensor_shapes) - set(info.tensor_shapes))
    if missing:
        raise ModelError(f"{label}: lacks tensor {missing[0]} that {ref_label} has ({len(missing)} missing)")
    for name, shape in ref.tensor_shapes.items():
        other = info.tensor_shapes[name]
        if other == shape or (vocab_differs and is_vocabulary_tensor(name)):
            continue
        raise ModelError(
            f"{label}: tensor {name} has shape {list(other)} but {ref_label} has {list(shape)}; "
            "the models do not share one architecture"
        )


def estimated_output_bytes(config: PipelineConfig, base: ResolvedModel | None,
                           experts: list[ResolvedModel]) -> int:
    """Bytes one merged model takes: the reference model's weights converted to the out dtype."""
    ref = base if base and base.kind == "full" else next((m for m in experts if m.kind == "full"), None)
    if ref is None:
        return 0
    info = inspect_model(ref.local_dir)
    n_params = 0
    for shape in info.tensor_shapes.values():
        count = 1
        for dim in shape:
            count *= dim
        n_params += count
    if not n_params:  # .bin weights: no header to read; assume stored size
        return info.weight_bytes
    return n_params * _DTYPE_BYTES.get(config.dtype, 4)


def check_disk_space(plans: list[PlannedMerge], bytes_per_merge: int, out_dir: Path) -> None:
    todo = [p for p in plans if not p.is_complete()]
    need = int(len(todo) * bytes_per_merge * 1.05)
    probe = out_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ConfigError(
            f"outputs.merged_models: {len(todo)} merge(s) need about {need / 2**30:.1f} GiB but "
            f"{probe} has {free / 2**30:.1f} GiB free"
        )


def run_preflight(config: PipelineConfig, plans: list[PlannedMerge], base: ResolvedModel | None,
                  experts: list[ResolvedModel]) -> int:
    """Every check; returns the estimated bytes per merged model."""
    if not (plans and plans[0].raw):
        check_compatible(base, experts, config.merge.tokenizer_source)
    check_writable(config.outputs.merged_models, "outputs.merged_models")
    check_writable(config.outputs.merge_config, "outputs.merge_config")
    per_merge = estimated_output_bytes(config, base, experts)
    check_disk_space(plans, per_merge, config.outputs.merged_models)
    return per_merge
