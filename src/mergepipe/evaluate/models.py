"""The models of an evaluation: a reference resolved to its files and its results id.

A results id keeps the Hub organisation (``meta-llama__Llama-3-8B``) and hashes local folders
(``ties-1a2b3c4d``), so a re-merged model never inherits an old model's scores. An adapter's id
and content hash cover its base model too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mergepipe.config import ModelRef
from mergepipe.core.models import ADAPTER_CONFIG, fingerprint, model_id, resolve
from mergepipe.errors import ModelError


@dataclass(frozen=True)
class PreparedModel:
    reference: str
    model_id: str
    local_dir: Path
    kind: str  # "full" | "adapter"
    base_dir: Path | None  # an adapter's base model
    revision: str | None  # the Hub commit actually used, or the requested revision
    content_hash: str
    requested_revision: str | None = None  # what the user asked for (part of the model id)


def prepare_model(reference: str, revision: str | None = None) -> PreparedModel:
    """Resolve ``reference`` (dir, Hub id, plugin scheme such as zoo://, adapter) and compute its id."""
    ref = ModelRef(path=reference, revision=revision)
    resolved = resolve(ref, "MODEL")
    base_dir: Path | None = None
    if resolved.kind == "adapter":
        base_dir = adapter_base(resolved.local_dir)
    content = fingerprint(resolved.local_dir)
    if base_dir is not None:
        content = hashlib.sha256((content + fingerprint(base_dir)).encode()).hexdigest()
    snapshot = resolved.local_dir.name if resolved.local_dir.parent.name == "snapshots" else None
    return PreparedModel(
        reference=reference,
        model_id=model_id(ref, resolved),
        local_dir=resolved.local_dir,
        kind=resolved.kind,
        base_dir=base_dir,
        revision=snapshot or revision,
        content_hash=content[:16],
        requested_revision=revision,
    )


def adapter_base(adapter_dir: Path) -> Path:
    """The local folder of the base model a PEFT adapter names (relative to the adapter, absolute,
    or a Hub id in the local cache)."""
    try:
        cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ModelError(f"{adapter_dir}/{ADAPTER_CONFIG}: unreadable") from None
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_dir}/{ADAPTER_CONFIG}: no base_model_name_or_path")
    candidate = (adapter_dir / base) if not Path(base).is_absolute() and (adapter_dir / base).is_dir() else None
    resolved = resolve(str(candidate) if candidate else base, "adapter base model")
    if resolved.kind != "full":
        raise ModelError(f"{adapter_dir}: the adapter's base {base} is not a full model")
    return resolved.local_dir
