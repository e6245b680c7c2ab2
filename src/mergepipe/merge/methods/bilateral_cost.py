"""Which bilateral solver is cheaper for one matrix: operation counts times measured rates.

The exact solver costs two float64 eigendecompositions (``out^3 + in^3``) plus products of
``K * smaller^2 * larger`` and ``K * larger^2 * smaller``; the low-rank solver costs three passes
over each task vector of ``out * in * width`` (float32), thin QRs, and an exact solve in the joint
subspaces (``min(K * width, side)`` per side). Where the factors are not smaller than the matrix
(its smaller side within the budget, several experts) the joint spaces can be as large as the
matrix itself and the low-rank path does more work than the exact one; where the larger side is
big the exact solver's ``larger^3`` eigendecomposition dominates. Neither rule of thumb holds
alone, so the choice is made from the counts.

The rates are seconds per operation fitted on 2 CPU threads to 60 timed (shape, K) cells from
256 x 256 to 4096 x 1024 (``benchmarks/solver_dispatch.py`` re-measures them and reports how
often the choice is wrong and what that costs). Only their ratios matter for the choice; both
solvers give the same answer wherever the factors are complete, so a wrong guess costs time,
never accuracy.
"""

from __future__ import annotations

from typing import NamedTuple


class Operations(NamedTuple):
    """Operation counts of one solve, in the units the rates below are per."""

    float64_products: float = 0.0  # multiply-adds of float64 matrix products
    eigendecompositions: float = 0.0  # sum of n^3 over float64 symmetric eigendecompositions
    float32_products: float = 0.0  # multiply-adds of float32 matrix products
    thin_qrs: float = 0.0  # sum of n * m^2 over thin QRs (one thread, see bilateral._one_cpu_thread)


# Seconds per operation on 2 CPU threads (benchmarks/solver_dispatch.py refits them).
RATES = Operations(float64_products=2.4e-11, eigendecompositions=1.4e-10,
                   float32_products=1.6e-11, thin_qrs=1.2e-10)


def exact_operations(k: int, out_dim: int, in_dim: int) -> Operations:
    """What ``_bilateral_exact`` does on ``k`` stacked ``out_dim x in_dim`` matrices."""
    smaller, larger = min(out_dim, in_dim), max(out_dim, in_dim)
    # Per expert: the two Gram products and the right-hand side; then the two rotations.
    products = k * (4 * smaller * smaller * larger + larger * larger * smaller)
    products += 4 * out_dim * in_dim * (out_dim + in_dim)
    return Operations(float64_products=products, eigendecompositions=out_dim**3 + in_dim**3)


def lowrank_operations(k: int, out_dim: int, in_dim: int, width: int) -> Operations:
    """What ``_bilateral_lowrank`` does with factors of ``width`` columns per expert."""
    joint = k * width
    joint_out, joint_in = min(joint, out_dim), min(joint, in_dim)
    # Per expert: three sketch passes and the tail; the projections into the joint spaces.
    products = k * (4 * out_dim * in_dim * width)
    products += k * (out_dim * joint_out * width + in_dim * joint_in * width + joint_out * width * joint_in)
    products += out_dim * joint_out * joint_in + out_dim * joint_in * in_dim  # U X V^T
    factor_qrs = k * 2 * (2 * out_dim + in_dim) * width * width
    joint_qrs = 2 * (out_dim * joint_out + in_dim * joint_in) * joint
    small = exact_operations(k, joint_out, joint_in)  # the projected problem, solved exactly
    return small._replace(float32_products=products, thin_qrs=factor_qrs + joint_qrs)


def seconds(operations: Operations, rates: Operations = RATES) -> float:
    return sum(count * rate for count, rate in zip(operations, rates))


def prefers_exact(k: int, out_dim: int, in_dim: int, width: int, rates: Operations = RATES) -> bool:
    """True where the exact solver is expected to be at least as fast as the low-rank one."""
    return (seconds(exact_operations(k, out_dim, in_dim), rates)
            <= seconds(lowrank_operations(k, out_dim, in_dim, width), rates))
