"""The search space: the ``search.methods`` entries checked against the catalogue, and how an
Optuna trial turns into one candidate merge (a method and its parameters).

With one method its parameters are named as written (``density``); with several, the method is
itself a categorical parameter (``method``) and each parameter is named ``<method>.<param>``
(a conditional space, which TPE samples natively). A ``per_expert`` parameter becomes one value
per expert (``weight[0]``, ``weight[1]``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mergepipe.config import MethodSpec, PipelineConfig, SearchMethod, SearchParameter
from mergepipe.errors import ConfigError
from mergepipe.merge.catalogue import check_expert_count, get_method, resolve_parameters

METHOD_PARAM = "method"


@dataclass(frozen=True)
class Space:
    methods: list[SearchMethod]
    n_experts: int

    @property
    def multi(self) -> bool:
        return len(self.methods) > 1

    def param_name(self, method: str, name: str, index: int | None = None) -> str:
        stem = f"{method}.{name}" if self.multi else name
        return stem if index is None else f"{stem}[{index}]"

    def suggest(self, trial: Any) -> tuple[str, dict[str, Any]]:
        """The candidate an Optuna trial proposes: (method, parameters for mergekit)."""
        if self.multi:
            name = trial.suggest_categorical(METHOD_PARAM, [m.name for m in self.methods])
        else:
            name = self.methods[0].name
        method = next(m for m in self.methods if m.name == name)
        params: dict[str, Any] = dict(method.parameters)
        for key, spec in method.space.items():
            if spec.per_expert:
                params[key] = [_suggest(trial, self.param_name(name, key, i), spec) for i in range(self.n_experts)]
            else:
                params[key] = _suggest(trial, self.param_name(name, key), spec)
        return name, params

    def defaults(self) -> list[MethodSpec]:
        """Each method at its default parameters (its fixed ones kept): the untuned baselines."""
        return [MethodSpec(name=m.name, parameters=dict(m.parameters), label=f"default-{m.name}")
                for m in self.methods]


def _suggest(trial: Any, name: str, spec: SearchParameter) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(name, spec.choices)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


def build_space(config: PipelineConfig) -> Space:
    """Check every searched method and parameter (bounds and choices in range) before any work."""
    section = config.search
    if not section.methods:
        raise ConfigError("search.methods: nothing to search; list methods with a parameter space "
                          "(see docs/search.md)")
    n = len(config.models)
    seen: set[str] = set()
    for i, entry in enumerate(section.methods):
        where = f"search.methods[{i}]"
        if entry.name in seen:
            raise ConfigError(f"{where}: {entry.name} is listed twice; give it one space")
        seen.add(entry.name)
        try:
            method = get_method(entry.name)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("merge.methods:", f"{where}:", 1)) from None
        check_expert_count(method, n, config.base_model is not None, where)
        for key, spec in entry.space.items():
            info = method.parameter(key)
            if info is None:
                resolve_parameters(method, {key: None}, n, where)  # the unknown-parameter message
            if spec.per_expert and not info.per_model:
                raise ConfigError(f"{where}.space.{key}: per_expert is for per-model parameters; "
                                  f"{entry.name}'s {key} is one value for the whole merge")
            if spec.choices is not None and any(isinstance(c, (list, dict)) for c in spec.choices):
                raise ConfigError(f"{where}.space.{key}: choices are single values (numbers, true/false, names)")
            values = spec.choices if spec.choices is not None else [spec.low, spec.high]
            for value in values:
                try:
                    resolve_parameters(method, {**entry.parameters, key: value}, n, where)
                except ConfigError as exc:
                    raise ConfigError(str(exc).replace(f"{where}.parameters.{key}", f"{where}.space.{key}")) from None
        resolve_parameters(method, dict(entry.parameters), n, where)
    return Space(list(section.methods), n)
