"""The catalogue of merge methods: what each needs, its parameters, and its mergekit config.

Constraints and parameter types come from mergekit's own method specs (so the catalogue never
drifts from the installed mergekit); this module adds what mergekit leaves to the user:
defaults for required parameters, a one-line description, and how a pipeline's experts and
base map onto the method's inputs.

How experts and base map onto a method's inputs (``Layout``):
- ``DELTA``: base + experts; the experts' differences from the base are merged (task
  arithmetic, TIES, DARE, DELLA, ...).
- ``PAIR``: exactly two experts, the first is mergekit's ``base_model`` (slerp, nearswap,
  arcee_fusion); the pipeline's base is not an input.
- ``EXPERTS``: the experts only (linear, karcher); the base is not an input.
- ``EXPERTS_OPTIONAL_BASE``: experts, with the base as reference when one is configured
  (multislerp, nuslerp).
- ``SINGLE``: exactly one model (passthrough).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, get_args, get_origin

from mergepipe.errors import ConfigError, did_you_mean


class Layout(str, enum.Enum):
    DELTA = "delta"
    PAIR = "pair"
    EXPERTS = "experts"
    EXPERTS_OPTIONAL_BASE = "experts_optional_base"
    SINGLE = "single"


# Defaults chosen for required parameters and recommended settings; "1/K" means one over the
# number of experts. Parameters not listed keep mergekit's own default.
_OVERLAY: dict[str, dict[str, Any]] = {
    "linear": {"layout": Layout.EXPERTS, "defaults": {"weight": "1/K"},
               "description": "Weighted average of the experts' weights."},
    "slerp": {"layout": Layout.PAIR, "defaults": {"t": 0.5},
              "description": "Spherical interpolation between two models (t=0: first, t=1: second)."},
    "nuslerp": {"layout": Layout.EXPERTS_OPTIONAL_BASE, "defaults": {"weight": 0.5},
                "description": "Normalized slerp of two experts, over task vectors when a base is set."},
    "multislerp": {"layout": Layout.EXPERTS_OPTIONAL_BASE, "defaults": {"weight": "1/K"},
                   "description": "Spherical barycentre of several experts (task vectors if a base is set)."},
    "karcher": {"layout": Layout.EXPERTS, "defaults": {},
                "description": "Riemannian (Karcher) mean of the experts' weights."},
    "task_arithmetic": {"layout": Layout.DELTA, "defaults": {"weight": 1.0},
                        "description": "Base plus the weighted sum of task vectors."},
    "ties": {"layout": Layout.DELTA, "defaults": {"weight": 1.0, "density": 0.5},
             "description": "Trim task vectors by magnitude, elect signs, merge agreeing values."},
    "dare_ties": {"layout": Layout.DELTA, "defaults": {"weight": 1.0, "density": 0.5},
                  "description": "Randomly drop and rescale task-vector entries, then TIES sign election."},
    "dare_linear": {"layout": Layout.DELTA, "defaults": {"weight": 1.0, "density": 0.5},
                    "description": "Randomly drop and rescale task-vector entries, then sum."},
    "breadcrumbs": {"layout": Layout.DELTA, "defaults": {"weight": 1.0, "density": 0.9, "gamma": 0.01},
                    "description": "Drop the largest and smallest task-vector entries, then sum."},
    "breadcrumbs_ties": {"layout": Layout.DELTA,
                         "defaults": {"weight": 1.0, "density": 0.9, "gamma": 0.01},
                         "description": "Breadcrumbs sparsification with TIES sign election."},
    "della": {"layout": Layout.DELTA, "defaults": {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
              "description": "Magnitude-ranked random drop (DELLA), then TIES sign election."},
    "della_linear": {"layout": Layout.DELTA,
                     "defaults": {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
                     "description": "Magnitude-ranked random drop (DELLA), then sum."},
    "model_stock": {"layout": Layout.DELTA, "defaults": {},
                    "description": "Interpolate the experts' average towards the base by their angles."},
    "sce": {"layout": Layout.DELTA, "defaults": {"select_topk": 1.0},
            "description": "Select high-variance task-vector entries, calculate weights, erase conflicts."},
    "ram": {"layout": Layout.DELTA, "defaults": {},
            "description": "Reinforced agent merging: averages only where experts overlap."},
    "ramplus_tl": {"layout": Layout.DELTA, "defaults": {},
                   "description": "RAM+ (tensor-local): rescales overlap-aware averaging."},
    "arcee_fusion": {"layout": Layout.PAIR, "defaults": {},
                     "description": "Fuse two models where their difference is most salient."},
    "nearswap": {"layout": Layout.PAIR, "defaults": {"t": 0.001},
                 "description": "Take the second model's values where they are close to the first's."},
    "passthrough": {"layout": Layout.SINGLE, "defaults": {},
                    "description": "Copy one model unchanged (optionally scaled)."},
}

# Methods whose result depends on a random generator: merged with a fixed seed.
RANDOMIZED = frozenset({"dare_ties", "dare_linear", "della", "della_linear"})


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    type_name: str
    per_model: bool  # one value per expert (weight, density, ...) rather than one shared value
    default: Any  # None when required and without default
    required: bool
    choices: tuple[str, ...] = ()  # the allowed values of a Literal[...] parameter (e.g. a solver)

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type_name, "per_model": self.per_model,
               "default": self.default, "required": self.required}
        if self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class MethodInfo:
    name: str
    pretty_name: str
    description: str
    layout: Layout
    needs_base: bool
    min_experts: int
    max_experts: int | None
    parameters: tuple[ParameterInfo, ...] = field(default_factory=tuple)
    reference_url: str | None = None
    randomized: bool = False

    def experts_text(self) -> str:
        if self.max_experts == self.min_experts:
            return str(self.min_experts)
        return f"{self.min_experts}+" if self.max_experts is None else f"{self.min_experts}-{self.max_experts}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "pretty_name": self.pretty_name, "description": self.description,
            "layout": self.layout.value, "needs_base": self.needs_base,
            "min_experts": self.min_experts, "max_experts": self.max_experts,
            "randomized": self.randomized, "reference_url": self.reference_url,
            "parameters": [p.as_dict() for p in self.parameters],
        }

    def parameter(self, name: str) -> ParameterInfo | None:
        return next((p for p in self.parameters if p.name == name), None)


def _load_custom_methods() -> None:
    # Our own methods register themselves with mergekit on import.
    import mergepipe.merge.methods  # noqa: F401


@cache
def catalogue() -> dict[str, MethodInfo]:
    """Every merge method the installed mergekit (plus our custom methods) registers."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import MISSING, BasePolicy, ParameterScope

    _load_custom_methods()
    out: dict[str, MethodInfo] = {}
    for method in registry.registered_methods():
        spec = method.spec
        contract = spec.contract
        overlay = _OVERLAY.get(spec.name) or _custom_overlay(spec.name)
        layout = overlay.get("layout") or _guess_layout(contract)
        defaults = overlay.get("defaults", {})
        params = []
        for p in spec.parameters:
            mk_default = None if p.default is MISSING else p.default
            default = defaults.get(p.name, mk_default)
            choices = tuple(get_args(p.value_type)) if get_origin(p.value_type) is Literal else ()
            params.append(ParameterInfo(
                name=p.name,
                type_name="str" if choices else
                getattr(p.value_type, "__name__", str(p.value_type)).replace("Optional", "float"),
                per_model=p.scope in (ParameterScope.INPUT, ParameterScope.NON_BASE),
                default=default,
                required=p.default is MISSING and p.name not in defaults,
                choices=choices,
            ))
        min_experts, max_experts = _expert_bounds(layout, contract)
        out[spec.name] = MethodInfo(
            name=spec.name,
            pretty_name=spec.pretty_name or spec.name,
            description=overlay.get("description", spec.pretty_name or spec.name),
            layout=layout,
            needs_base=layout is Layout.DELTA and contract.base is BasePolicy.REQUIRED,
            min_experts=min_experts,
            max_experts=max_experts,
            parameters=tuple(params),
            reference_url=spec.reference_url,
            randomized=spec.name in RANDOMIZED or bool(overlay.get("randomized")),
        )
    return dict(sorted(out.items()))


