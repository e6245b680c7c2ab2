"""Where mergepipe keeps what it builds (caches), finds its project root, and checks outputs are writable."""

from __future__ import annotations

import os
from pathlib import Path

_SRC_ROOT = Path(__file__).resolve().parents[3]  # src/mergepipe/core/paths.py -> checkout


def project_root() -> Path:
    """The checkout holding ``setup.sh`` (editable install), else the current directory."""
    if (_SRC_ROOT / "setup.sh").is_file() and (_SRC_ROOT / "src" / "mergepipe").is_dir():
        return _SRC_ROOT
    return Path.cwd()


def cache_dir() -> Path:
    """Build caches; ``MERGEPIPE_CACHE`` overrides the default ``environments/cache``."""
    env = os.environ.get("MERGEPIPE_CACHE")
    return Path(env).expanduser().resolve() if env else project_root() / "environments" / "cache"


def check_writable(path: Path, what: str) -> None:
    """``path`` (or its nearest existing parent) accepts new files; else a one-line error naming ``what``.

    Nothing is created: validation must leave no trace.
    """
    import tempfile

    from mergepipe.errors import ConfigError

    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what}: {path} is not writable ({probe} is not a directory)")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".mergepipe-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what}: {path} is not writable ({exc.strerror or exc})") from None
