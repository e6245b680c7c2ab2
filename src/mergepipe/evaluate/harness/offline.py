"""Whether the Hugging Face Hub can be reached, and going offline up front when it cannot.

Built-in lm-eval tasks load their data from the Hub at run time. On a machine without network
(an air-gapped cluster, CI) the libraries would retry for minutes before failing; switching them
to offline mode first makes a missing dataset fail at once with one clear line.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    """The Hub the libraries talk to (``HF_ENDPOINT``, else huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_reachable(timeout: float = 1.5) -> bool:
    parts = urlsplit(hub_endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_requested() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


def hub_online() -> bool:
    """The Hub may be used: offline mode is not requested and it answers."""
    return not offline_requested() and hub_reachable()


def ensure_offline_if_unreachable() -> bool:
    """Set the HF offline variables when the Hub cannot be reached; True when offline."""
    if hub_online():
        return False
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ[var] = "1"
    try:  # already-imported libraries read these at import time
        import datasets.config

        datasets.config.HF_DATASETS_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):
        pass
    return True
