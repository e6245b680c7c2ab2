"""Where mergepipe keeps things it builds (caches, the demo zoo) and finds its project root."""

from __future__ import annotations

import os
from pathlib import Path

_SRC_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The checkout holding ``setup.sh`` (editable install), else the current directory."""
    if (_SRC_ROOT / "setup.sh").is_file() and (_SRC_ROOT / "src" / "mergepipe").is_dir():
        return _SRC_ROOT
    return Path.cwd()


def cache_dir() -> Path:
    """Build caches; ``MERGEPIPE_CACHE`` overrides the default ``environments/cache``."""
    env = os.environ.get("MERGEPIPE_CACHE")
    return Path(env).expanduser().resolve() if env else project_root() / "environments" / "cache"


def zoo_dir() -> Path:
    """The demo zoo; ``MERGEPIPE_ZOO_DIR`` overrides the default ``environments/zoo``."""
    env = os.environ.get("MERGEPIPE_ZOO_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / "environments" / "zoo"
