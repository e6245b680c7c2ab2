"""Load ``pipeline.yaml``: YAML, raw mergekit wrapping, overrides, secrets, one-line errors.

Everything is validated before any heavy work starts, and every error is one line naming the
offending field (``merge.methods[0].parameters.density: ...``) with a did-you-mean hint for
unknown keys. :func:`validate_model` is the one error formatter: the whole config, a section
given on its own and the command-line flags generated from the models all go through it.

A raw mergekit YAML (a file with a top-level ``merge_method``) is also accepted: it is wrapped
into a pipeline with one merge whose config is passed to mergekit unchanged.
"""

from __future__ import annotations

import json
import os
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mergepipe.config.hub import refuse_secrets
from mergepipe.config.schema import PipelineConfig
from mergepipe.errors import ConfigError, did_you_mean

ModelT = TypeVar("ModelT", bound=BaseModel)


# -- the one error formatter -------------------------------------------------------------------

def _sub_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _sub_model(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: Any) -> bool:
    if typing.get_origin(annotation) is dict:
        return True
    return any(_is_mapping(a) for a in typing.get_args(annotation))


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """The dotted location of a pydantic error (union-member tags dropped) and the model owning
    its last key (for hints on unknown keys)."""
    parts: list[str] = []
    current: type[BaseModel] | None = model
    in_mapping = False
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            continue
        name = str(part)
        if current is not None and name in current.model_fields:
            parts.append(name)
            annotation = current.model_fields[name].annotation
            in_mapping = _is_mapping(annotation)
            current = _sub_model(annotation)
        elif in_mapping:  # a key of a mapping field (a suite name, a parameter)
            parts.append(name)
            in_mapping = False
        elif current is not None and not parts and name not in current.model_fields:
            parts.append(name)  # an unknown top-level key
        # else: a union member tag or a validator name: not part of the location
    return ".".join(parts), current


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str,
                            prefix: str = "") -> str:
    """One line for a pydantic error: ``<source>: <field>: <message>`` or an unknown-key hint."""
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "extra_forbidden":
        where, _ = _walk(model, tuple(first["loc"][:-1]))
        parent = _walk(model, tuple(first["loc"][:-1]))[1] if first["loc"][:-1] else model
        key = str(first["loc"][-1])
        dotted = f"{prefix}{where + '.' if where else ''}{key}"
        hint_prefix = f"{prefix}{where + '.' if where else ''}"
        hint = did_you_mean(key, list(parent.model_fields) if parent else [], prefix=hint_prefix)
        return f"{source}: unknown key '{dotted}'{hint}"
    where, _ = _walk(model, tuple(first["loc"]))
    # A union that fails in every member reports one error per member, at the same place.
    same = [e for e in errors if _walk(model, tuple(e["loc"]))[0] == where]
    message = " or ".join(dict.fromkeys(_clean(e["msg"]) for e in same))
    more = len(errors) - len(same)
    suffix = f" (+{more} more)" if more else ""
    return f"{source}: {prefix}{where or 'config'}: {message}{suffix}"


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def validate_model(model: type[ModelT], data: Any, source: str = "config", prefix: str = "") -> ModelT:
    """``model.model_validate(data)`` with one-line ConfigErrors (``prefix``: the section path)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"{source}: {where}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source, prefix)) from None


# -- files -------------------------------------------------------------------------------------

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


def safe_name(text: str, fallback: str = "merge") -> str:
    """``text`` as a name for folders and Hub repositories: letters, digits, '.', '_', '-'."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[:96].lstrip(".-") or fallback


def wrap_raw_mergekit(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A pipeline dict with one merge whose mergekit config is ``data``, unchanged."""
    label = safe_name(name)
    return {
        "run": label,
        "dtype": data.get("dtype") or "bfloat16",
        "merge": {"raw_config": data, "methods": [{"name": str(data["merge_method"]), "label": label}]},
    }


def build_config(data: dict[str, Any], source: str = "config") -> PipelineConfig:
    """Validate a config dict; a Hub token anywhere in it is refused (the field is named, never the value)."""
    try:
        for key in ("hf_token", "token"):
            if key in data:
                refuse_secrets({key: data[key]}, "")
        if isinstance(data.get("hub"), dict):
            refuse_secrets(data["hub"], "hub")
        refuse_secrets(data, "", by_key=False)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return validate_model(PipelineConfig, data, source)


def load_config(path: Path | str, overrides: dict[str, Any] | None = None, root: Path | None = None) -> PipelineConfig:
    """Load ``path`` (pipeline or raw mergekit YAML), apply overrides, validate, resolve paths.

    Relative paths resolve against ``root`` (default: the current directory; see the rule in
    :mod:`mergepipe.config.schema`).
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
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = json.loads(json.dumps(value, default=str))
    return data


# Familiar variables of the original shell pipeline; flags win over these, these over the file.
ENV_OVERRIDES = {
    "BASE_MODEL": "base_model",
    "METHODS": "merge.methods",
    "DTYPE": "dtype",
    "SEED": "seed",
    "RUN_NAME": "run",
    "MERGEPIPE_DATASETS_DIR": "evaluate.datasets_dir",
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
