"""Turn a validated pipeline config into a list of planned merges (no heavy work).

Each planned merge has a readable unique name, the exact mergekit config, and a hash of
everything that determines its output (config, input model fingerprints, seed, mergekit
version), used to skip a merge whose finished output already matches.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergepipe.config import MethodSpec, ModelRef, PipelineConfig
from mergepipe.core.models import HUB_ID_RE, ResolvedModel, fingerprint, resolve
from mergepipe.core.records import MergeRecord
from mergepipe.errors import ConfigError, ModelError
from mergepipe.merge.adapter_output import AdapterOutputSpec, plan_adapter_output
from mergepipe.merge.adapters import check_adapters
from mergepipe.merge.catalogue import MethodInfo, check_expert_count, get_method, mergekit_config, resolve_parameters


@dataclass
class PlannedMerge:
    name: str
    method: MethodInfo
    parameters: dict[str, Any]  # as the user wrote them, defaults filled in
    mergekit_config: dict[str, Any]
    config_hash: str
    output_dir: Path
    config_file: Path
    raw: bool = False  # a user-provided mergekit config, passed through unchanged
    inputs: dict[str, Any] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)  # Hub models not fetched (dry runs)
    adapter_output: AdapterOutputSpec | None = None  # set when merge.output is "adapter"

    def is_complete(self) -> bool:
        """True when a finished output with the same config hash exists."""
        record = MergeRecord.read(self.output_dir)
        return record is not None and record.config_hash == self.config_hash


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "-".join(_format_value(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def merge_names(specs: list[MethodSpec]) -> list[str]:
    """Readable unique names: the method name, plus the parameters that tell repeats apart."""
    counts: dict[str, int] = {}
    for spec in specs:
        counts[spec.name] = counts.get(spec.name, 0) + 1
    names: list[str] = []
    for spec in specs:
        if spec.label:
            name = spec.label
        elif counts[spec.name] == 1 or not spec.parameters:
            name = spec.name
        else:
            parts = [f"{k}{_format_value(v)}" for k, v in sorted(spec.parameters.items())]
            name = re.sub(r"[^A-Za-z0-9._-]", "", "-".join([spec.name, *parts]))[:96]
        base, n = name, 2
        while name in names:
            name = f"{base}-{n}"
            n += 1
        names.append(name)
    return names


def _input_identity(model: ResolvedModel) -> str:
    if model.kind == "remote":
        return f"hub:{model.hub_id}@{model.ref.revision or 'main'}"
    if model.hub_id:
        return f"hub:{model.hub_id}@{model.ref.revision or 'main'}:{fingerprint(model.local_dir)}"
    return f"local:{fingerprint(model.local_dir)}"


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def mergekit_version() -> str:
    from importlib.metadata import version

    return version("mergekit")


def resolve_inputs(
    config: PipelineConfig, offline_ok: bool = False
) -> tuple[ResolvedModel | None, list[ResolvedModel]]:
    """Resolve base and experts. With ``offline_ok`` (dry runs), a Hub model that cannot be
    fetched now is kept as a ``remote`` reference instead of failing."""

    def one(ref: ModelRef, where: str) -> ResolvedModel:
        try:
            return resolve(ref, where)
        except ModelError:
            if offline_ok and HUB_ID_RE.match(ref.path) and not Path(ref.path).exists():
                return ResolvedModel(ref, Path(ref.path), "remote", hub_id=ref.path)
            raise

    base = one(config.base_model, "base_model") if config.base_model else None
    experts = [one(ref, f"models[{i}]") for i, ref in enumerate(config.models)]
    return base, experts


def check_methods(config: PipelineConfig) -> list[tuple[MethodInfo, dict[str, Any], dict[str, list[Any]]]]:
    """Validate every configured method and its parameters (cheap: no model is touched).

    Runs before model resolution, so a typo in a method never waits for a download or build.
    """
    if config.merge.raw_config is not None:
        return []
    if not config.merge.methods:
        raise ConfigError("merge.methods: no merge method given (e.g. methods: [linear, ties])")
    if not config.models:
        raise ConfigError("models: the list of expert models is empty")
    checked = []
    for i, spec in enumerate(config.merge.methods):
        where = f"merge.methods[{i}]"
        method = get_method(spec.name)
        check_expert_count(method, len(config.models), config.base_model is not None, where)
        checked.append((method, *resolve_parameters(method, spec.parameters, len(config.models), where)))
    return checked


def plan_merges(
    config: PipelineConfig,
    resolved: tuple[ResolvedModel | None, list[ResolvedModel]] | None = None,
) -> list[PlannedMerge]:
    """Validate every merge of ``config`` and describe it; raises ConfigError/ModelError."""
    run_models = config.outputs.merged_models / config.run
    run_configs = config.outputs.merge_config / config.run
    if config.merge.raw_config is not None:
        plan_adapter_output(config, None, {})  # adapter output is refused for raw configs
        return [_plan_raw(config, run_models, run_configs)]
    specs = config.merge.methods
    checked = check_methods(config)
    base, experts = resolved or resolve_inputs(config)
    adapter_output = plan_adapter_output(config, base, check_adapters(base, experts))
    plans = []
    for (method, shared, per_model), name in zip(checked, merge_names(specs)):
        mk_experts = [_mergekit_ref(m, base, f"models[{j}]") for j, m in enumerate(experts)]
        mk_base = _mergekit_ref(base, None, "base_model") if base else None
        mk_cfg = mergekit_config(method, mk_experts, mk_base, shared, per_model, config.dtype,
                                 config.merge.tokenizer_source)
        params = {**shared, **{k: (v if len(set(map(str, v))) > 1 else v[0]) for k, v in per_model.items()}}
        payload = {
            "mergekit_config": mk_cfg,
            "inputs": [_input_identity(m) for m in ([base] if base else []) + experts],
            "seed": config.seed,
            "mergekit": mergekit_version(),
        }
        if adapter_output is not None:  # only then, so full-model hashes stay as they were
            payload["output"] = adapter_output.hash_payload()
        plans.append(PlannedMerge(
            name=name,
            method=method,
            parameters=params,
            mergekit_config=mk_cfg,
            config_hash=_hash(payload),
            output_dir=run_models / name,
            config_file=run_configs / f"{name}.yaml",
            inputs={"base": config.base_model.display() if config.base_model else None,
                    "experts": [m.display() for m in config.models]},
            unavailable=[m.ref.display() for m in ([base] if base else []) + experts if m.kind == "remote"],
            adapter_output=adapter_output,
        ))
    return plans


def _mergekit_ref(model: ResolvedModel, base: ResolvedModel | None, where: str) -> str:
    """mergekit's name for a model; a LoRA adapter becomes ``<base dir>+<adapter dir>``."""
    if model.kind == "remote":  # dry run: not fetched; mergekit's own spelling
        return f"{model.hub_id}@{model.ref.revision}" if model.ref.revision else str(model.hub_id)
    if model.kind != "adapter":
        return model.mergekit_path
    if base is None or base.kind != "full":
        raise ConfigError(f"{where}: {model.ref.path} is a LoRA adapter; set base_model to its base model")
    return f"{base.mergekit_path}+{model.mergekit_path}"


def _plan_raw(config: PipelineConfig, run_models: Path, run_configs: Path) -> PlannedMerge:
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    raw = config.merge.raw_config or {}
    try:
        MergeConfiguration.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"mergekit config: {loc}: {err['msg']}") from None
    name = config.merge.methods[0].label or config.run
    method = get_method(str(raw["merge_method"]))
    payload = {"mergekit_config": raw, "seed": config.seed, "mergekit": mergekit_version()}
    return PlannedMerge(
        name=name,
        method=method,
        parameters=dict(raw.get("parameters") or {}),
        mergekit_config=raw,
        config_hash=_hash(payload),
        output_dir=run_models / name,
        config_file=run_configs / f"{name}.yaml",
        raw=True,
        inputs={"base": raw.get("base_model"),
                "experts": [m.get("model") for m in raw.get("models") or [] if isinstance(m, dict)]},
    )
