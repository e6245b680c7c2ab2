"""Iso-C and Iso-CTS: Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common
and Task-Specific Subspaces", ICML 2025 (arXiv:2502.04959), Sec. 4.

Both start from the task-arithmetic sum of one weight matrix, ``T = sum_i tau_i`` with
``K`` experts and ``r = min(out, in)``, and replace its spectrum by a flat (isotropic) one.

Iso-C (isotropic merging in the common subspace):
    ``T = U S V^T``,  merged = ``alpha * sigma_bar * U V^T``,  ``sigma_bar = mean(diag S)``.
    Every direction of the sum gets the same weight, so directions only one task uses are no
    longer drowned by the few dominant shared ones.

Iso-CTS (common and task-specific subspaces):
    1. the common subspace is the top ``k`` singular triplets of ``T``,
       ``k = r - K * round((r - floor(f r)) / K)`` with ``f = common_space_fraction``,
       so the remaining ``r - k`` directions split evenly, ``s = (r - k) / K`` per task;
    2. each task's own directions: the top ``s`` singular triplets of
       ``tau_i - U_k U_k^T tau_i`` (its task vector with the common column space projected out);
    3. stack ``[U_k, U_1' .. U_K']`` and ``[V_k, V_1' .. V_K']`` and orthogonalise each by its
       polar factor (``P Q^T`` of its SVD);
    4. merged = ``alpha * sigma_bar * U_perp V_perp^T`` with ``sigma_bar`` the mean of the
       stacked singular values.
    With ``f = 1`` there are no task-specific directions and Iso-CTS is Iso-C.

Vectors, scalars and vocabulary tensors get ``alpha * mean_i tau_i`` (the reference code
averages them and scales the whole merged task vector by ``alpha``).

Defaults: ``common_space_fraction = 0.8`` (the paper and its code). ``alpha = 1.0``: the
reference code chooses alpha on validation data from (0, 3]; mergepipe has no validation data
and takes 1.0, the isotropic matrix at the sum's own mean singular value (FusionBench's ports
use the same default).

Deviation, only for numerically rank-deficient matrices (e.g. LoRA-sized updates): directions
whose singular value is rounding noise get no weight and do not enter ``sigma_bar``; the
reference would give arbitrary null-space directions the full mean singular value.

Cost per matrix: Iso-C one thin SVD of out x in, O(out in r); Iso-CTS adds K SVDs of the
residuals and two of the stacked bases, O((K + 2) out in r).
"""

from __future__ import annotations

import torch
from mergekit.merge_methods.base import BasePolicy, InputContract, TensorGroup
from mergekit.merge_methods.easy_define import merge_method

from mergepipe.merge.methods.deltas import mean_delta, merge_task_vectors, polar_factor, significant, tolerance

ISO_C = "iso_c"
ISO_CTS = "iso_cts"

ISO_C_DEFAULTS: dict[str, float] = {"alpha": 1.0}
ISO_CTS_DEFAULTS: dict[str, float] = {"alpha": 1.0, "common_space_fraction": 0.8}

# Read by mergepipe.merge.catalogue (via mergepipe.merge.methods.CATALOGUE_INFO).
CATALOGUE_INFO = {
    ISO_C: {
        "layout": "delta",
        "description": (
            "Iso-C (Marczak et al., ICML 2025): the task-arithmetic sum with its singular values "
            "replaced by their mean (isotropic), times alpha."
        ),
        "defaults": dict(ISO_C_DEFAULTS),
    },
    ISO_CTS: {
        "layout": "delta",
        "description": (
            "Iso-CTS (Marczak et al., ICML 2025): top directions of the sum plus each expert's own "
            "directions, orthogonalised, isotropic spectrum, times alpha."
        ),
        "defaults": dict(ISO_CTS_DEFAULTS),
    },
}


