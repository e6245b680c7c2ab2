"""TSV-Merge (TSV-M): Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in
Model Merging", CVPR 2025 (arXiv:2412.00081).

Per weight matrix, with ``K`` experts and ``r = min(out, in)``:

1. Low-rank approximation (the paper's TSV-C step): every task matrix keeps its top
   ``k = r // K`` singular triplets, ``tau_i ~ U_i S_i V_i^T``, so the K pieces fit together
   into rank ``r``.
2. Concatenation: ``U = [U_1 .. U_K]`` (out x Kk), ``S = diag(S_1 .. S_K)``,
   ``V = [V_1 .. V_K]`` (in x Kk).
3. Interference reduction by orthogonalisation: the nearest matrix with orthonormal columns
   (orthogonal Procrustes / polar factor), ``U_perp = P Q^T`` for ``U = P Sigma Q^T``, and the
   same for ``V``.
4. Merged task matrix ``alpha * U_perp S V_perp^T``, added to the base.

Vectors, scalars and vocabulary tensors get ``alpha * mean_i tau_i`` (the reference code
averages non-matrix parameters and then scales the whole merged task vector by ``alpha``).

``alpha`` defaults to 1.0: the authors' code picks it on validation data from (0, 3]; with
orthogonalised directions the task vector keeps each expert's own singular values, so 1.0 adds
them at their fine-tuned strength (FusionBench's port of TSV-M uses the same default).

Deviations, both only for rank-deficient inputs: components whose singular value is numerically
zero (an expert that left the matrix unchanged, LoRA-sized updates) are left out of the stacking,
and the polar factor is the minimal one (see ``deltas.polar_factor``). The reference code stacks
arbitrary null-space vectors there, which makes its result depend on the SVD routine. For
``K > r`` every expert keeps one triplet (the reference keeps none).

Cost per matrix: K thin SVDs of out x in plus two of out x Kk and in x Kk, O(K out in r).
"""

from __future__ import annotations

import torch
from mergekit.merge_methods.base import BasePolicy, InputContract, TensorGroup
from mergekit.merge_methods.easy_define import merge_method

from mergepipe.merge.methods.deltas import mean_delta, merge_task_vectors, polar_factor, significant, tolerance

METHOD_NAME = "tsv"

DEFAULTS: dict[str, float] = {"alpha": 1.0}

# Read by mergepipe.merge.catalogue (via mergepipe.merge.methods.CATALOGUE_INFO).
CATALOGUE_INFO = {
    "layout": "delta",
    "description": (
        "TSV-Merge (Gargiulo et al., CVPR 2025): each expert's top rank/K singular vectors, "
        "orthogonalised across experts, times alpha."
    ),
    "defaults": dict(DEFAULTS),
}


def tsv_delta(deltas: torch.Tensor, alpha: float = DEFAULTS["alpha"]) -> torch.Tensor:
    """The merged task matrix for stacked task matrices ``deltas`` [K, out, in]."""
    k, out_dim, in_dim = deltas.shape
    keep = max(1, min(out_dim, in_dim) // k)
    u, s, vh = torch.linalg.svd(deltas, full_matrices=False)
    u, s, vh = u[:, :, :keep], s[:, :keep], vh[:, :keep, :]
    # Zero (noise-level) components carry nothing of the task vector; masking them keeps their
    # arbitrary singular vectors out of the orthogonalisation.
    s = s * significant(s, tolerance(deltas))
    mask = (s != 0).to(s.dtype)
    u_cat = (u * mask[:, None, :]).permute(1, 0, 2).reshape(out_dim, k * keep)
    v_cat = (vh * mask[:, :, None]).reshape(k * keep, in_dim).T
    u_perp = polar_factor(u_cat)
    v_perp = polar_factor(v_cat)
    return alpha * (u_perp * s.reshape(-1)) @ v_perp.T


@merge_method(
    name=METHOD_NAME,
    pretty_name="TSV-Merge",
    reference_url="https://arxiv.org/abs/2412.00081",
    contract=InputContract(base=BasePolicy.REQUIRED),
)
def tsv_merge(group: TensorGroup, alpha: float = DEFAULTS["alpha"]) -> torch.Tensor:
    return merge_task_vectors(
        group, METHOD_NAME, lambda d: tsv_delta(d, alpha), lambda d: mean_delta(d, alpha)
    )
