"""The ``hub:`` section of ``pipeline.yaml``: where and how merged models are published.

Only the settings live here; whether a token and the Hub are available is checked by
:mod:`mergepipe.publish.settings` before any merge starts. A token is never a field: a config
holding one (under any key, or a token-shaped value anywhere) is refused by
:func:`refuse_secrets`, and the token itself never appears in a config file, in an error, or
anywhere we write.
"""

from __future__ import annotations

import re
import string
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergepipe.errors import ConfigError

# Hub naming rules (huggingface_hub.utils.validate_repo_id and the Hub's own form): letters,
# digits, '-', '_', '.'; no leading/trailing '-' or '.'; no '--' or '..'; at most 96 characters.
MAX_NAME_LENGTH = 96
_NAME_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
TEMPLATE_FIELDS = ("run", "name", "method")
DEFAULT_REPO_TEMPLATE = "{run}-{name}"

# Keys that would hold a secret, and values that look like a Hub user access token.
_SECRET_KEY = re.compile(r"token|secret|password|api[_-]?key", re.IGNORECASE)
_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")

TOKEN_HELP = (
    "a Hub token must not be stored in a config file; set HF_TOKEN in the environment or run "
    "'hf auth login' instead"
)


def hub_name_problem(value: str, what: str = "name") -> str | None:
    """Why ``value`` is not a valid Hub user, organisation or repository name (None if valid)."""
    if not value:
        return f"{what} is empty"
    if len(value) > MAX_NAME_LENGTH:
        return (
            f"{what} {value[:40]!r}... is {len(value)} characters long; "
            f"the Hub allows at most {MAX_NAME_LENGTH}"
        )
    if not _NAME_CHARS.match(value):
        bad = sorted({c for c in value if not re.match(r"[A-Za-z0-9._-]", c)})
        return (
            f"{what} {value!r} contains {', '.join(repr(c) for c in bad)}; the Hub allows only letters, "
            "digits, '-', '_' and '.'"
        )
    if value[0] in "-." or value[-1] in "-.":
        return f"{what} {value!r} must not start or end with '-' or '.'"
    if "--" in value or ".." in value:
        return f"{what} {value!r} must not contain '--' or '..'"
    if value.endswith(".git"):
        return f"{what} {value!r} must not end with '.git'"
    return None


class HubSection(BaseModel):
    """Publishing settings. A token is never a field here: it comes from the environment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    push: bool = Field(default=False, description="publish every merged model after merging")
    namespace: str | None = Field(
        default=None, description="Hub user or organisation that owns the repositories"
    )
    repo_name: str = Field(
        default=DEFAULT_REPO_TEMPLATE,
        description="repository name template; fields: {run}, {name} (merged model), {method}",
    )
    private: bool = Field(default=True, description="create new repositories as private")
    delete_local_after_push: bool = Field(
        default=False,
        description="delete the local merged model once every file is verified on the Hub",
    )
    commit_message: str | None = Field(
        default=None, description="commit message (default: 'Upload <name> merged with mergekit')"
    )
    license: str | None = Field(
        default=None, description="license for the model card (default: only when all inputs agree)"
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_ok(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if "/" in value:
            raise ValueError(
                f"namespace {value!r} must be a user or organisation name only (the repository name "
                "comes from hub.repo_name)"
            )
        problem = hub_name_problem(value, "namespace")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("repo_name")
    @classmethod
    def _template_ok(cls, value: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError:
            raise ValueError(f"repo_name template {value!r} has unbalanced braces") from None
        unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
        if unknown:
            raise ValueError(
                f"repo_name template {value!r} uses unknown field {{{unknown[0]}}}; "
                f"known fields: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
            )
        return value

    @field_validator("commit_message")
    @classmethod
    def _message_ok(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("commit_message is empty")
        return value

    def repo_name_for(self, *, run: str, name: str, method: str = "") -> str:
        """The repository name for one merged model; raises ConfigError if the Hub would refuse it."""
        rendered = self.repo_name.format(run=run, name=name, method=method or name)
        problem = hub_name_problem(rendered, "repository name")
        if problem:
            raise ConfigError(f"hub.repo_name {self.repo_name!r} gives an invalid name: {problem}")
        return rendered

    def repo_id_for(self, *, run: str, name: str, method: str = "") -> str:
        if not self.namespace:
            raise ConfigError("hub.namespace: set the Hub user or organisation to publish to")
        return f"{self.namespace}/{self.repo_name_for(run=run, name=name, method=method)}"


def refuse_secrets(data: Any, where: str = "hub", *, by_key: bool = True) -> None:
    """Refuse a config holding a token: by a secret-sounding key (``by_key``) or a token-shaped value.

    The message names the field, never the value.
    """
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if by_key and _SECRET_KEY.search(str(key)):
                raise ConfigError(f"{path}: {TOKEN_HELP}")
            refuse_secrets(value, path, by_key=by_key)
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            refuse_secrets(value, f"{where}[{i}]", by_key=by_key)
    elif isinstance(data, str) and _TOKEN_VALUE.search(data):
        raise ConfigError(f"{where}: this value looks like a Hub token; {TOKEN_HELP}")