def _custom_overlay(name: str) -> dict[str, Any]:
    from mergepipe.merge import methods as custom_methods

    info = getattr(custom_methods, "CATALOGUE_INFO", {}).get(name, {})
    return {"layout": Layout(info["layout"]) if "layout" in info else None, **{
        k: v for k, v in info.items() if k != "layout"}}


def _guess_layout(contract: Any) -> Layout:
    from mergekit.merge_methods.base import BasePolicy

    if contract.base is BasePolicy.REQUIRED:
        return Layout.PAIR if contract.max_inputs == 2 else Layout.DELTA
    if contract.base is BasePolicy.OPTIONAL:
        return Layout.EXPERTS_OPTIONAL_BASE
    return Layout.SINGLE if contract.max_inputs == 1 else Layout.EXPERTS


def _expert_bounds(layout: Layout, contract: Any) -> tuple[int, int | None]:
    """How many experts (pipeline ``models``) the method accepts."""
    if layout is Layout.PAIR:
        return 2, 2
    if layout is Layout.SINGLE:
        return 1, 1
    if layout is Layout.DELTA:
        # mergekit counts the base among its inputs.
        lo = max(1, (contract.min_inputs or 1) - 1)
        hi = None if contract.max_inputs is None else contract.max_inputs - 1
        return lo, hi
    lo = max(contract.min_inputs or 1, contract.min_non_base or 1)
    hi = contract.max_non_base if contract.max_non_base is not None else contract.max_inputs
    return lo, hi


