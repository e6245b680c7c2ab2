"""Whether the Hugging Face Hub can be reached, and going offline up front when it cannot.

Built-in lm-eval tasks load their data from the Hub at run time. On a machine without network
(an air-gapped cluster, CI) the libraries would retry for minutes before failing; switching them
to offline mode first makes a missing dataset fail at once with one clear line.
"""

from __future__ import annotations

import os
import socket

HUB_HOST = ("huggingface.co", 443)


def hub_reachable(timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def offline_requested() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


def ensure_offline_if_unreachable() -> bool:
    """Set the HF offline variables when the Hub cannot be reached; True when offline."""
    if not offline_requested() and hub_reachable():
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
