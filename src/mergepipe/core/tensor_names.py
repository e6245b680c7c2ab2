"""Which tensors hold one row per vocabulary entry, by name (the one list every stage uses).

Input embeddings (``embed_tokens``, GPT-2's ``wte``, BLOOM's ``word_embeddings``, GPT-NeoX's
``embed_in``) are read by every layer; output heads (``lm_head``, GPT-NeoX's ``embed_out``) write
the logits. Both change shape with the vocabulary, so a vocabulary mismatch shows there.
"""

from __future__ import annotations

INPUT_EMBEDDINGS = ("embed_tokens", "wte", "word_embeddings", "embed_in")
OUTPUT_HEADS = ("lm_head", "embed_out")


def _module(name: str) -> str:
    """The last module name of a tensor or module path: ``model.embed_tokens.weight`` -> ``embed_tokens``."""
    parts = name.removesuffix(".weight").split(".")
    return parts[-1] if parts else name


def is_input_embedding(name: str) -> bool:
    return _module(name) in INPUT_EMBEDDINGS


def is_output_head(name: str) -> bool:
    return _module(name) in OUTPUT_HEADS


def is_vocabulary_tensor(name: str) -> bool:
    return is_input_embedding(name) or is_output_head(name)
