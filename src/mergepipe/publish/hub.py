"""Publish merged models to the Hugging Face Hub: repository, model card, upload, verification.

The Hub token is never handled here: ``huggingface_hub`` finds it itself (``HF_TOKEN`` or the
login cache) and sends it only in the Authorization header of its own requests. We only ask
whether one exists, and read it back solely to scrub it from error messages and to refuse to
publish a file that contains it.

``upload_folder`` skips files the Hub already has (re-pushing is a no-op, or a commit of only the
changed card) and, with ``hf_xet`` installed, resumes interrupted large uploads by itself.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mergepipe.config import HubSection
from mergepipe.core.atomic import write_text
from mergepipe.core.models import weight_files
from mergepipe.core.records import MergeRecord
from mergepipe.errors import ConfigError, MergepipeError, ModelError
from mergepipe.publish.card import CARD_FILE, build_model_card
from mergepipe.publish.settings import OFFLINE_HELP

log = logging.getLogger(__name__)

# Leftovers of interrupted atomic writes and other hidden files are never published.
IGNORE_PATTERNS = [".*", "*/.*"]
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{8,}")
_TEXT_SCAN_LIMIT = 8 * 2**20  # files this small are scanned for a leaked token before upload


class PublishError(MergepipeError):
    """Publishing to the Hub failed (network, permissions, verification)."""

    exit_code = 1


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    url: str
    commit_oid: str
    files: tuple[str, ...]
    verified: bool = False  # every file's content hash checked against the Hub's listing
    deleted_local: bool = False
    card: str = field(default="", repr=False)


# -- secrets ---------------------------------------------------------------------------------

def _current_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def scrub(text: str, token: str | None = None) -> str:
    """``text`` with the Hub token (and anything shaped like one) replaced by ``***``."""
    token = token if token is not None else _current_token()
    if token:
        text = text.replace(token, "***")
    return _TOKEN_SHAPE.sub("hf_***", text)


def _refuse_files_with_token(model_dir: Path, token: str) -> None:
    """A token pasted into a config or script inside the model dir must not get published."""
    needle = token.encode()
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.stat().st_size <= _TEXT_SCAN_LIMIT and needle in path.read_bytes():
            raise PublishError(
                f"{path}: contains the Hub token; remove it before publishing (nothing was uploaded)"
            )


# -- inputs ----------------------------------------------------------------------------------

def mergekit_yaml_for(model_dir: Path, record: MergeRecord, merge_config_dir: Path | None = None) -> str:
    """The exact mergekit YAML: ``merge_config/<run>/<name>.yaml``, else mergekit's copy, else the record."""
    name = record.name or Path(model_dir).name
    candidates = []
    if merge_config_dir is not None:
        candidates.append(Path(merge_config_dir) / f"{name}.yaml")
    candidates.append(Path(model_dir) / "mergekit_config.yml")
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    if record.mergekit_config:
        return yaml.safe_dump(record.mergekit_config, sort_keys=False)
    raise ModelError(f"{model_dir}: no mergekit config found (merge_config/<run>/{name}.yaml)")


def local_files(model_dir: Path) -> list[str]:
    """The files ``upload_folder`` will publish (POSIX paths relative to ``model_dir``)."""
    out = []
    for path in sorted(Path(model_dir).rglob("*")):
        rel = path.relative_to(model_dir).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out.append(rel)
    return out


# -- verification ----------------------------------------------------------------------------

def _digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one read."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # git's object id, not security
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(4 * 2**20), b""):
            sha256.update(chunk)
            git.update(chunk)
    return sha256.hexdigest(), git.hexdigest()


def verify_remote(
    api: Any, repo_id: str, revision: str, model_dir: Path, files: list[str], *, hashes: bool
) -> None:
    """Check that every local file is on the Hub at ``revision`` with the same size (and content).

    LFS/Xet files are compared by sha256, regular files by their git blob id. Raises PublishError.
    """
    from huggingface_hub.hf_api import RepoFile

    remote = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision)
        if isinstance(entry, RepoFile)
    }
    for rel in files:
        path = model_dir / rel
        entry = remote.get(rel)
        if entry is None:
            raise PublishError(f"verification failed: {rel} is missing from {repo_id}@{revision[:12]}")
        size = path.stat().st_size
        if entry.size != size:
            raise PublishError(
                f"verification failed: {rel} has {entry.size} bytes on the Hub, {size} locally"
            )
        if hashes:
            sha256, git_oid = _digests(path)
            expected = entry.lfs.sha256 if entry.lfs is not None else entry.blob_id
            actual = sha256 if entry.lfs is not None else git_oid
            if expected != actual:
                raise PublishError(f"verification failed: {rel} differs between the Hub and the local copy")