def _isotropic(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """``sigma_bar * U V^T`` over the directions whose singular value is above ``tol``."""
    mask = significant(s, tol)
    count = mask.sum()
    sigma_bar = (s * mask).sum() / count.clamp_min(1)
    return sigma_bar * (u * mask) @ vh


def iso_c_delta(deltas: torch.Tensor, alpha: float = ISO_C_DEFAULTS["alpha"]) -> torch.Tensor:
    """Iso-C's merged task matrix for stacked task matrices ``deltas`` [K, out, in]."""
    u, s, vh = torch.linalg.svd(deltas.sum(0), full_matrices=False)
    return alpha * _isotropic(u, s, vh, tolerance(deltas))


def subspace_split(rank: int, k: int, common_space_fraction: float) -> tuple[int, int]:
    """(common directions, task-specific directions per task) as in the reference code.

    The task-specific total is rounded to a multiple of K so every task gets the same number.
    """
    common = int(rank * common_space_fraction)
    task_total = round((rank - common) / k) * k
    task_total = min(task_total, (rank // k) * k)  # never more directions than the rank
    return rank - task_total, task_total // k


def iso_cts_delta(
    deltas: torch.Tensor,
    alpha: float = ISO_CTS_DEFAULTS["alpha"],
    common_space_fraction: float = ISO_CTS_DEFAULTS["common_space_fraction"],
) -> torch.Tensor:
    """Iso-CTS's merged task matrix for stacked task matrices ``deltas`` [K, out, in]."""
    if not 0.0 <= common_space_fraction <= 1.0:
        raise ValueError(f"{ISO_CTS}: common_space_fraction must be in [0, 1], got {common_space_fraction}")
    k, out_dim, in_dim = deltas.shape
    tol = tolerance(deltas)
    u, s, vh = torch.linalg.svd(deltas.sum(0), full_matrices=False)
    n_common, per_task = subspace_split(min(out_dim, in_dim), k, common_space_fraction)
    if per_task == 0:  # the common subspace is everything: Iso-C
        return alpha * _isotropic(u, s, vh, tol)
    u_c, s_c, vh_c = u[:, :n_common], s[:n_common], vh[:n_common]
    # Each task's directions outside the common column space.
    residual = deltas - u_c @ (u_c.T @ deltas)
    u_t, s_t, vh_t = torch.linalg.svd(residual, full_matrices=False)
    u_t, s_t, vh_t = u_t[:, :, :per_task], s_t[:, :per_task], vh_t[:, :per_task, :]
    s_all = torch.cat([s_c, s_t.reshape(-1)])
    mask = significant(s_all, tol)
    # Noise-level directions are zeroed before orthogonalising so they cannot rotate the others.
    u_all = torch.cat([u_c, u_t.permute(1, 0, 2).reshape(out_dim, k * per_task)], dim=1) * mask
    v_all = torch.cat([vh_c, vh_t.reshape(k * per_task, in_dim)], dim=0).T * mask
    sigma_bar = (s_all * mask).sum() / mask.sum().clamp_min(1)
    return alpha * sigma_bar * polar_factor(u_all) @ polar_factor(v_all).T


@merge_method(
    name=ISO_C,
    pretty_name="Iso-C",
    reference_url="https://arxiv.org/abs/2502.04959",
    contract=InputContract(base=BasePolicy.REQUIRED),
)
def iso_c_merge(group: TensorGroup, alpha: float = ISO_C_DEFAULTS["alpha"]) -> torch.Tensor:
    return merge_task_vectors(group, ISO_C, lambda d: iso_c_delta(d, alpha), lambda d: mean_delta(d, alpha))


@merge_method(
    name=ISO_CTS,
    pretty_name="Iso-CTS",
    reference_url="https://arxiv.org/abs/2502.04959",
    contract=InputContract(base=BasePolicy.REQUIRED),
)
def iso_cts_merge(
    group: TensorGroup,
    alpha: float = ISO_CTS_DEFAULTS["alpha"],
    common_space_fraction: float = ISO_CTS_DEFAULTS["common_space_fraction"],
) -> torch.Tensor:
    return merge_task_vectors(
        group,
        ISO_CTS,
        lambda d: iso_cts_delta(d, alpha, common_space_fraction),
        lambda d: mean_delta(d, alpha),
    )