def get_method(name: str) -> MethodInfo:
    methods = catalogue()
    if name in methods:
        return methods[name]
    hint = did_you_mean(name, methods, cutoff=0.5)
    raise ConfigError(f"merge.methods: unknown merge method {name!r}{hint}; see 'mergepipe methods'")


# -- parameters ------------------------------------------------------------------------------

# Range checks for well-known parameters: (low, high, low inclusive, high inclusive).
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "density": (0.0, 1.0, False, True),
    "t": (0.0, 1.0, True, True),
    "epsilon": (0.0, 1.0, True, False),
    "gamma": (0.0, 1.0, True, False),
    "select_topk": (0.0, 1.0, False, True),
    "presence_exponent": (0.0, 1.0, True, True),
}

# Lower bounds of well-known parameters that have no upper one.
_MINIMUMS: dict[str, int] = {"max_iter": 1, "rank": 1, "output_weight": 0, "signal_output_weight": 0,
                             "base_metric_weight": 0, "background": 0}


def resolve_parameters(
    method: MethodInfo, given: dict[str, Any], n_experts: int, where: str
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Validate ``given`` against ``method``; return (shared params, per-expert value lists).

    Per-model parameters accept one value (used for every expert) or a list with one value
    per expert. Defaults fill what the user left out.
    """
    shared: dict[str, Any] = {}
    per_model: dict[str, list[Any]] = {}
    known = {p.name for p in method.parameters}
    for key in given:
        if key not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"{where}.parameters: {method.name} has no parameter {key!r}{did_you_mean(key, known)}; "
                f"it takes: {names}"
            )
    for p in method.parameters:
        value = given.get(p.name, p.default)
        if value is None:
            if p.required:
                raise ConfigError(f"{where}.parameters.{p.name}: required by {method.name}")
            continue
        if p.per_model:
            values = value if isinstance(value, list) else [value] * n_experts
            if len(values) != n_experts:
                raise ConfigError(
                    f"{where}.parameters.{p.name}: list has {len(values)} values but there are "
                    f"{n_experts} experts (one value per expert; an expert's value may itself be a "
                    "per-layer gradient list)"
                )
            per_model[p.name] = [_check_setting(method, p, v, n_experts, where) for v in values]
        else:
            # A list here is mergekit's own per-layer gradient (or filtered values): passed unchanged.
            shared[p.name] = _check_setting(method, p, value, n_experts, where)
    _check_della(method, shared, per_model, where)
    _check_bilateral(method, shared, where)
    return shared, per_model


def _check_setting(method: MethodInfo, p: ParameterInfo, value: Any, k: int, where: str) -> Any:
    """One mergekit parameter setting: a value, a per-layer gradient (a list of values, interpolated
    across layers by mergekit) or a list of ``{filter, value}`` conditions; each value checked."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return _check_value(method, p, value, k, where)
    field_name = f"{where}.parameters.{p.name}"
    if not value:
        raise ConfigError(f"{field_name}: an empty list is not a value")
    if all(isinstance(v, dict) for v in value):
        out = []
        for cond in value:
            unknown = sorted(set(cond) - {"filter", "value"})
            if unknown or "value" not in cond:
                raise ConfigError(f"{field_name}: a filtered value is {{filter: NAME, value: V}}, got {cond!r}")
            if cond.get("filter") is not None and not isinstance(cond["filter"], str):
                raise ConfigError(f"{field_name}: filter must be a tensor-name fragment, got {cond['filter']!r}")
            inner = cond["value"]
            if isinstance(inner, dict):
                raise ConfigError(f"{field_name}: a filtered value cannot hold another filter")
            checked = ([_check_value(method, p, v, k, where) for v in inner] if isinstance(inner, list)
                       else _check_value(method, p, inner, k, where))
            out.append({**cond, "value": checked})
        return out
    if p.choices:
        raise ConfigError(f"{field_name}: one of {', '.join(p.choices)}, not a list (gradients are for numbers)")
    if any(isinstance(v, (dict, list)) for v in value):
        raise ConfigError(f"{field_name}: a gradient is a flat list of values, got {value!r}")
    return [_check_value(method, p, v, k, where) for v in value]


def _check_value(method: MethodInfo, p: ParameterInfo, value: Any, k: int, where: str) -> Any:
    if value == "1/K":
        value = 1.0 / k
    field_name = f"{where}.parameters.{p.name}"
    if p.choices:
        if value not in p.choices:
            raise ConfigError(f"{field_name}: {value!r} is not one of {', '.join(p.choices)}"
                              f"{did_you_mean(str(value), p.choices)}")
        return value
    if p.type_name == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{field_name}: expected true or false, got {value!r}")
        return value
    if p.type_name in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{field_name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{field_name}: must be finite, got {value!r}")
        if p.type_name == "int" and int(value) != value:
            raise ConfigError(f"{field_name}: expected a whole number, got {value!r}")
        rng = _RANGES.get(p.name)
        if rng:
            lo, hi, lo_inc, hi_inc = rng
            ok = (value >= lo if lo_inc else value > lo) and (value <= hi if hi_inc else value < hi)
            if not ok:
                lo_b, hi_b = ("[" if lo_inc else "("), ("]" if hi_inc else ")")
                raise ConfigError(f"{field_name}: {value!r} is outside {lo_b}{lo}, {hi}{hi_b}")
        if p.name in _MINIMUMS and value < _MINIMUMS[p.name]:
            raise ConfigError(f"{field_name}: must be at least {_MINIMUMS[p.name]}, got {value!r}")
        return int(value) if p.type_name == "int" else float(value)
    return value


def _check_della(method: MethodInfo, shared: dict[str, Any], per_model: dict[str, list[Any]],
                 where: str) -> None:
    if not method.name.startswith("della"):
        return
    for density, eps in zip(per_model.get("density", []), per_model.get("epsilon", [])):
        if density - eps / 2 < 0 or density + eps / 2 > 1:
            raise ConfigError(
                f"{where}.parameters.epsilon: density +- epsilon/2 must stay within [0, 1] "
                f"(density {density}, epsilon {eps})"
            )


def _check_bilateral(method: MethodInfo, shared: dict[str, Any], where: str) -> None:
    # The background term is defined for the energy weighting only (the method raises at merge
    # time; this says so before any model is loaded) ...
    weighting = shared.get("weighting", "auto")  # resolve_parameters fills in the method's default
    if weighting != "energy" and shared.get("background", 0.0):
        raise ConfigError(f"{where}.parameters.background: applies to weighting: energy only, "
                          f"got {shared['background']!r} with weighting: {weighting} (set weighting: energy)")
    # ... and the base-metric term for the signal weighting only (a no-op elsewhere, so a typo'd
    # combination would silently merge without it).
    if weighting == "energy" and shared.get("base_metric_weight", 0.0):
        raise ConfigError(f"{where}.parameters.base_metric_weight: applies to weighting: signal or auto only, "
                          f"got {shared['base_metric_weight']!r} with weighting: energy")


def check_expert_count(method: MethodInfo, n_experts: int, has_base: bool, where: str) -> None:
    if n_experts < method.min_experts or (method.max_experts is not None and n_experts > method.max_experts):
        raise ConfigError(
            f"{where}: {method.name} needs {method.experts_text()} expert model(s), got {n_experts}"
            + (" (model_stock needs a base plus at least 2 experts)" if method.name == "model_stock" else "")
        )
    if method.needs_base and not has_base:
        raise ConfigError(f"{where}: {method.name} needs base_model (the model the experts were tuned from)")


def mergekit_config(
    method: MethodInfo,
    experts: list[str],
    base: str | None,
    shared: dict[str, Any],
    per_model: dict[str, list[Any]],
    dtype: str,
    tokenizer_source: str | None = None,
) -> dict[str, Any]:
    """The mergekit YAML (as a dict) for one merge."""
    models: list[dict[str, Any]] = []
    for i, path in enumerate(experts):
        params = {name: values[i] for name, values in per_model.items()}
        entry: dict[str, Any] = {"model": path}
        if params:
            entry["parameters"] = params
        models.append(entry)
    cfg: dict[str, Any] = {"merge_method": method.name}
    if method.layout is Layout.PAIR:
        # mergekit's two-model methods interpolate from base_model towards the other model.
        cfg["base_model"] = experts[0]
        cfg["models"] = [{"model": experts[0]}, {"model": experts[1]}]
    elif method.layout in (Layout.DELTA, Layout.EXPERTS_OPTIONAL_BASE) and base:
        cfg["base_model"] = base
        cfg["models"] = models
    else:
        cfg["models"] = models
    if shared:
        cfg["parameters"] = dict(shared)
    cfg["dtype"] = dtype
    if tokenizer_source:
        cfg["tokenizer_source"] = tokenizer_source
    return cfg
