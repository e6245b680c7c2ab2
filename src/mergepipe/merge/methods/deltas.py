"""What the 2025 data-free baselines (``tsv``, ``iso_c``, ``iso_cts``, ``wudi``) share.

Each baseline is a function of the stacked task vectors ``tau_i = theta_i - theta_base`` of one
weight matrix. The glue around that function is the same for all four and lives here:

* Task vectors are formed in at least float32 (bf16 deltas keep about three significant digits),
  on the device mergekit hands the tensors to; the merged tensor is cast back to the base dtype.
* Which tensors get the matrix algorithm: 2-D weights that are not vocabulary tensors. The
  papers' reference code runs the matrix algorithm on every 2-D tensor of a CLIP ViT and averages
  the rest. An LLM adds vocabulary tensors (input embeddings, output heads): one row per token,
  a lookup table or per-token readout rather than a map over a shared input space, so a spectral
  step would trade one token's change against unrelated tokens (and cost an SVD of a
  vocab x hidden matrix per expert). They are merged like vectors: per element.
* Vectors, scalars and vocabulary tensors: ``scale * mean_i tau_i``, the reference code's rule
  for non-matrix parameters (each method passes its own ``scale``).
* Numerically zero singular directions. A singular value below the rank tolerance
  (``max(m, n) * eps * ||tau||``) is rounding noise and its singular vectors are arbitrary; the
  spectral methods drop such components (see :func:`significant` and :func:`polar_factor`) so
  their result does not depend on how LAPACK completes a null space. For full-rank task vectors
  nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from mergekit.merge_methods.base import TensorGroup

from mergepipe.core.tensor_names import is_vocabulary_tensor


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def takes_matrix_path(name: str | None, vocab_axis: int | None, ndim: int) -> bool:
    """True for 2-D weights that are not one row per vocabulary entry."""
    if ndim != 2 or vocab_axis is not None:
        return False
    # Callers that pass names but no vocabulary axis (mergekit's merge_state_dicts): by name.
    return not (name and is_vocabulary_tensor(name))


def mean_delta(deltas: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * mean_i tau_i``: the non-matrix rule of the reference implementations."""
    return deltas.mean(0) * scale


def tolerance(deltas: torch.Tensor) -> torch.Tensor:
    """Singular values at or below this are rounding noise for any of these task vectors.

    ``max(m, n) * eps * max(||tau_i||_F, ||sum_i tau_i||_F)``: the usual matrix-rank tolerance
    with the Frobenius norm as a cheap bound on the largest singular value.
    """
    rows, cols = deltas.shape[-2], deltas.shape[-1]
    norms = torch.linalg.matrix_norm(deltas).amax()
    scale = torch.maximum(norms, torch.linalg.matrix_norm(deltas.sum(0)))
    return scale * max(rows, cols) * torch.finfo(deltas.dtype).eps


def significant(singular_values: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """1.0 where a singular value carries signal, 0.0 where it is rounding noise."""
    return (singular_values > tol).to(singular_values.dtype)


def polar_factor(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor ``P Q^T`` of ``x = P S Q^T`` (the orthogonal Procrustes solution).

    Only the directions with a non-negligible singular value are kept (``x (x^T x)^{+1/2}``):
    for a full-column-rank ``x`` this is the usual polar factor; for a rank-deficient one (two
    experts sharing a direction, or a zero column) the usual factor is not unique and this is
    the minimal, deterministic choice.
    """
    if x.numel() == 0:
        return x.clone()
    p, s, qh = torch.linalg.svd(x, full_matrices=False)
    tol = s.amax() * max(x.shape) * torch.finfo(x.dtype).eps
    return (p * significant(s, tol)) @ qh


def merge_group(group: TensorGroup, method: str, merge: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``base + merge(task vectors)`` for one tensor group, in the base's dtype and device.

    ``merge`` gets the stacked deltas [K, *shape], in float32 at least whatever the storage dtype
    (bf16 deltas lose most of their bits).
    """
    base = group.base.tensor
    experts = group.non_base
    if not experts:
        return base
    if not base.is_floating_point():
        raise TypeError(f"{method} needs floating-point tensors ({group.metadata.name})")
    work = working_dtype(base.dtype)
    base_w = base.to(work)
    deltas = torch.stack([entry.tensor.to(device=base.device, dtype=work) - base_w for entry in experts])
    return (base_w + merge(deltas)).to(base.dtype)


def merge_task_vectors(
    group: TensorGroup,
    method: str,
    matrix_merge: Callable[[torch.Tensor], torch.Tensor],
    other_merge: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """:func:`merge_group` with ``matrix_merge`` for the stacked deltas [K, out, in] of a weight
    matrix and ``other_merge`` for everything else."""
    takes_matrix = takes_matrix_path(group.metadata.name, group.metadata.vocabulary_axis, group.base.tensor.dim())
    return merge_group(group, method, matrix_merge if takes_matrix else other_merge)
