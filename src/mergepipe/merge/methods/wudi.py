"""WUDI merging: Cheng et al., "Whoever Started the Interference Should End It: Guiding Data-Free
Model Merging via Task Vectors", ICML 2025 (arXiv:2503.08099).

For a linear layer the rows of a task vector ``tau_i`` (out x in) span, approximately, the inputs
the expert was fine-tuned on (a gradient step is ``sum delta x^T``), so the task vectors stand in
for the data: the interference the merged task vector ``tau_m`` causes on expert ``i``'s inputs is
bounded through ``||(tau_m - tau_i) tau_i^T||_F``. WUDI minimises, per weight matrix,

    L(tau_m) = sum_i  ||(tau_m - tau_i) tau_i^T||_F^2 / ||tau_i||_F^2

by gradient descent with Adam, starting from the task-arithmetic sum ``sum_i tau_i``, and adds
the result to the base with no coefficient. As in the authors' code: Adam (betas 0.9/0.999,
eps 1e-8, no weight decay), learning rate 1e-5, 300 iterations (``iterations``), init = sum.

The gradient is linear in ``tau_m``: ``grad = 2 (tau_m A - C)`` with
``A = sum_i tau_i^T tau_i / ||tau_i||^2`` (in x in), ``C = sum_i tau_i tau_i^T tau_i / ||tau_i||^2``.
It is evaluated without autograd as ``2 (tau_m - tau_0) A + grad_0`` (``tau_0`` the start,
``grad_0`` its gradient taken factor by factor): the large terms do not cancel in float32, and
one iteration costs one out x in x in product (or ``2K`` out x out x in products through the
factors when that is cheaper, i.e. for ``in > 2 K out``). The authors' autograd loop costs
about ``2K`` out x out x in per iteration. For a Llama-3-8B ``down_proj`` (4096 x 14336) and
K = 3 that is ~0.5 PFLOP for 300 iterations, seconds on a GPU; on CPUs WUDI is slow for 7B+
models (use merge.device: cuda).
Adam is re-implemented with torch's update rule, so runs are deterministic and need no autograd.

Vectors, scalars and vocabulary tensors: ``mean_i tau_i`` (as in FusionBench's port; the
authors' ViT script optimises only the attention and MLP weight matrices and leaves everything
else at the base). Vocabulary tensors are per-token tables, see ``deltas``.

K = 1 returns the expert exactly (the gradient at the start is zero, so Adam never moves).
"""

from __future__ import annotations

import torch
from mergekit.merge_methods.base import BasePolicy, InputContract, TensorGroup
from mergekit.merge_methods.easy_define import merge_method

from mergepipe.merge.methods.deltas import mean_delta, merge_task_vectors

METHOD_NAME = "wudi"

DEFAULTS: dict[str, float | int] = {"iterations": 300, "learning_rate": 1e-5}

# Adam's remaining settings: torch's defaults, which the authors' code uses.
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

# Read by mergepipe.merge.catalogue (via mergepipe.merge.methods.CATALOGUE_INFO).
CATALOGUE_INFO = {
    "layout": "delta",
    "description": (
        "WUDI (Cheng et al., ICML 2025): per matrix, Adam on sum_i ||(M - tau_i) tau_i^T||^2 / "
        "||tau_i||^2 from the task-vector sum; data-free, no coefficient."
    ),
    "defaults": dict(DEFAULTS),
}


def _weights(deltas: torch.Tensor) -> torch.Tensor:
    """1 / ||tau_i||_F^2, and 0 for an expert that left the matrix unchanged."""
    energy = deltas.square().sum((1, 2))
    return torch.where(energy > 0, 1.0 / energy.clamp_min(torch.finfo(energy.dtype).tiny), 0.0)


def wudi_objective(merged: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """``sum_i ||(merged - tau_i) tau_i^T||_F^2 / ||tau_i||_F^2``."""
    products = (merged.unsqueeze(0) - deltas) @ deltas.transpose(1, 2)
    return (products.square().sum((1, 2)) * _weights(deltas)).sum()


def wudi_delta(
    deltas: torch.Tensor,
    iterations: int = int(DEFAULTS["iterations"]),
    learning_rate: float = float(DEFAULTS["learning_rate"]),
) -> torch.Tensor:
    """WUDI's merged task matrix for stacked task matrices ``deltas`` [K, out, in]."""
    if iterations < 0:
        raise ValueError(f"{METHOD_NAME}: iterations must be >= 0, got {iterations}")
    k, out_dim, in_dim = deltas.shape
    weights = _weights(deltas)
    start = deltas.sum(0)
    # Gradient at the start, factor by factor: 2 sum_i w_i ((start - tau_i) tau_i^T) tau_i.
    grad_start = torch.zeros_like(start)
    for w, t in zip(weights, deltas):
        grad_start += w * (((start - t) @ t.T) @ t)
    grad_start *= 2.0
    if in_dim <= 2 * k * out_dim:
        gram = torch.einsum("k,kri,krj->ij", weights, deltas, deltas)  # A, in x in

        def times_gram(x: torch.Tensor) -> torch.Tensor:
            return x @ gram
    else:

        def times_gram(x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(x)
            for w, t in zip(weights, deltas):
                out += w * ((x @ t.T) @ t)
            return out

    merged = start.clone()
    exp_avg = torch.zeros_like(start)
    exp_avg_sq = torch.zeros_like(start)
    beta1, beta2 = BETAS
    for step in range(1, iterations + 1):
        grad = 2.0 * times_gram(merged - start) + grad_start
        # torch.optim.Adam's update, written out.
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1**step
        bias2_sqrt = (1 - beta2**step) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(ADAM_EPS)
        merged.addcdiv_(exp_avg, denom, value=-learning_rate / bias1)
    return merged


@merge_method(
    name=METHOD_NAME,
    pretty_name="WUDI",
    reference_url="https://arxiv.org/abs/2503.08099",
    contract=InputContract(base=BasePolicy.REQUIRED),
)
def wudi_merge(
    group: TensorGroup,
    iterations: int = int(DEFAULTS["iterations"]),
    learning_rate: float = float(DEFAULTS["learning_rate"]),
) -> torch.Tensor:
    return merge_task_vectors(
        group, METHOD_NAME, lambda d: wudi_delta(d, iterations, learning_rate), mean_delta
    )
