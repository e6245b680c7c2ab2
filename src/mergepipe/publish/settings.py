"""Whether a run can publish: namespace, repository names, a token and a reachable Hub.

Checked completely before any merge starts (``validate`` and ``mergepipe push --dry-run``): a
missing token must stop the run before an hour of merging, not after it. The token is only
looked for, never read into our own variables, messages or files.
"""

from __future__ import annotations

from collections.abc import Iterable

from mergepipe.config import HubSection, PipelineConfig
from mergepipe.errors import ConfigError
from mergepipe.merge.plan import merge_entries

OFFLINE_HELP = "Hub offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE); unset it to publish"


def token_available() -> bool:
    """Whether the Hub client will find a token (HF_TOKEN or the login cache); never returns it."""
    from huggingface_hub import get_token

    return bool(get_token())


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def check_publishing(
    config: PipelineConfig,
    hub: HubSection | None = None,
    *,
    names: Iterable[str] | None = None,
    publishing: bool | None = None,
    source: str = "config",
) -> HubSection:
    """Check that the run's merged models can be published; returns the hub settings.

    ``hub`` replaces ``config.hub`` (flags applied). ``names``: the merged-model names to publish
    (default: every merge the config plans). ``publishing``: check as if pushing (``mergepipe
    push``) even when ``hub.push`` is false. When publishing, a namespace, valid repository names
    and a token (``HF_TOKEN`` or the login cache) must be present, and the Hub must not be in
    offline mode.
    """
    settings = hub or config.hub
    if not (settings.push if publishing is None else publishing):
        return settings
    if not settings.namespace:
        raise ConfigError(f"{source}: hub.namespace: set the Hub user or organisation to publish to")
    entries = merge_entries(config.merge.methods)
    planned = list(names) if names is not None else [e.name for e in entries]
    methods = {e.name: e.spec.name for e in entries}
    for name in planned:
        settings.repo_id_for(run=config.run, name=name, method=methods.get(name, ""))
    if not token_available():
        raise ConfigError(
            f"{source}: hub.push is enabled but no Hub token was found; set HF_TOKEN in the environment "
            "or run 'hf auth login' (tokens are never read from config files)"
        )
    if hub_offline():
        raise ConfigError(f"{source}: hub.push is enabled but {OFFLINE_HELP}")
    return settings
