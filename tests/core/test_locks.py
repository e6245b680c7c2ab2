"""Locks that name their holder, stale-lock recovery, and clean-up that spares live temporaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from mergepipe.core.atomic import abandoned, remove_stale_temporaries, temp_name
from mergepipe.core.locks import FileLock, LockHeld, Owner, holding_run, is_stale, this_host


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_owner(path: Path, **changes) -> None:
    owner = {**asdict(Owner.me("a run elsewhere")), **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))


def test_second_holder_is_refused_with_the_holders_name(tmp_path: Path) -> None:
    first = FileLock(tmp_path / "x.lock", "mergepipe run")
    assert first.try_acquire()
    with pytest.raises(LockHeld, match=rf"run 'demo' is in use by mergepipe run \(host {this_host()}, "
                                       rf"pid {os.getpid()}, since .*\); lock file .*x\.lock$"):
        FileLock(tmp_path / "x.lock", "another").acquire(timeout=0, what="run 'demo'")
    first.release()
    assert not (tmp_path / "x.lock").exists()
    second = FileLock(tmp_path / "x.lock", "another")
    assert second.try_acquire()
    second.release()


def test_lock_of_a_dead_process_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    _write_owner(path, pid=_dead_pid(), pid_start=None)
    assert is_stale(path)
    lock = FileLock(path, "mine")
    assert lock.try_acquire() and json.loads(path.read_text())["purpose"] == "mine"
    lock.release()


def test_lock_of_a_reused_pid_is_broken(tmp_path: Path) -> None:
    # Our own pid, but the process that held the lock started at another time: not us.
    path = tmp_path / "x.lock"
    _write_owner(path, pid=os.getpid(), pid_start="1")
    assert is_stale(path)


def test_other_hosts_lock_is_kept_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    _write_owner(path, host="some-other-node", pid=1)
    lock = FileLock(path, "mine", stale_after=60)
    assert not lock.try_acquire()
    assert lock.holder() is not None and lock.holder().host == "some-other-node"
    old = time.time() - 120
    os.utime(path, (old, old))  # no heartbeat for two minutes: its owner is gone
    assert lock.try_acquire()
    lock.release()


def test_heartbeat_keeps_a_long_held_lock_fresh(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock", "long job", heartbeat=0.1)
    assert lock.try_acquire()
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    time.sleep(0.5)
    assert time.time() - lock.path.stat().st_mtime < 5
    lock.release()


def test_lock_taken_over_after_staleness_is_not_removed_by_its_old_owner(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    old = FileLock(path, "old")
    assert old.try_acquire()
    _write_owner(path, purpose="new owner")  # someone broke it (as stale) and holds it now
    old.release()
    assert json.loads(path.read_text())["purpose"] == "new owner"


def test_run_lock_refuses_a_second_start(tmp_path: Path) -> None:
    held = holding_run(tmp_path / "logs", "demo", "mergepipe run")
    held.__enter__()
    with pytest.raises(LockHeld, match=r"^run 'demo' is in use by mergepipe run \(host "):
        holding_run(tmp_path / "logs", "demo", "mergepipe run").__enter__()
    held.__exit__(None, None, None)
    with holding_run(tmp_path / "logs", "demo", "mergepipe run"):  # released: free again
        pass


def test_stale_temporaries_spare_live_owners(tmp_path: Path) -> None:
    mine = tmp_path / temp_name("model")  # this (live) process
    mine.mkdir()
    dead = tmp_path / f".model.tmp-{this_host()}-{_dead_pid()}"
    dead.mkdir()
    (dead / "shard.safetensors").write_text("x")
    legacy_dead = tmp_path / f".old.tmp-{_dead_pid()}"  # written before temporaries named their host
    legacy_dead.write_text("x")
    foreign_fresh = tmp_path / ".model.tmp-node-7-12345"
    foreign_fresh.mkdir()
    foreign_old = tmp_path / ".other.tmp-node-7-12346"
    foreign_old.mkdir()
    inside = foreign_old / "part"
    inside.write_text("x")
    stale = time.time() - 7 * 3600
    for p in (foreign_old, inside):
        os.utime(p, (stale, stale))
    assert not abandoned(mine) and not abandoned(foreign_fresh)
    removed = set(remove_stale_temporaries(tmp_path))
    assert removed == {dead, legacy_dead, foreign_old}
    assert mine.is_dir() and foreign_fresh.is_dir()


def test_a_live_writer_on_another_host_keeps_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / ".model.tmp-node-7-12345"
    folder.mkdir()
    stale = time.time() - 7 * 3600
    os.utime(folder, (stale, stale))
    (folder / "fresh-shard").write_text("still writing")  # a recent write deep inside
    assert not abandoned(folder)
