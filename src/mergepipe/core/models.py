"""Model references: resolve them to local directories, inspect them cheaply, name them stably.

Inspection reads only ``config.json`` and safetensors headers (a few kB per file), never the
weights, so pre-flight checks of 8B-parameter models take milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mergepipe.config import ModelRef
from mergepipe.core.plugins import registry
from mergepipe.core.records import MERGE_RECORD
from mergepipe.errors import ModelError

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
ADAPTER_CONFIG = "adapter_config.json"
IDENTITY_EXCLUDED = frozenset({"README.md", MERGE_RECORD})


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference with the local directory holding its files."""

    ref: ModelRef
    local_dir: Path
    kind: str  # "full" or "adapter"
    hub_id: str | None = None  # set when the reference is a Hub id

    @property
    def mergekit_path(self) -> str:
        """How mergekit should name this model: the local directory (no network needed)."""
        return str(self.local_dir)


@dataclass
class ModelHeader:
    """What pre-flight checks need to know about a full model."""

    architectures: tuple[str, ...]
    model_type: str
    vocab_size: int | None
    tensor_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    weight_bytes: int = 0
    config: dict[str, Any] = field(default_factory=dict)


def resolve(ref: ModelRef | str, field_name: str = "model") -> ResolvedModel:
    """Find the files of ``ref`` locally (a plugin's scheme such as ``zoo://``, a directory, or the
    Hub cache), or raise ModelError."""
    if isinstance(ref, str):
        ref = ModelRef(path=ref)
    path = ref.path
    scheme = registry().scheme_for(path)
    if scheme is not None:
        local = Path(scheme.resolve(path))
        return ResolvedModel(ref, local, _kind_of(local, field_name, path))
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelError(f"{field_name}: {path} is a file, not a model directory")
        local = local.resolve()
        return ResolvedModel(ref, local, _kind_of(local, field_name, path))
    if HUB_ID_RE.match(path) and not path.startswith((".", "/")):
        local = _from_hub(path, ref.revision, field_name)
        return ResolvedModel(ref, local, _kind_of(local, field_name, path), hub_id=path)
    raise ModelError(f"{field_name}: model path not found: {path}")


def _from_hub(repo_id: str, revision: str | None, field_name: str) -> Path:
    """Download (or find in the Hub cache) the files of a Hub model."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"]
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise ModelError(
            f"{field_name}: Hub model {repo_id} is not in the local Hub cache and the Hub cannot be "
            "reached (offline?)"
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", "?")
        raise ModelError(f"{field_name}: Hub model {repo_id} could not be fetched (HTTP {status})") from None
    except OSError as exc:
        raise ModelError(f"{field_name}: Hub model {repo_id} could not be fetched: {exc}") from None


def _kind_of(local: Path, field_name: str, shown: str) -> str:
    if (local / ADAPTER_CONFIG).is_file():
        return "adapter"
    if (local / "config.json").is_file():
        return "full"
    raise ModelError(f"{field_name}: {shown} is not a model directory (no config.json or {ADAPTER_CONFIG})")


# -- inspection ------------------------------------------------------------------------------

def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelError(f"{path}: truncated safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise ModelError(f"{path}: corrupt safetensors header")
        try:
            return json.loads(fh.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(f"{path}: corrupt safetensors header") from None


def weight_files(local_dir: Path) -> list[Path]:
    return sorted(p for p in local_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


@cache
def inspect_model(local_dir: Path) -> ModelHeader:
    """Architecture, vocab size and tensor shapes of a full model directory."""
    cfg_path = local_dir / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ModelError(f"{cfg_path}: unreadable or invalid config.json") from None
    text_cfg = cfg.get("text_config") or {}
    info = ModelHeader(
        architectures=tuple(cfg.get("architectures") or ()),
        model_type=str(cfg.get("model_type", "")),
        vocab_size=cfg.get("vocab_size", text_cfg.get("vocab_size")),
        config=cfg,
    )
    files = weight_files(local_dir)
    if not files:
        raise ModelError(f"{local_dir}: no weight files (*.safetensors / *.bin)")
    for wf in files:
        info.weight_bytes += wf.stat().st_size
        if wf.suffix == ".safetensors":
            for name, meta in _safetensors_header(wf).items():
                if name != "__metadata__":
                    info.tensor_shapes[name] = tuple(meta["shape"])
    return info


def fingerprint(local_dir: Path) -> str:
    """A cheap content fingerprint of a model directory.

    Small files (configs, tokenizer, weight files under 64 MiB) are hashed byte for byte; larger
    weight files contribute their name and size only, since hashing them would take minutes for
    large models. The model card and merge record are left out (see IDENTITY_EXCLUDED).
    """
    h = hashlib.sha256()
    for p in sorted(local_dir.iterdir()):
        # The model card and our own records change without the model changing (a card is
        # re-published after evaluation), so they are not part of the model's identity.
        if not p.is_file() or p.name in IDENTITY_EXCLUDED or p.name.startswith("."):
            continue
        h.update(p.name.encode())
        if p.suffix in WEIGHT_SUFFIXES:
            h.update(str(p.stat().st_size).encode())
            if p.stat().st_size < 64 * 2**20:  # small files: hash the bytes themselves
                h.update(_file_digest(p))
        elif p.stat().st_size < 8 * 2**20:
            h.update(p.read_bytes())
    return h.hexdigest()


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.digest()


def model_id(ref: ModelRef | str, resolved: ResolvedModel | None = None) -> str:
    """A stable, filesystem-safe id for results: keeps the Hub organisation, hashes local dirs.

    ``meta-llama/Llama-3-8B`` -> ``meta-llama__Llama-3-8B`` (``@rev`` appended when pinned);
    a local directory ``/x/merged/ties`` -> ``ties-<8 hex of its content fingerprint>``;
    a plugin reference ``zoo://inc`` -> ``zoo-inc-<8 hex>``.
    """
    if isinstance(ref, str):
        ref = ModelRef(path=ref)
    scheme = registry().scheme_for(ref.path)
    if scheme is None and not Path(ref.path).expanduser().exists() and HUB_ID_RE.match(ref.path):
        base = ref.path.replace("/", "__")
        return f"{base}@{_safe(ref.revision)}" if ref.revision else base
    resolved = resolved or resolve(ref)
    stem = scheme.id_stem(ref.path) if scheme is not None else resolved.local_dir.name
    return f"{_safe(stem)}-{fingerprint(resolved.local_dir)[:8]}"


def _safe(text: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text or "")
