"""Write files and directories so that a crash never leaves something that looks finished.

Everything is written under a temporary sibling name that carries its owner
(``.<name>.tmp-<host>-<pid>``) and renamed into place only when complete; a rename within one
directory is atomic on POSIX filesystems, NFS included.

Clean-up of leftovers removes only what a dead owner left: a temporary of this host whose pid no
longer runs, or one of another host (whose pid cannot be checked from here) that nobody has
written to for :data:`FOREIGN_STALE_AFTER` seconds. A live job's staging folder is never touched,
whichever process or host runs the clean-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mergepipe.core.locks import pid_alive, this_host

TMP_MARK = ".tmp-"
# Leftovers of another host count as abandoned after this long without a write.
FOREIGN_STALE_AFTER = 6 * 3600.0
_OWNER = re.compile(r"\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


def temp_name(name: str) -> str:
    """The hidden temporary name of ``name`` for this process: ``.<name>.tmp-<host>-<pid>``."""
    return f".{name}{TMP_MARK}{this_host()}-{os.getpid()}"


def temp_sibling(path: Path) -> Path:
    return path.with_name(temp_name(path.name))


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block succeeds.

    An existing ``final`` is replaced. On error the temporary directory is removed.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    if tmp.exists():  # ours, from a crashed attempt of this very process id: nobody else's
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(temp_name(final.name + ".old"))
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _last_write(path: Path) -> float:
    """The newest modification time of ``path`` or anything under it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for sub in path.rglob("*"):
            with contextlib.suppress(OSError):
                newest = max(newest, sub.lstat().st_mtime)
    return newest


def abandoned(entry: Path, foreign_stale_after: float = FOREIGN_STALE_AFTER) -> bool:
    """Whether a temporary was left by an owner that is gone (see the module docstring)."""
    match = _OWNER.search(entry.name)
    if match is None:
        return False
    host, pid = match["host"], int(match["pid"])
    if host in (None, this_host()):
        return not pid_alive(pid)
    try:
        return time.time() - _last_write(entry) > foreign_stale_after
    except OSError:
        return False


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted writes (``.*.tmp-*``) directly inside ``directory``
    whose owner is gone; a live process's temporaries stay."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if not (entry.name.startswith(".") and TMP_MARK in entry.name) or not abandoned(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
