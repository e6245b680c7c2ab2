"""The pipeline config (``pipeline.yaml``) as one typed tree of pydantic models.

Every section is typed (``merge``, ``outputs``, ``evaluate``, ``holmes``, ``hub``, ``predict``); unknown keys
are errors (a typo must not be silently ignored). Loading, overrides and the one-line error
format live in :mod:`mergepipe.config.load`.

**The one rule for relative paths**: every path in the config (output folders, task include
paths, Holmes data, mapping and checkout) that is relative resolves against one root, the
directory the command runs in, as mergekit's and lm-eval's command lines do; command-line flags
that name paths follow the same rule. The only other root is the project folder, used when no
``--config`` is given and the project's own demo ``pipeline.yaml`` is run from elsewhere.
:meth:`PipelineConfig.resolve_paths` applies the rule to every ``Path`` field of every section.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mergepipe.config.cluster import ClusterSection
from mergepipe.config.evaluate import EvaluateSection
from mergepipe.config.holmes import HolmesSection
from mergepipe.config.hub import HubSection
from mergepipe.config.predict import PredictSection
from mergepipe.config.search import SearchSection
from mergepipe.errors import did_you_mean

DEFAULT_CONFIG = "pipeline.yaml"

DTYPES = ("float32", "float16", "bfloat16")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelRef(_Strict):
    """A model: a local directory, a Hub id (``org/name``) or a demo reference (``zoo://name``)."""

    path: str = Field(description="local directory, Hub id, or zoo:// reference")
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit); ignored for local paths"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        if isinstance(value, dict) and "model" in value and "path" not in value:
            # mergekit spells it "model"; accept that too.
            value = dict(value)
            value["path"] = value.pop("model")
        return value

    @field_validator("path")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model path is empty")
        return value.strip()

    def display(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision else self.path


class SweepRange(_Strict):
    """``{start, stop, step}``: the values start, start + step, ... up to stop (inclusive)."""

    start: float = Field(description="first value")
    stop: float = Field(description="last value (included when it lies on the step grid)")
    step: float = Field(gt=0, description="distance between values (positive)")

    @model_validator(mode="after")
    def _ordered(self) -> SweepRange:
        if self.stop < self.start:
            raise ValueError(f"stop {self.stop:g} is below start {self.start:g}")
        if (self.stop - self.start) / self.step > MAX_SWEEP_POINTS:
            raise ValueError(f"more than {MAX_SWEEP_POINTS} values from start {self.start:g} to stop "
                             f"{self.stop:g} by step {self.step:g}")
        return self

    def values(self) -> list[float]:
        count = math.floor((self.stop - self.start) / self.step + 1e-9) + 1
        # Rounded, so 0.1 + 2 * 0.1 is 0.3 (a readable name, and the same hash on every machine).
        return [round(self.start + i * self.step, 10) for i in range(count)]


MAX_SWEEP_POINTS = 1000


class MethodSpec(_Strict):
    """One merge to make: a catalogue method and its parameters (a sweep: one merge per point)."""

    name: str = Field(description="merge method name (see 'mergepipe methods')")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "method parameters, passed to mergekit; per-model ones (weight, density, ...) take one value "
            "for every expert or a list with one value per expert; a shared one (slerp's t, ...) given "
            "as a list is mergekit's per-layer gradient (see docs/configuration.md)"
        ),
    )
    sweep: dict[str, list[Any] | SweepRange] | None = Field(
        default=None,
        description=(
            "parameters to sweep: a list of values or {start, stop, step}; the grid over every swept "
            "parameter becomes one merge per point, named <label or method>-<param><value>..."
        ),
    )
    inputs: list[str] | None = Field(
        default=None,
        description=(
            "the models this merge takes instead of `models`: earlier merges of the same run (by "
            "name) and/or model references; makes a multi-stage merge"
        ),
    )
    label: str | None = Field(
        default=None, description="name of the merged model (default: derived from method + parameters)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value

    @field_validator("label")
    @classmethod
    def _label_ok(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.match(value):
            raise ValueError(f"label {value!r} must be letters, digits, '.', '_' or '-'")
        return value

    @field_validator("sweep", mode="before")
    @classmethod
    def _sweep_values(cls, value: Any) -> Any:
        # One clear message per swept parameter, instead of one per member of the union.
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, values in value.items():
            if isinstance(values, dict):
                try:
                    values = SweepRange.model_validate(values)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join(str(p) for p in err["loc"])
                    msg = str(err["msg"]).removeprefix("Value error, ")
                    raise ValueError(f"sweep of {key!r}: {where + ': ' if where else ''}{msg}") from None
            elif not isinstance(values, (list, SweepRange)):
                raise ValueError(f"sweep of {key!r} must be a list of values or {{start, stop, step}}, "
                                 f"got {values!r}")
            out[key] = values
        return out

    @field_validator("sweep")
    @classmethod
    def _sweep_ok(cls, value: dict[str, list[Any] | SweepRange] | None) -> dict[str, list[Any] | SweepRange] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("sweep is empty; name at least one parameter with its values")
        for key, values in value.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"sweep of {key!r} lists no values")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs_ok(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("inputs is empty; name the merges or models this merge takes")
            if any(not v.strip() for v in value):
                raise ValueError("every input must be a non-empty merge name or model reference")
        return value

    @model_validator(mode="after")
    def _swept_once(self) -> MethodSpec:
        both = sorted(set(self.sweep or {}) & set(self.parameters))
        if both:
            raise ValueError(f"{both[0]!r} is both in parameters and in sweep; keep it in one of them")
        return self

    def points(self) -> list[dict[str, Any]]:
        """The swept values of each merge this entry makes (``[{}]`` without a sweep), in grid order."""
        if not self.sweep:
            return [{}]
        keys = list(self.sweep)
        axes = [v.values() if isinstance(v, SweepRange) else list(v) for v in self.sweep.values()]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]

    def at(self, point: dict[str, Any]) -> MethodSpec:
        """This entry's merge at one sweep point: the point's values added to the parameters."""
        return self.model_copy(update={"parameters": {**self.parameters, **point}, "sweep": None})


class MergeSection(_Strict):
    methods: list[MethodSpec] = Field(
        default_factory=list, description="merges to make; the same method may appear several times"
    )
    tokenizer_source: str | None = Field(
        default=None,
        description="mergekit tokenizer_source: 'base', 'union' or a model path (fixes vocab mismatches)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where merge math runs; auto = cuda when a GPU is visible"
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="local = merges one after another in this process; ray = one cluster task per merge "
        "(a GPU each when the cluster has them; settings under 'cluster:')",
    )
    lazy_unpickle: bool = Field(default=True, description="load tensors lazily to save memory")
    low_cpu_memory: bool = Field(default=False, description="keep results on the GPU (needs VRAM)")
    shard_size: str = Field(default="5B", description="output shard size, e.g. 2B, 500M")
    raw_config: dict[str, Any] | None = Field(
        default=None,
        description="a raw mergekit config, passed through unchanged (set when a mergekit YAML is given)",
    )
    output: Literal["full", "adapter"] = Field(
        default="full",
        description=(
            "full = a merged model; adapter = a PEFT LoRA adapter of base_model, the merged update "
            "factored by truncated SVD per target module (see docs/adapters.md)"
        ),
    )
    adapter_rank: int | None = Field(
        default=None,
        description=(
            "rank of the adapter output (default: the sum of the adapter experts' ranks, "
            "exact for linear and task arithmetic)"
        ),
    )
    adapter_target_modules: list[str] | None = Field(
        default=None,
        description=(
            "modules the adapter output updates, PEFT-style names such as q_proj (default: the "
            "adapter experts' modules, else every linear layer but lm_head)"
        ),
    )

    @field_validator("adapter_rank")
    @classmethod
    def _rank_ok(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"adapter_rank must be a positive integer, got {value}")
        return value

    @model_validator(mode="after")
    def _adapter_settings_need_adapter_output(self) -> MergeSection:
        if self.output != "adapter":
            for name in ("adapter_rank", "adapter_target_modules"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is set but output is 'full'; set output: adapter to use it")
        return self

    @field_validator("shard_size")
    @classmethod
    def _shard(cls, value: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?[KMB]?", value.strip().upper()):
            raise ValueError(f"shard_size {value!r} is not a size like 5B, 500M or 100K")
        return value.strip().upper()


class OutputsSection(_Strict):
    """Output locations; relative paths are relative to the directory the command runs in."""

    merged_models: Path = Field(default=Path("merged_models"), description="merged models")
    merge_config: Path = Field(default=Path("merge_config"), description="exact mergekit configs")
    harness_results: Path = Field(default=Path("harness_results"), description="lm-eval results")
    holmes_results: Path = Field(default=Path("holmes_results"), description="probing results")
    organized_results: Path = Field(default=Path("organized_results"), description="tables and plots")
    logs: Path = Field(default=Path("logs"), description="one log file per job")
    search: Path = Field(
        default=Path("search_results"), description="search studies: <name>/study.db, trials and results"
    )
    predictions: Path = Field(default=Path("output"),
                              description="answers to predict.queries: <dir>/<run>/<model>/<queries file name>")


class PipelineConfig(_Strict):
    """Top level of ``pipeline.yaml``."""

    run: str = Field(default="default", description="run name; outputs go under <output dir>/<run>/")
    base_model: ModelRef | None = Field(default=None, description="the model the experts were tuned from")
    models: list[ModelRef] = Field(default_factory=list, description="the expert models to merge")
    merge: MergeSection = Field(default_factory=MergeSection, description="how to merge (section `merge`)")
    dtype: str = Field(default="bfloat16", description="dtype of merged weights: " + ", ".join(DTYPES))
    seed: int = Field(default=42, description="seed for randomized methods (dare, della) and evaluation")
    outputs: OutputsSection = Field(default_factory=OutputsSection, description="where outputs go (section `outputs`)")
    evaluate: EvaluateSection = Field(
        default_factory=EvaluateSection, description="evaluation stage (section `evaluate`)"
    )
    holmes: HolmesSection = Field(default_factory=HolmesSection, description="Holmes probing (section `holmes`)")
    hub: HubSection = Field(default_factory=HubSection, description="Hub publishing (section `hub`)")
    cluster: ClusterSection = Field(
        default_factory=ClusterSection, description="Ray cluster, when an executor is ray (section `cluster`)"
    )
    search: SearchSection = Field(
        default_factory=SearchSection, description="parameter search (section `search`, for 'mergepipe search')"
    )
    predict: PredictSection = Field(
        default_factory=PredictSection, description="answers to a queries CSV (section `predict`)"
    )

    @field_validator("run")
    @classmethod
    def _run_ok(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"run name {value!r} must be letters, digits, '.', '_' or '-'")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype_ok(cls, value: str) -> str:
        aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
        value = aliases.get(value, value)
        if value not in DTYPES:
            raise ValueError(f"unknown dtype {value!r}{did_you_mean(value, DTYPES)}; "
                             f"choose one of {', '.join(DTYPES)}")
        return value

    # -- derived ---------------------------------------------------------------------------
    def resolve_paths(self, root: Path) -> PipelineConfig:
        """Every relative path of every section made absolute against ``root`` (the one rule)."""
        return _resolved(self, root)

    @property
    def search_name(self) -> str:
        """The search study's name: ``search.name``, else ``<run>-search``."""
        return self.search.name or f"{self.run}-search"

    def stable_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]




def _resolved(model: BaseModel, root: Path) -> Any:
    """A copy of ``model`` with each ``Path`` (also inside lists and sub-models) absolute."""
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolve_value(value, root)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _resolve_value(value: Any, root: Path) -> Any:
    if isinstance(value, Path):
        value = value.expanduser()
        return (value if value.is_absolute() else root / value).resolve()
    if isinstance(value, BaseModel):
        return _resolved(value, root)
    if isinstance(value, list) and any(isinstance(v, (Path, BaseModel)) for v in value):
        return [_resolve_value(v, root) for v in value]
    return value
