"""PEFT LoRA adapters as experts: inspect them cheaply and check them against the base model.

An adapter is checked before any merge: it must be a LoRA adapter with a positive rank, every
module it targets must exist in the configured base, and every low-rank factor must fit the
base weight it updates (``lora_B @ lora_A`` has the weight's shape). That last check is what
catches "an adapter for another base": a Llama-3-8B adapter on a Mistral-7B base fails on the
first projection whose width differs. Like the rest of pre-flight, only ``adapter_config.json``
and safetensors headers are read, never the weights.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from mergepipe.core.models import ADAPTER_CONFIG, ModelHeader, ResolvedModel, _safetensors_header, inspect_model
from mergepipe.errors import ModelError

LOG = logging.getLogger(__name__)

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B|embedding_A|embedding_B)(?:\.weight)?$")
_LORA_EXTRA = re.compile(r"\.(lora_magnitude_vector|lora_[A-Za-z_]+)(\.|$)")


@dataclass(frozen=True)
class LoraModule:
    """One module a LoRA adapter updates, in the base model's naming (``model.layers.0.self_attn.q_proj``)."""

    rank: int
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    embedding: bool = False  # lora_embedding_A/B: the base weight is [vocab, dim]

    def update_shape(self) -> tuple[int, int]:
        """The shape of the base weight this module's ``B @ A`` is added to."""
        if self.embedding:  # A: [r, vocab], B: [dim, r]; the update is (B @ A).T
            return (self.a_shape[1], self.b_shape[0])
        return (self.b_shape[0], self.a_shape[1])


@dataclass(frozen=True)
class AdapterInfo:
    local_dir: Path
    peft_type: str
    base_model: str | None  # base_model_name_or_path as written in the adapter
    rank: int  # ``r`` of adapter_config.json
    alpha: float
    target_modules: tuple[str, ...] | str  # a list of names, or a regex (PEFT accepts both)
    modules: dict[str, LoraModule] = field(default_factory=dict)
    saved_modules: dict[str, tuple[int, ...]] = field(default_factory=dict)  # modules_to_save tensors

    @property
    def max_rank(self) -> int:
        return max((m.rank for m in self.modules.values()), default=self.rank)


def _read_config(local_dir: Path, shown: str) -> dict:
    path = local_dir / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{shown}: unreadable or invalid {ADAPTER_CONFIG}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{shown}: {ADAPTER_CONFIG} is not a JSON object")
    return cfg


def _weight_shapes(local_dir: Path, shown: str) -> dict[str, tuple[int, ...]]:
    st, pt = (local_dir / name for name in ADAPTER_WEIGHTS)
    if st.is_file():
        return {k: tuple(v["shape"]) for k, v in _safetensors_header(st).items() if k != "__metadata__"}
    if pt.is_file():  # small file: loading it on the meta device reads no tensor data
        import torch

        try:
            state = torch.load(pt, map_location="meta", weights_only=True)
        except Exception:  # any unreadable pickle is the same user error
            raise ModelError(f"{shown}: adapter_model.bin is unreadable") from None
        return {k: tuple(v.shape) for k, v in state.items()}
    raise ModelError(f"{shown}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")


