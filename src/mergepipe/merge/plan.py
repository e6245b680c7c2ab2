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
from mergepipe.errors import ConfigError, ModelError, did_you_mean
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
    depends_on: list[str] = field(default_factory=list)  # earlier merges of this run it takes as inputs
    stages: list[dict[str, Any]] = field(default_factory=list)  # lineage: every earlier merge, deepest first
    sweep_point: dict[str, Any] = field(default_factory=dict)  # the swept values that made this merge

    def is_complete(self) -> bool:
        """True when a finished output with the same config hash exists."""
        record = MergeRecord.read(self.output_dir)
        return record is not None and record.config_hash == self.config_hash

    def note(self) -> str:
        """What a dry run shows beside the name: the sweep point, and the earlier merges it takes."""
        parts = []
        if self.sweep_point:
            parts.append("sweep " + " ".join(f"{k}={_format_value(v)}" for k, v in self.sweep_point.items()))
        if self.depends_on:
            parts.append(f"stage {len(self.stages) + 1}, from " + ", ".join(
                e.removeprefix("merge:") + (" (merge)" if e.startswith("merge:") else "")
                for e in self.inputs.get("experts") or []))
        return "; ".join(parts)

    def lineage_entry(self) -> dict[str, Any]:
        """This merge as one stage of a later merge's lineage (``MergeRecord.stages``)."""
        return {"name": self.name, "method": self.method.name, "parameters": self.parameters,
                "inputs": self.inputs, "config_hash": self.config_hash}


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "-".join(_format_value(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class MergeEntry:
    """One merge to make, after sweeps are expanded: an entry of ``merge.methods`` at one point."""

    spec: MethodSpec  # the point's values are in its parameters; no sweep left
    index: int  # its entry in merge.methods
    point: dict[str, Any]  # the swept values ({} without a sweep)
    name: str  # the merged model's name (the one naming rule)

    @property
    def where(self) -> str:
        """The config location errors name (a sweep point adds its values)."""
        at = ", ".join(f"{k}={_format_value(v)}" for k, v in self.point.items())
        return f"merge.methods[{self.index}]" + (f" (sweep point {at})" if at else "")


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "", name)[:96]


def merge_entries(specs: list[MethodSpec]) -> list[MergeEntry]:
    """Every merge of ``specs`` with its readable unique name; the one naming rule.

    A plain entry is named by its ``label``, else its method, with the parameters appended when
    the method appears more than once. Each point of a sweep is named ``<label or method>-`` plus
    the swept parameters and values in the order they were written (``ties-density0.3-weight0.5``).
    A name already taken gets ``-2``, ``-3``, ...
    """
    counts: dict[str, int] = {}
    for spec in specs:
        counts[spec.name] = counts.get(spec.name, 0) + 1
    entries: list[MergeEntry] = []
    names: set[str] = set()
    for index, spec in enumerate(specs):
        for point in spec.points():
            if point:
                parts = [f"{k}{_format_value(v)}" for k, v in point.items()]
                name = _sanitize("-".join([spec.label or spec.name, *parts]))
            elif spec.label:
                name = spec.label
            elif counts[spec.name] == 1 or not spec.parameters:
                name = spec.name
            else:
                parts = [f"{k}{_format_value(v)}" for k, v in sorted(spec.parameters.items())]
                name = _sanitize("-".join([spec.name, *parts]))
            base, n = name, 2
            while name in names:
                name = f"{base}-{n}"
                n += 1
            names.add(name)
            entries.append(MergeEntry(spec.at(point) if point else spec, index, point, name))
    return entries


def merge_names(specs: list[MethodSpec]) -> list[str]:
    """The names of every merge ``specs`` make (sweeps expanded), in config order."""
    return [e.name for e in merge_entries(specs)]


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


def _resolver(offline_ok: bool) -> Any:
    def one(ref: ModelRef, where: str) -> ResolvedModel:
        try:
            return resolve(ref, where)
        except ModelError:
            if offline_ok and HUB_ID_RE.match(ref.path) and not Path(ref.path).exists():
                return ResolvedModel(ref, Path(ref.path), "remote", hub_id=ref.path)
            raise

    return one


def resolve_inputs(
    config: PipelineConfig, offline_ok: bool = False
) -> tuple[ResolvedModel | None, list[ResolvedModel]]:
    """Resolve base and experts. With ``offline_ok`` (dry runs), a Hub model that cannot be
    fetched now is kept as a ``remote`` reference instead of failing."""
    one = _resolver(offline_ok)
    base = one(config.base_model, "base_model") if config.base_model else None
    experts = [one(ref, f"models[{i}]") for i, ref in enumerate(config.models)]
    return base, experts


def resolve_stage_inputs(config: PipelineConfig, offline_ok: bool = False) -> dict[str, ResolvedModel]:
    """The models named in some merge's ``inputs`` that are not merges of this run (nor ``models``)."""
    one = _resolver(offline_ok)
    known = {ref.path for ref in config.models}
    out: dict[str, ResolvedModel] = {}
    if config.merge.raw_config is not None:
        return out
    for merge in check_methods(config):
        for j, ref in enumerate(merge.entry.spec.inputs or []):
            if ref in merge.depends_on or ref in known or ref in out:
                continue
            out[ref] = one(ModelRef(path=ref), f"{merge.entry.where}.inputs[{j}]")
    return out


@dataclass(frozen=True)
class CheckedMerge:
    """One merge whose method, parameters and inputs are valid (no model touched yet)."""

    entry: MergeEntry
    method: MethodInfo
    shared: dict[str, Any]
    per_model: dict[str, list[Any]]
    depends_on: tuple[str, ...]  # the merges of this run among its inputs


def _looks_like_model(ref: str) -> bool:
    from mergepipe.core.plugins import registry

    return (registry().scheme_for(ref) is not None or Path(ref).expanduser().exists()
            or bool(HUB_ID_RE.match(ref)))


def check_methods(config: PipelineConfig) -> list[CheckedMerge]:
    """Validate every configured merge (sweeps expanded) and its parameters and inputs (cheap: no
    model is touched); returned in the order they must run (a merge after the merges it takes).

    Runs before model resolution, so a typo in a method never waits for a download or build.
    """
    if config.merge.raw_config is not None:
        return []
    if not config.merge.methods:
        raise ConfigError("merge.methods: no merge method given (e.g. methods: [linear, ties])")
    if not config.models and not all(spec.inputs for spec in config.merge.methods):
        raise ConfigError("models: the list of expert models is empty")
    entries = merge_entries(config.merge.methods)
    names = [e.name for e in entries]
    model_paths = {ref.path for ref in config.models}
    checked: list[CheckedMerge] = []
    for entry in entries:
        spec, where = entry.spec, entry.where
        method = get_method(spec.name)
        deps: list[str] = []
        for j, ref in enumerate(spec.inputs or []):
            if ref == entry.name:
                raise ConfigError(f"{where}.inputs[{j}]: {entry.name} cannot take itself as an input")
            if ref in names:
                deps.append(ref)
            elif ref not in model_paths and not _looks_like_model(ref):
                raise ConfigError(
                    f"{where}.inputs[{j}]: {ref!r} is neither a merge of this run"
                    f"{did_you_mean(ref, names, cutoff=0.5)} nor a model (no such folder, Hub id or "
                    "zoo:// reference)")
        if deps and config.merge.output == "adapter":
            raise ConfigError(f"{where}.inputs: merges of merges need merge.output 'full' (an adapter "
                              "output cannot be an input of a later merge)")
        n_inputs = len(spec.inputs) if spec.inputs else len(config.models)
        check_expert_count(method, n_inputs, config.base_model is not None, where)
        shared, per_model = resolve_parameters(method, spec.parameters, n_inputs, where)
        checked.append(CheckedMerge(entry, method, shared, per_model, tuple(deps)))
    return _in_order(checked)


def _in_order(checked: list[CheckedMerge]) -> list[CheckedMerge]:
    """Merges ordered so each comes after the merges it takes (config order otherwise kept)."""
    by_name = {c.entry.name: c for c in checked}
    done: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name):], name]
            raise ConfigError(f"{by_name[name].entry.where}.inputs: merges take each other as inputs in a "
                              f"cycle: {' -> '.join(cycle)}")
        state[name] = "visiting"
        for dep in by_name[name].depends_on:
            visit(dep, [*path, name])
        state[name] = "done"
        done.append(name)

    for c in checked:
        visit(c.entry.name, [])
    return [by_name[n] for n in done]


