"""Command-line options generated from the config models, and validated by them.

A flag is the field's name with dashes (``batch_size`` -> ``--batch-size``), its help is the
field's description, choices come from ``Literal`` types, booleans get ``--x/--no-x`` and lists
take several values. Every flag defaults to "not given", so a flag left out keeps the value of
the config file; the values given are validated by the same pydantic model as the file, and an
error names the flag (``--batch-size: must be a positive integer or 'auto', got 0``).
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mergepipe.config.load import format_validation_error
from mergepipe.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _literal_choices(annotation: Any) -> list[Any] | None:
    """The choices of a pure ``Literal[...]`` (optionally ``| None``), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
        return list(typing.get_args(args[0]))
    return None


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(typing.get_origin(a) is list for a in typing.get_args(annotation))


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (set(typing.get_args(annotation)) == {bool, type(None)})


def add_model_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel],
                      fields: Iterable[str], help_suffix: str = "") -> None:
    """Add one flag per field of ``model`` (in the order given)."""
    for name in fields:
        field = model.model_fields[name]
        annotation = field.annotation
        text = (field.description or name) + help_suffix
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": text}
        if _is_bool(annotation):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            choices = _literal_choices(annotation)
            if choices is not None:
                kwargs["choices"] = [str(c) for c in choices]
            if _is_list(annotation):
                kwargs["nargs"] = "+"
            kwargs["metavar"] = None if choices is not None else name.upper()
        parser.add_argument(flag_name(name), **kwargs)


def given(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """The values of the flags that were given on the command line."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


def validate_with_flags(model: type[ModelT], base: dict[str, Any], flags: dict[str, Any],
                        source: str = "config", prefix: str = "") -> ModelT:
    """``model`` validated from ``base`` (a config section) updated with ``flags``.

    An error in a value that came from a flag names the flag; one from the file names the field.
    """
    data = {**base, **flags}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        field = str(loc[0]) if loc else ""
        if field in flags:
            line = format_validation_error(exc, model, "flag")
            message = line.split(": ", 2)[-1]
            raise ConfigError(f"{flag_name(field)}: {message}") from None
        raise ConfigError(format_validation_error(exc, model, source, prefix)) from None
