"""The ``hub:`` section of ``pipeline.yaml``: where and how merged models are published.

Validated strictly and completely before any merge starts, including whether a Hub token can be
found (``HF_TOKEN`` or the Hub's login cache) when publishing is enabled: a missing token must
stop the run before an hour of merging, not after it.

The token itself never appears in a config file, in this module's errors, or anywhere we write.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mergepipe.config import validate_section
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


def parse_hub_section(raw: Any, source: str = "config") -> HubSection:
    """Validate the raw ``hub:`` mapping into a HubSection (one-line ConfigError on failure)."""
    if isinstance(raw, dict):
        refuse_secrets(raw)
    return validate_section(HubSection, raw, "hub", source)


def token_available() -> bool:
    """Whether the Hub client will find a token (HF_TOKEN or the login cache); never returns it."""
    from huggingface_hub import get_token

    return bool(get_token())


OFFLINE_HELP = "Hub offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE); unset it to publish"


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def planned_names(config: Any) -> list[tuple[str, str]]:
    """Best-effort (name, method) of the merged models a config will produce (label, else method)."""
    specs = getattr(getattr(config, "merge", None), "methods", None) or []
    return [(spec.label or spec.name, spec.name) for spec in specs]


def validate_hub_settings(
    config: Any,
    *,
    names: Iterable[str] | None = None,
    publishing: bool | None = None,
    source: str = "config",
) -> HubSection:
    """Check the ``hub:`` section of a PipelineConfig completely, before any merge runs.

    ``names``: the merged-model names the run will produce (default: from the config's methods),
    used to check that every repository name is valid. ``publishing``: check as if pushing
    (``mergepipe push``) even when ``hub.push`` is false. When publishing, a namespace and a token
    (``HF_TOKEN`` or the login cache) must be present.
    """
    raw = getattr(config, "hub", None) if not isinstance(config, dict) else config.get("hub")
    settings = parse_hub_section(raw, source)
    # A token pasted anywhere else in the file (a model path, a parameter) is refused too.
    everything = config if isinstance(config, dict) else config.model_dump(mode="json")
    try:
        refuse_secrets(everything, "", by_key=False)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not (settings.push if publishing is None else publishing):
        return settings
    if not settings.namespace:
        raise ConfigError(f"{source}: hub.namespace: set the Hub user or organisation to publish to")
    run = config.get("run") if isinstance(config, dict) else getattr(config, "run", None)
    run = str(run or "default")
    planned = [(n, "") for n in names] if names is not None else planned_names(config)
    for name, method in planned:
        settings.repo_id_for(run=run, name=name, method=method)
    if not token_available():
        raise ConfigError(
            f"{source}: hub.push is enabled but no Hub token was found; set HF_TOKEN in the environment "
            "or run 'hf auth login' (tokens are never read from config files)"
        )
    if hub_offline():
        raise ConfigError(f"{source}: hub.push is enabled but {OFFLINE_HELP}")
    return settings
