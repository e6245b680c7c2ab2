"""The local dataset mirror: where a task's data are, fetching them, and reading them offline.

Layout: ``<datasets_dir>/<dataset_path>/`` holds a Hub dataset repository's files as on the Hub
(a ``README.md`` whose ``configs:`` block names the data files of each config, and the data
files), so a folder made by ``huggingface_hub.snapshot_download(repo_type="dataset",
local_dir=...)`` works as it is. ``mergepipe datasets fetch`` writes exactly that, one folder per
dataset repository the requested tasks load, plus a small ``.mergepipe-dataset.json`` (which
commit it is). Copying the whole folder to another machine is all an air-gapped cluster needs.

A job reads a dataset from the mirror whenever the mirror has it (:func:`reading_from_mirror`
points ``datasets.load_dataset`` at the folder for that dataset only), so it does not depend on
the working directory and never needs the Hub for it; every other dataset loads as lm-eval
would load it (Hub or Hugging Face cache).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergepipe.core.atomic import write_json
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.harness.catalog import DatasetRef
from mergepipe.evaluate.harness.offline import hub_endpoint, offline_requested

DEFAULT_DIR = Path("datasets")
ENV_VAR = "MERGEPIPE_DATASETS_DIR"
RECORD = ".mergepipe-dataset.json"
FETCHING = ".fetching"
# datasets' packaged builders: their data are local or URL data files, never a Hub repository.
PACKAGED_BUILDERS = frozenset({
    "json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "imagefolder", "audiofolder",
    "videofolder", "xml", "sql", "generator", "cache", "eval", "hdf5", "lance", "pdffolder", "niftifolder",
})
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def default_dir() -> Path:
    """``MERGEPIPE_DATASETS_DIR``, else ``datasets/`` (relative to the working directory)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_DIR


def is_hub_dataset(path: str) -> bool:
    """A Hub dataset id (``org/name`` or a legacy ``name``), not a builder or a local folder."""
    return (path not in PACKAGED_BUILDERS and bool(_REPO_ID.match(path)) and ".." not in path
            and not Path(path).is_absolute())


def mirror_folder(datasets_dir: Path | None, path: str) -> Path | None:
    """The mirror's copy of Hub dataset ``path``, if it has one with files in it."""
    if datasets_dir is None or not is_hub_dataset(path):
        return None
    folder = Path(datasets_dir) / path
    try:
        if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
            return folder.resolve()
    except OSError:
        return None
    return None


def declared_configs(folder: Path) -> list[str] | None:
    """The config names a dataset folder's ``README.md`` declares (None: it declares none)."""
    import yaml

    readme = folder / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(configs, list):
        return None
    return [str(c.get("config_name", "default")) for c in configs if isinstance(c, dict)]


def hf_cache_copy(path: str) -> Path | None:
    """A copy of Hub dataset ``path`` in the Hugging Face caches (hub snapshots or datasets' own)."""
    try:
        import datasets.config
        from huggingface_hub import constants
    except ImportError:
        return None
    snapshots = Path(constants.HF_HUB_CACHE) / f"datasets--{path.replace('/', '--')}" / "snapshots"
    with contextlib.suppress(OSError):
        if snapshots.is_dir() and any(snapshots.iterdir()):
            return snapshots
    prepared = Path(datasets.config.HF_DATASETS_CACHE) / path.replace("/", "___")
    return prepared if prepared.is_dir() else None


# -- where a task's data are ---------------------------------------------------------------------

@dataclass(frozen=True)
class Located:
    ref: DatasetRef
    where: str  # "mirror" | "cache" | "local" | "hub" | "missing"
    detail: str  # the folder, or why it is missing

    @property
    def present(self) -> bool:
        """Loadable without the network."""
        return self.where in ("mirror", "cache", "local")

    @property
    def fetchable(self) -> bool:
        return is_hub_dataset(self.ref.path)