# -- publishing ------------------------------------------------------------------------------

def _explain(exc: BaseException, repo_id: str, token: str | None) -> str:
    """One line saying what went wrong, without the token."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        hints = {
            401: "the Hub rejected the token (check HF_TOKEN or run 'hf auth login')",
            403: f"the token has no write access to {repo_id.split('/')[0]}",
            404: "repository not found",
            413: "a file is too large for the Hub",
        }
        detail = (exc.server_message or "").strip().splitlines()
        text = hints.get(status) or (detail[0] if detail else str(exc).splitlines()[0])
        return scrub(f"HTTP {status}: {text}", token)
    name = type(exc).__name__
    if name == "OfflineModeIsEnabled":
        return OFFLINE_HELP
    if "Connect" in name or "Timeout" in name or isinstance(exc, ConnectionError):
        return scrub(f"cannot reach the Hub at {constants.ENDPOINT} ({name})", token)
    first = (str(exc).strip().splitlines() or [name])[0]
    return scrub(f"{name}: {first}", token)


def push_merged_model(
    model_dir: Path,
    settings: HubSection,
    *,
    run: str,
    results_table: str | None,
    mergekit_yaml: str | None = None,
    merge_config_dir: Path | None = None,
) -> PushResult:
    """Write the model card into ``model_dir`` and publish the directory to the Hub.

    The repository is ``<namespace>/<repo_name template>``, created private unless configured
    otherwise (an existing repository keeps its visibility). Files the Hub already has are not
    uploaded again. With ``delete_local_after_push`` the local directory is deleted only after
    every file's size and hash match the Hub's listing of the new commit.
    """
    from huggingface_hub import HfApi

    model_dir = Path(model_dir).resolve()
    record = MergeRecord.require(model_dir)
    if not weight_files(model_dir):
        raise ModelError(f"{model_dir}: no weight files (*.safetensors / *.bin); the merge is incomplete")
    name = record.name or model_dir.name
    repo_id = settings.repo_id_for(run=run, name=name, method=record.method)
    token = _current_token()
    if not token:
        raise ConfigError(
            "no Hub token found; set HF_TOKEN in the environment or run 'hf auth login' "
            "(tokens are never read from config files)"
        )
    if mergekit_yaml is None:
        mergekit_yaml = mergekit_yaml_for(model_dir, record, merge_config_dir)

    card = build_model_card(record, mergekit_yaml, results_table, license=settings.license)
    if token in card:  # only possible if a token reached the merge record or config
        raise PublishError(f"{model_dir / CARD_FILE}: would contain the Hub token; refusing to write it")
    write_text(model_dir / CARD_FILE, card)
    _refuse_files_with_token(model_dir, token)
    files = local_files(model_dir)
    message = settings.commit_message or (
        f"Upload {name} merged with mergekit ({record.method or 'merge'})"
        + (" with evaluation results" if results_table else "")
    )

    api = HfApi()  # finds the token itself; it is never passed around by us
    try:
        repo_url = api.create_repo(repo_id, repo_type="model", private=settings.private, exist_ok=True)
        log.info("publishing %s to %s (%d files)", model_dir, repo_id, len(files))
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=model_dir,
            commit_message=message,
            ignore_patterns=list(IGNORE_PATTERNS),
        )
        verify_remote(api, repo_id, commit.oid, model_dir, files, hashes=settings.delete_local_after_push)
    except PublishError:
        raise
    except Exception as exc:
        reason = _explain(exc, repo_id, token)
        raise PublishError(f"publishing {name} to {repo_id} failed: {reason}") from None

    log.info("published %s at commit %s", repo_id, commit.oid)
    deleted = False
    if settings.delete_local_after_push:
        shutil.rmtree(model_dir)
        deleted = True
        log.info("deleted %s (verified on the Hub)", model_dir)
    return PushResult(
        repo_id=repo_id,
        url=str(repo_url),
        commit_oid=commit.oid,
        files=tuple(files),
        verified=settings.delete_local_after_push,
        deleted_local=deleted,
        card=card,
    )