def plan_merges(
    config: PipelineConfig,
    resolved: tuple[ResolvedModel | None, list[ResolvedModel]] | None = None,
    stage_inputs: dict[str, ResolvedModel] | None = None,
) -> list[PlannedMerge]:
    """Validate every merge of ``config`` and describe it; raises ConfigError/ModelError.

    Merges come in the order they must run. A merge of earlier merges (``inputs``) reads their
    output folders, and its hash covers theirs, so a changed first stage re-makes the later ones.
    """
    run_models = config.outputs.merged_models / config.run
    run_configs = config.outputs.merge_config / config.run
    if config.merge.raw_config is not None:
        plan_adapter_output(config, None, {})  # adapter output is refused for raw configs
        return [_plan_raw(config, run_models, run_configs)]
    checked = check_methods(config)
    base, experts = resolved or resolve_inputs(config)
    extra = stage_inputs if stage_inputs is not None else resolve_stage_inputs(config)
    by_path = {ref.path: model for ref, model in zip(config.models, experts, strict=True)}
    adapter_output = plan_adapter_output(config, base, check_adapters(base, [*experts, *extra.values()]))
    plans: dict[str, PlannedMerge] = {}
    for merge in checked:
        entry, method = merge.entry, merge.method
        name = entry.name
        refs = entry.spec.inputs or [ref.path for ref in config.models]
        mk_experts: list[str] = []
        identities: list[str] = []
        shown: list[str] = []
        models: list[ResolvedModel] = []
        for j, ref in enumerate(refs):
            if ref in merge.depends_on:
                earlier = plans[ref]
                mk_experts.append(str(earlier.output_dir))
                identities.append(f"merge:{earlier.config_hash}")
                shown.append(f"merge:{ref}")
                continue
            model = by_path.get(ref) or extra[ref]
            models.append(model)
            mk_experts.append(_mergekit_ref(model, base, f"{entry.where}.inputs[{j}]" if entry.spec.inputs
                                            else f"models[{j}]"))
            identities.append(_input_identity(model))
            shown.append(model.ref.display())
        mk_base = _mergekit_ref(base, None, "base_model") if base else None
        mk_cfg = mergekit_config(method, mk_experts, mk_base, merge.shared, merge.per_model, config.dtype,
                                 config.merge.tokenizer_source)
        params = {**merge.shared,
                  **{k: (v if len(set(map(str, v))) > 1 else v[0]) for k, v in merge.per_model.items()}}
        payload = {
            "mergekit_config": mk_cfg,
            "inputs": ([_input_identity(base)] if base else []) + identities,
            "seed": config.seed,
            "mergekit": mergekit_version(),
        }
        if adapter_output is not None:  # only then, so full-model hashes stay as they were
            payload["output"] = adapter_output.hash_payload()
        stages: list[dict[str, Any]] = []
        for dep in merge.depends_on:
            earlier = plans[dep]
            for stage in [*earlier.stages, earlier.lineage_entry()]:
                if stage not in stages:
                    stages.append(stage)
        plans[name] = PlannedMerge(
            name=name,
            method=method,
            parameters=params,
            mergekit_config=mk_cfg,
            config_hash=_hash(payload),
            output_dir=run_models / name,
            config_file=run_configs / f"{name}.yaml",
            inputs={"base": config.base_model.display() if config.base_model else None, "experts": shown},
            unavailable=[m.ref.display() for m in ([base] if base else []) + models if m.kind == "remote"],
            adapter_output=adapter_output,
            depends_on=list(merge.depends_on),
            stages=stages,
            sweep_point=dict(entry.point),
        )
    return list(plans.values())


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
