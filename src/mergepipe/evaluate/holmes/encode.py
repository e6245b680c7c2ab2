"""Encode Holmes datasets with a frozen model: one feature vector per sample, cached on disk.

A sentence is the attention-mask-aware mean of one layer's hidden states over its tokens; a
token or span is the mean over the sub-tokens whose character offsets overlap it (found with
``return_offsets_mapping``). Pairs are concatenated (BI) or joined and encoded together (CROSS,
joined with ``" <sep> "`` like upstream Holmes, or two spaces when the tokenizer has no sep token).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergepipe.core.atomic import temp_sibling
from mergepipe.core.devices import choose_device
from mergepipe.errors import ModelError
from mergepipe.evaluate.holmes.data import HolmesDataset, Sample

log = logging.getLogger(__name__)

# Bump when the features change for the same model/data/settings (invalidates the cache).
ENCODER_VERSION = "1"

# A pooling request: a whole text (None) or a character range of it.
Span = tuple[int, int] | None


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: torch.device
    num_layers: int
    fingerprint: str
    sep: str  # text between the two sentences of a CROSS pair
    max_positions: int | None = None  # the model's context length, caps max_length


def load_frozen_model(local_dir: Path, kind: str, fingerprint: str, device: str = "auto") -> LoadedModel:
    """Load a full model (AutoModel) or a PEFT adapter merged into its base, in eval mode."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # The frozen encoder drops the LM head on purpose: no load report or progress bars for that.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    dev = torch.device(choose_device(device, "holmes.device"))
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    tok_dir = local_dir
    try:
        if kind == "adapter":
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(local_dir), dtype=dtype).merge_and_unload()
            if not (local_dir / "tokenizer_config.json").is_file():
                cfg = json.loads((local_dir / "adapter_config.json").read_text(encoding="utf-8"))
                tok_dir = Path(cfg["base_model_name_or_path"])
        else:
            model = AutoModel.from_pretrained(str(local_dir), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{local_dir}: cannot load model or tokenizer for probing: {exc}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{local_dir}: probing needs a fast tokenizer (character offsets)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    model.to(dev).eval()
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_layers = int(getattr(cfg, "num_hidden_layers", 0))
    max_positions = getattr(cfg, "max_position_embeddings", None)
    sep = f" {tokenizer.sep_token} " if getattr(tokenizer, "sep_token", None) else "  "
    return LoadedModel(model, tokenizer, dev, num_layers, fingerprint, sep,
                       int(max_positions) if isinstance(max_positions, int) else None)


def check_layer(layer: int, num_layers: int) -> int:
    """hidden_states has num_layers + 1 entries (embeddings first); accept -n-1..n."""
    if not -(num_layers + 1) <= layer <= num_layers:
        raise ModelError(f"holmes.layer {layer} is out of range for a model with {num_layers} layers")
    return layer


def _requests(ds: HolmesDataset, sep: str) -> dict[str, set[Span]]:
    """Which texts to encode and which pooled vectors each must yield."""
    req: dict[str, set[Span]] = {}
    for s in ds.samples:
        if ds.probe_type in ("SENTENCE", "SENTENCE_PAIR_BI"):
            for text in s.texts:
                req.setdefault(text, set()).add(None)
        elif ds.probe_type == "SENTENCE_PAIR_CROSS":
            req.setdefault(sep.join(s.texts), set()).add(None)
        else:
            for t in s.tokens:
                req.setdefault(s.texts[t.context_index], set()).add((t.start, t.end))
    return req


@torch.no_grad()
def _encode_requests(lm: LoadedModel, req: dict[str, set[Span]], layer: int, batch_size: int,
                     max_length: int) -> dict[tuple[str, Span], torch.Tensor]:
    texts = sorted(req, key=len)  # similar lengths per batch: little padding
    if lm.max_positions:
        max_length = min(max_length, lm.max_positions)
    pooled: dict[tuple[str, Span], torch.Tensor] = {}
    fallbacks = 0
    for i in range(0, len(texts), batch_size):
        batch = texts[i:i + batch_size]
        enc = lm.tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                           return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")
        enc = {k: v.to(lm.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        out = lm.model(**enc, output_hidden_states=True)
        states = out.hidden_states[layer].float().cpu()
        mask = enc["attention_mask"].cpu().bool()
        for j, text in enumerate(batch):
            full = states[j][mask[j]].mean(dim=0)
            for span in req[text]:
                if span is None:
                    pooled[(text, span)] = full
                    continue
                start, end = span
                o = offsets[j]
                hit = mask[j] & (o[:, 0] < end) & (o[:, 1] > start) & (o[:, 1] > o[:, 0])
                if hit.any():
                    pooled[(text, span)] = states[j][hit].mean(dim=0)
                else:  # cut off by max_length
                    fallbacks += 1
                    pooled[(text, span)] = full
    if fallbacks:
        log.warning("%d token(s)/span(s) lay beyond max_length; the sentence mean was used for them", fallbacks)
    return pooled


def _features(ds: HolmesDataset, s: Sample, pooled: dict[tuple[str, Span], torch.Tensor], sep: str) -> torch.Tensor:
    if ds.probe_type in ("SENTENCE", "SENTENCE_PAIR_BI"):
        return torch.cat([pooled[(t, None)] for t in s.texts])
    if ds.probe_type == "SENTENCE_PAIR_CROSS":
        return pooled[(sep.join(s.texts), None)]
    vecs = {t: pooled[(s.texts[t.context_index], (t.start, t.end))] for t in s.tokens}
    if ds.probe_type == "SENTENCE_TOKENS":
        return torch.cat([vecs[t] for t in s.tokens])
    groups = sorted({t.group for t in s.tokens})
    return torch.cat([torch.stack([vecs[t] for t in s.tokens if t.group == g]).mean(dim=0) for g in groups])


def cache_key(lm: LoadedModel, ds: HolmesDataset, layer: int, max_length: int) -> str:
    blob = json.dumps([lm.fingerprint, ds.name, ds.content_hash, layer, max_length, ENCODER_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def encode_dataset(lm: LoadedModel, ds: HolmesDataset, layer: int, batch_size: int, max_length: int,
                   cache_dir: Path | None) -> torch.Tensor:
    """Feature matrix [n_samples, dim] (float32) in sample order, from the cache when present."""
    path = None
    if cache_dir is not None:
        path = cache_dir / lm.fingerprint[:16] / f"{ds.name}-{cache_key(lm, ds, layer, max_length)}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(cached, torch.Tensor) and cached.shape[0] == len(ds.samples):
                    return cached
            except (OSError, RuntimeError, EOFError):
                log.warning("ignoring unreadable encoding cache %s", path)
    pooled = _encode_requests(lm, _requests(ds, lm.sep), layer, batch_size, max_length)
    feats = torch.stack([_features(ds, s, pooled, lm.sep) for s in ds.samples]).contiguous()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        torch.save(feats, tmp)
        os.replace(tmp, path)
    return feats
