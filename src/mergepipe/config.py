"""The pipeline config (``pipeline.yaml``): pydantic models, loading, overrides and hashing.

Everything is validated before any heavy work starts. Unknown keys are errors (a typo must not
be silently ignored), and every error is reported as one line naming the offending field.

A raw mergekit YAML (a file with a top-level ``merge_method``) is also accepted: it is wrapped
into a pipeline with one merge whose config is passed to mergekit unchanged.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mergepipe.errors import ConfigError

DEFAULT_CONFIG = "pipeline.yaml"

DTYPES = ("float32", "float16", "bfloat16")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


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


class MethodSpec(_Strict):
    """One merge to make: a catalogue method and its parameters."""

    name: str = Field(description="merge method name (see 'mergepipe methods')")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "method parameters; per-model ones (weight, density, ...) take one value for every "
            "expert or a list with one value per expert"
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
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(f"label {value!r} must be letters, digits, '.', '_' or '-'")
        return value


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


class PipelineConfig(_Strict):
    """Top level of ``pipeline.yaml``."""

    run: str = Field(default="default", description="run name; outputs go under <output dir>/<run>/")
    base_model: ModelRef | None = Field(default=None, description="the model the experts were tuned from")
    models: list[ModelRef] = Field(default_factory=list, description="the expert models to merge")
    merge: MergeSection = Field(default_factory=MergeSection, description="how to merge (section `merge`)")
    dtype: str = Field(default="bfloat16", description="dtype of merged weights: " + ", ".join(DTYPES))
    seed: int = Field(default=42, description="seed for randomized methods (dare, della) and evaluation")
    outputs: OutputsSection = Field(default_factory=OutputsSection, description="where outputs go (section `outputs`)")
    # Sections owned by later stages. Kept as plain dicts here so the merge stage validates the
    # file without importing them; each stage validates its own section strictly.
    evaluate: dict[str, Any] = Field(default_factory=dict, description="evaluation stage (section `evaluate`)")
    holmes: dict[str, Any] = Field(default_factory=dict, description="Holmes probing (section `holmes`)")
    hub: dict[str, Any] = Field(default_factory=dict, description="Hub publishing (section `hub`)")

    @field_validator("run")
    @classmethod
    def _run_ok(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"run name {value!r} must be letters, digits, '.', '_' or '-'")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype_ok(cls, value: str) -> str:
        aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
        value = aliases.get(value, value)
        if value not in DTYPES:
            hint = difflib.get_close_matches(value, DTYPES, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"unknown dtype {value!r}{extra}; choose one of {', '.join(DTYPES)}")
        return value

    # -- derived ---------------------------------------------------------------------------
    def resolve_paths(self, root: Path) -> PipelineConfig:
        """Make every output location absolute, relative paths taken from ``root``."""
        outputs = {
            name: (value if value.is_absolute() else (root / value)).resolve()
            for name, value in self.outputs.model_dump().items()
        }
        return self.model_copy(update={"outputs": OutputsSection(**outputs)})

    def stable_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- loading ---------------------------------------------------------------------------------

def _format_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        field = str(err["loc"][-1])
        parent_loc = err["loc"][:-1]
        known = _known_fields(parent_loc)
        hint = difflib.get_close_matches(field, known, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{source}: unknown key {loc!r}{extra}"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {loc or 'config'}: {msg}{more}"


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = PipelineConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        for arg in getattr(ann, "__args__", ()):  # list[ModelRef] and friends
            nested += [a for a in getattr(arg, "__args__", (arg,)) if isinstance(a, type)
                       and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


SectionT = TypeVar("SectionT", bound=BaseModel)


def validate_section(model: type[SectionT], data: Any, section: str, source: str = "config") -> SectionT:
    """Validate one stage's section (``evaluate:``, ``holmes:``, ``hub:``) with one-line errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {section}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1)
            extra = f" (did you mean '{section}.{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{source}: unknown key '{section}.{loc}'{extra}") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {section}.{loc}: {msg}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def is_raw_mergekit(data: dict[str, Any]) -> bool:
    return "merge_method" in data


def wrap_raw_mergekit(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A pipeline dict with one merge whose mergekit config is ``data``, unchanged."""
    label = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:96] or "merge"
    return {
        "run": label,
        "dtype": data.get("dtype") or "bfloat16",
        "merge": {"raw_config": data, "methods": [{"name": str(data["merge_method"]), "label": label}]},
    }


def build_config(data: dict[str, Any], source: str = "config") -> PipelineConfig:
    hub = data.get("hub")
    if (isinstance(hub, dict) and "token" in hub) or "hf_token" in data or "token" in data:
        raise ConfigError(
            f"{source}: a Hub token must not be stored in a config file; set HF_TOKEN in the "
            "environment or run 'hf auth login' instead"
        )
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_config(path: Path | str, overrides: dict[str, Any] | None = None, root: Path | None = None) -> PipelineConfig:
    """Load ``path`` (pipeline or raw mergekit YAML), apply overrides, validate, resolve paths.

    Relative output locations resolve against ``root`` (default: the current directory, as
    for mergekit's and lm-eval's command lines).
    """
    path = Path(path)
    data = read_yaml(path)
    if is_raw_mergekit(data):
        data = wrap_raw_mergekit(data, path.stem)
    data = apply_overrides(data, overrides or {})
    config = build_config(data, str(path))
    return config.resolve_paths(root or Path.cwd())


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (``{"merge.methods": [...], "seed": 1}``) to a config dict."""
    data = json.loads(json.dumps(data, default=str))  # deep copy, plain types
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


# Familiar variables of the original shell pipeline; flags win over these, these over the file.
ENV_OVERRIDES = {
    "BASE_MODEL": "base_model",
    "METHODS": "merge.methods",
    "DTYPE": "dtype",
    "SEED": "seed",
    "RUN_NAME": "run",
}


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    for var, key in ENV_OVERRIDES.items():
        if environ.get(var):
            value: Any = environ[var]
            if key == "merge.methods":
                value = value.split()
            out[key] = value
    experts = [environ[f"MODEL_{i}"] for i in range(1, 10) if environ.get(f"MODEL_{i}")]
    if experts:
        out["models"] = experts
    return out