def inspect_adapter(local_dir: Path, shown: str | None = None) -> AdapterInfo:
    """Read a PEFT adapter's config and tensor shapes; raises ModelError on anything malformed."""
    shown = shown or str(local_dir)
    cfg = _read_config(local_dir, shown)
    peft_type = str(cfg.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise ModelError(
            f"{shown}: a {peft_type or 'unknown'} adapter; only LoRA adapters (peft_type LORA) can be merged"
        )
    rank = cfg.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ModelError(f"{shown}: {ADAPTER_CONFIG} has rank r={rank!r}; a LoRA rank must be a positive integer")
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        targets = tuple(str(t) for t in targets)
    elif not isinstance(targets, str):
        targets = ()
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    saved: dict[str, tuple[int, ...]] = {}
    for key, shape in _weight_shapes(local_dir, shown).items():
        name = key.removeprefix(_PREFIX)
        match = _LORA_KEY.match(name)
        if match:
            parts.setdefault(match["module"], {})[match["part"]] = shape
        elif not _LORA_EXTRA.search(name):  # modules_to_save: full tensors of the base
            saved[name.replace(".modules_to_save", "")] = shape
    modules: dict[str, LoraModule] = {}
    for name, found in sorted(parts.items()):
        emb = "embedding_A" in found or "embedding_B" in found
        a, b = found.get("embedding_A" if emb else "A"), found.get("embedding_B" if emb else "B")
        if a is None or b is None or len(a) != 2 or len(b) != 2 or a[0] != b[1] or a[0] <= 0:
            raise ModelError(f"{shown}: the LoRA factors of {name} are incomplete or of inconsistent rank")
        modules[name] = LoraModule(rank=a[0], a_shape=a, b_shape=b, embedding=emb)
    if not modules:
        raise ModelError(f"{shown}: the adapter holds no LoRA weights (lora_A / lora_B)")
    return AdapterInfo(
        local_dir=local_dir,
        peft_type=peft_type,
        base_model=cfg.get("base_model_name_or_path"),
        rank=rank,
        alpha=float(cfg.get("lora_alpha") or rank),
        target_modules=targets,
        modules=modules,
        saved_modules=saved,
    )


def base_modules(info: ModelHeader) -> dict[str, tuple[int, ...]]:
    """Module name -> weight shape for every ``<module>.weight`` of a full model."""
    return {name.removesuffix(".weight"): shape for name, shape in info.tensor_shapes.items()
            if name.endswith(".weight")}


def matches_target(module: str, targets: tuple[str, ...] | str) -> bool:
    """PEFT's rule: a regex must match the whole name; a list entry must equal a name suffix."""
    if isinstance(targets, str):
        return targets == "all-linear" or re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def _missing_targets(targets: tuple[str, ...] | str, modules: dict[str, tuple[int, ...]]) -> list[str]:
    if isinstance(targets, str):
        return [] if any(matches_target(m, targets) for m in modules) else [targets]
    return [t for t in targets if not any(matches_target(m, (t,)) for m in modules)]


def check_adapter(adapter: ResolvedModel, base: ResolvedModel | None, where: str) -> AdapterInfo:
    """``adapter`` is a LoRA adapter that fits the configured ``base``; raises ModelError otherwise."""
    shown = f"{where} ({adapter.ref.path})"
    if base is None or base.kind != "full":
        raise ModelError(f"{where}: {adapter.ref.path} is a LoRA adapter; set base_model to its base model")
    info = inspect_adapter(adapter.local_dir, shown)
    base_info = inspect_model(base.local_dir)
    if not base_info.tensor_shapes:
        return info  # .bin base: no headers to check shapes against; mergekit will tell
    _check_declared_base(info, base, base_info, shown)
    modules = base_modules(base_info)
    missing = _missing_targets(info.target_modules, modules)
    if missing:
        raise ModelError(
            f"{shown}: target module {missing[0]!r} of the adapter is not in base_model {base.ref.path} "
            f"({len(missing)} missing); is it an adapter for another architecture?"
        )
    for name, module in info.modules.items():
        if name not in modules:
            raise ModelError(f"{shown}: the adapter updates {name}, which base_model {base.ref.path} lacks "
                             "(missing target module; an adapter for another architecture?)")
        want = modules[name]
        got = module.update_shape()
        if tuple(want) != got:
            raise ModelError(
                f"{shown}: {name} has shape {list(want)} in base_model {base.ref.path} but the adapter "
                f"updates a {list(got)} weight; the adapter was trained on another base model"
            )
    for name, shape in info.saved_modules.items():
        if base_info.tensor_shapes.get(name, shape) != shape:
            raise ModelError(
                f"{shown}: saved module tensor {name} has shape {list(shape)} but base_model "
                f"{base.ref.path} has {list(base_info.tensor_shapes[name])}; an adapter for another base"
            )
    return info


def _check_declared_base(info: AdapterInfo, base: ResolvedModel, base_info: ModelHeader, shown: str) -> None:
    """When the adapter names a base we can read locally, its architecture must be the base's."""
    declared = info.base_model
    if not declared:
        return
    if base.hub_id and declared == base.hub_id:
        return
    local = Path(declared).expanduser()
    if not (local / "config.json").is_file():
        if declared not in (base.ref.path, str(base.local_dir)):
            LOG.warning("%s: the adapter names base %s, checked against base_model %s by tensor shapes",
                        shown, declared, base.ref.path)
        return
    if local.resolve() == base.local_dir.resolve():
        return
    try:
        other = inspect_model(local.resolve())
    except ModelError:  # not a readable model (no weights, say): the shape checks still apply
        return
    if (other.architectures, other.model_type) != (base_info.architectures, base_info.model_type):
        raise ModelError(
            f"{shown}: the adapter was trained on {declared} "
            f"({'/'.join(other.architectures) or other.model_type}) but base_model {base.ref.path} is "
            f"{'/'.join(base_info.architectures) or base_info.model_type}; an adapter for another base"
        )


def check_adapters(base: ResolvedModel | None, experts: list[ResolvedModel]) -> dict[int, AdapterInfo]:
    """Check every adapter expert against ``base``; returns {expert index: its info}."""
    if base is not None and base.kind == "remote":  # dry run, base not fetched: nothing to check against
        return {i: inspect_adapter(m.local_dir, f"models[{i}] ({m.ref.path})")
                for i, m in enumerate(experts) if m.kind == "adapter"}
    return {i: check_adapter(m, base, f"models[{i}]") for i, m in enumerate(experts) if m.kind == "adapter"}


def lora_cache_key(mergekit_config: dict) -> str:
    """A content key for mergekit's cache of materialised ``base+adapter`` models.

    mergekit names a cached materialisation after the two *paths* only, so an adapter retrained
    in place would silently reuse the old merge; keying the cache folder by content avoids that.
    """
    import hashlib

    from mergepipe.core.models import fingerprint

    refs = sorted({str(m.get("model", "")) for m in mergekit_config.get("models") or [] if isinstance(m, dict)}
                  | {str(mergekit_config.get("base_model") or "")})
    digest = hashlib.sha256()
    for ref in refs:
        if "+" not in ref:
            continue
        for part in ref.split("+", 1):
            path = Path(part)
            digest.update(part.encode() + (fingerprint(path).encode() if path.is_dir() else b""))
    return digest.hexdigest()[:16]