def _data_files(kwargs: dict[str, Any]) -> list[str]:
    files = kwargs.get("data_files")
    out: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            for v in value:
                add(v)
        elif isinstance(value, dict):
            for v in value.values():
                add(v)

    add(files)
    return out


def _exists(pattern: str) -> bool:
    """A data file (or glob pattern) that matches something; relative ones from the working directory."""
    path = Path(pattern).expanduser()
    if path.exists():
        return True
    if not any(ch in pattern for ch in "*?["):
        return False
    base = Path(path.anchor) if path.is_absolute() else Path()
    rel = str(path.relative_to(path.anchor)) if path.is_absolute() else str(path)
    return next(iter(base.glob(rel)), None) is not None


def _is_url(text: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", text))


def locate(ref: DatasetRef, datasets_dir: Path | None, online: bool,
           hub_check: Callable[[DatasetRef], str | None] | None = None) -> Located:
    """Where ``ref`` will be loaded from; ``hub_check`` (online only) returns why the Hub cannot
    serve it (None: it can)."""
    path = ref.path
    if path in PACKAGED_BUILDERS:
        files = _data_files(ref.kwargs)
        remote = [f for f in files if _is_url(f)]
        local = [f for f in files if not _is_url(f)]
        missing = [f for f in local if not _exists(f)]
        if missing:
            return Located(ref, "missing", f"data file not found: {missing[0]}")
        if remote and not online:
            return Located(ref, "missing", f"downloads {remote[0]} at run time and the network is off")
        return Located(ref, "hub" if remote else "local", remote[0] if remote else "local data files")
    if not is_hub_dataset(path):
        folder = Path(path).expanduser()
        if folder.exists():
            return Located(ref, "local", str(folder))
        return Located(ref, "missing", f"local dataset folder {folder} not found")
    folder = mirror_folder(datasets_dir, path)
    if folder is not None:
        names = declared_configs(folder)
        if ref.name and names is not None and ref.name not in names:
            return Located(ref, "missing", f"the mirror's copy {folder} has no config {ref.name!r} "
                                           f"(it has: {', '.join(names) or 'none'})")
        return Located(ref, "mirror", str(folder))
    cached = hf_cache_copy(path)
    if cached is not None:
        return Located(ref, "cache", str(cached))
    if online:
        problem = hub_check(ref) if hub_check is not None else None
        if problem is None:
            return Located(ref, "hub", f"{hub_endpoint()}/datasets/{path}")
        return Located(ref, "missing", problem)
    where = f"the mirror {datasets_dir}" if datasets_dir is not None else "a dataset mirror (none set)"
    return Located(ref, "missing", f"not in {where} nor the Hugging Face cache, and the Hub cannot be reached")


def hub_problem(ref: DatasetRef) -> str | None:
    """Why the Hub cannot serve ``ref`` now (not found, gated, unreachable); None when it can."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = hub_endpoint()
    try:
        HfApi(endpoint=endpoint).dataset_info(ref.path, revision=ref.revision, timeout=15)
    except GatedRepoError:
        return f"gated on the Hub: accept its terms at {endpoint}/datasets/{ref.path} and set HF_TOKEN"
    except RepositoryNotFoundError:
        return f"not found on {endpoint} (a private dataset needs HF_TOKEN)"
    except RevisionNotFoundError:
        return f"revision {ref.revision} not found on {endpoint}"
    except Exception as exc:  # network errors of every kind
        return f"the Hub did not answer ({type(exc).__name__})"
    return None


# -- reading from the mirror ---------------------------------------------------------------------

@contextlib.contextmanager
def reading_from_mirror(datasets_dir: Path | None) -> Iterator[dict[str, str]]:
    """While active, ``datasets.load_dataset(<hub id>)`` reads the mirror's copy when there is one.

    Yields the datasets read from the mirror so far (Hub id -> folder), for the results record.
    """
    used: dict[str, str] = {}
    if datasets_dir is None:
        yield used
        return
    import datasets

    original = datasets.load_dataset

    @functools.wraps(original)
    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        path = kwargs.get("path", args[0] if args else None)
        folder = mirror_folder(datasets_dir, path) if isinstance(path, str) else None
        if folder is not None:
            used[path] = str(folder)
            if "path" in kwargs:
                kwargs["path"] = str(folder)
            else:
                args = (str(folder), *args[1:])
            # datasets caches a local folder by its name and config alone, whatever its content:
            # a cache of the mirror's own, keyed by what the folder holds, never serves stale data.
            kwargs.setdefault("cache_dir", str(_prepared_cache(folder)))
        return original(*args, **kwargs)

    datasets.load_dataset = load_dataset
    try:
        yield used
    finally:
        datasets.load_dataset = original


def _prepared_cache(folder: Path) -> Path:
    """Where datasets keeps its prepared copy of mirror folder ``folder`` (keyed by its files)."""
    import hashlib

    import datasets.config

    digest = hashlib.sha256(str(folder).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return Path(datasets.config.HF_DATASETS_CACHE) / "mergepipe-mirror" / digest.hexdigest()[:16]


def mirror_record(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# -- fetching --------------------------------------------------------------------------------------

@dataclass
class Fetched:
    repo_id: str
    status: str  # "fetched" | "present" | "failed"
    folder: Path
    detail: str = ""


def fetch(repos: dict[str, str | None], to_dir: Path, *, force: bool = False,
          say: Callable[[str], None] = print) -> list[Fetched]:
    """Download each Hub dataset repository (id -> revision or None) into ``to_dir/<id>/``.

    A repository is downloaded into ``to_dir/<org>/.<name>.fetching/`` (an interrupted fetch
    resumes there) and moved into place when complete, so a folder in the mirror is always whole.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.HF_HUB_OFFLINE or offline_requested():
        raise MergepipeError("datasets fetch needs the Hub, but offline mode is set (HF_HUB_OFFLINE, "
                             "HF_DATASETS_OFFLINE or TRANSFORMERS_OFFLINE); run it on a connected machine "
                             "without them")

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint)
    to_dir = Path(to_dir).expanduser().resolve()
    out: list[Fetched] = []
    for repo_id, revision in repos.items():
        final = to_dir / repo_id
        if mirror_folder(to_dir, repo_id) is not None and not force:
            say(f"present  {repo_id} ({final})")
            out.append(Fetched(repo_id, "present", final))
            continue
        staging = final.parent / f".{final.name}{FETCHING}"
        try:
            ref = DatasetRef(repo_id, None, json.dumps({"revision": revision} if revision else {}))
            problem = hub_problem(ref)
            if problem is not None:
                raise MergepipeError(problem)
            info = api.dataset_info(repo_id, revision=revision, timeout=30)
            staging.mkdir(parents=True, exist_ok=True)
            snapshot_download(repo_id, repo_type="dataset", revision=info.sha or revision, local_dir=staging,
                              endpoint=endpoint)
            shutil.rmtree(staging / ".cache", ignore_errors=True)  # download bookkeeping only
            files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
            write_json(staging / RECORD, {
                "repo_id": repo_id, "revision": revision, "sha": info.sha, "endpoint": endpoint,
                "files": len(files), "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            })
            if final.exists():
                old = final.parent / f".{final.name}.old-{os.getpid()}"
                os.replace(final, old)
                os.replace(staging, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, final)
        except MergepipeError as exc:
            say(f"failed   {repo_id}: {exc}")
            out.append(Fetched(repo_id, "failed", final, str(exc)))
            continue
        except Exception as exc:  # a download that broke off: the staging folder resumes next time
            detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            say(f"failed   {repo_id}: {detail}")
            out.append(Fetched(repo_id, "failed", final, detail))
            continue
        say(f"fetched  {repo_id} -> {final} ({len(files)} files, commit {(info.sha or '?')[:12]})")
        out.append(Fetched(repo_id, "fetched", final))
    return out
