"""Bilateral consensus merging: the task-vector sum that disturbs no expert on either side.

Every expert ``i`` brings a task vector ``tau_i = theta_i - theta_base``. For each weight matrix
the merged delta ``M`` is the closed-form minimiser of

    sum_i w_i (||(M - tau_i) A_i||_F^2 + o ||B_i (M - tau_i)||_F^2),
    A_i = tau_i^T tau_i,  B_i = tau_i tau_i^T,  w_i = 1 / ||tau_i||_F^4,  o = output_weight

The first term asks ``M`` to act like ``tau_i`` on the inputs expert ``i`` reacts to (the row
space of ``tau_i`` stands in for its input data, as in WUDI); the second asks it to write like
``tau_i`` into the outputs expert ``i`` writes to (its column space). The input side is where
interference costs accuracy, so it leads; the output side (``o`` = 0.25 by default) keeps the
problem well-posed where the experts' input spaces nearly coincide. ``w_i`` gives every expert
the same say whatever the size of its change (``normalize``). Solving both sides at once is a
Sylvester equation that decouples in the eigenbases of the two summed Gram matrices, so it
needs no iterations and no data. It returns the expert for K = 1 or identical experts, and the
plain sum for experts acting on mutually orthogonal inputs and outputs: what one expert learned
alone is added in full, what several learned together is counted once.

* Elements only one expert changed are added as they are (nothing else can interfere there),
  so experts touching disjoint parameters merge to exactly the task-arithmetic sum.
* Vectors (norm gains, biases) and output-head rows (one token per row) use the same
  objective per element / per row, where it reduces to the energy-weighted mean
  ``sum_i |r_i|^2 r_i / sum_i |r_i|^2``. Input-embedding rows add every expert's change to
  the token, divided by how many experts changed it in the same direction. One token's
  update never leaks into another.
* The default solver (``solver: lowrank``) works in the experts' joint row and column
  spaces: each task vector is factored by a randomized range finder to rank ``ceil(rank / K)``
  (``rank`` = 256 per side by default; in full when the matrix's smaller side is at most
  ``rank``), the objective is solved exactly inside the joint subspaces (a ``rank x rank``
  problem) and the part of each task vector outside its factor is averaged over the experts.
  Cost per matrix O(out * in * rank), like TIES linear in the matrix size. When every expert's
  rank fits its share (LoRA experts, narrow matrices) the answer is the exact one. Matrices
  with both sides within ``2 * rank``, and narrow ones where the exact solver is expected to be
  faster (an operation count with measured rates, ``bilateral_cost``), go to the exact solver.
  ``solver: exact`` keeps the full eigendecompositions (O(out^3 + in^3)).
* ``background`` (off by default) adds ``sum_i l_i ||M - tau_i||^2``: an isotropic part of each
  expert's inputs, on which every other expert's delta acts too. It keeps the closed form.
* ``weighting: signal`` (for LoRA experts) weighs each expert's directions above its noise bulk
  (the Gavish-Donoho threshold, ``signal_rank``) by ``sigma / sigma_1`` instead of every
  direction by ``sigma^4 / ||tau||^4``, and averages the bulk over the experts: an adapter's
  weaker directions keep their say among many adapters; on full fine-tunes ``energy`` is better.
  Its output side has its own weight, ``signal_output_weight`` (0.25 by default, as the energy
  weighting's ``output_weight``; docs/methods/bilateral_consensus.md has what 0.5 and 1 do).
  The default, ``weighting: auto``, decides per matrix: ``signal`` where every expert's delta is
  adapter-like (its signal directions at most a quarter of the smaller side, holding most of its
  energy and followed by a spectral gap), else ``energy``.
* ``base_metric_weight`` (off by default) adds, on the signal-weighted matrices, a term that
  reads each expert's row space through the base layer's metric ``W^T W`` (``base_metric_terms``):
  an adapter's row space stands for its task's inputs only in part, and another expert's delta
  is held back on what the base reads together with them. It needs the base tensor, which
  mergekit hands to the method with every group.
* ``presence_exponent`` (0.5 by default; 0 = off) multiplies the solve of each energy-weighted
  matrix by ``(1 / mean_i <M, tau_i> / ||tau_i||^2) ** exponent``: where dense experts overlap
  everywhere the least-squares compromise keeps each only in part, and the factor gives them
  back part of their size. It is 1 in every sanity case above (``presence_scaled``).
* Inputs are upcast to at least float32, the small spectral step runs in float64 (Gram matrices
  square the condition number), on whatever device mergekit hands the tensors to.

docs/methods/bilateral_consensus.md has the derivation, the comparison with TSV-Merge,
Iso-C/Iso-CTS and WUDI, and the cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from mergekit.merge_methods.base import BasePolicy, InputContract, TensorGroup
from mergekit.merge_methods.easy_define import merge_method

from mergepipe.core.tensor_names import is_input_embedding, is_vocabulary_tensor
from mergepipe.merge.methods.bilateral_cost import prefers_exact
from mergepipe.merge.methods.deltas import merge_group

METHOD_NAME = "bilateral_consensus"

Solver = Literal["lowrank", "exact"]
SOLVERS: tuple[str, ...] = ("lowrank", "exact")
Weighting = Literal["auto", "energy", "signal"]
WEIGHTINGS: tuple[str, ...] = ("auto", "energy", "signal")
# ``weighting: auto`` takes the signal weighting on a matrix where every expert's delta is
# adapter-like: its signal directions fill at most this share of the matrix's smaller side.
LOW_RANK_SHARE = 0.25
# ... and those directions hold at least this share of its energy (noise-like deltas do not).
LOW_RANK_ENERGY = 0.5
# ... and its spectrum drops off a cliff after them: the last signal value is at least this many
# times the next one. An adapter's delta has nothing beyond its rank but rounding noise (ratios
# of 1e5 and more on the benchmark's materialised adapters); a full fine-tune's spectrum decays
# smoothly through the threshold (1.01-1.34 on its SGD and AdamW full fine-tunes, whose signal
# directions can fill under a quarter of a matrix and hold 97-99 % of its energy).
LOW_RANK_GAP = 2.0

DEFAULTS: dict[str, float | int | str | bool] = {
    "eps": 1e-12, "solver": "lowrank", "rank": 256, "output_weight": 0.25, "normalize": True,
    "background": 0.0, "weighting": "auto", "signal_output_weight": 0.25, "base_metric_weight": 0.0,
    "presence_exponent": 0.5,
}

# Oversampling of the randomized range finder (Halko, Martinsson & Tropp 2011, sec. 4.2: 5-10
# extra columns make the captured subspace nearly as good as the optimal one).
OVERSAMPLE = 8
# The sketches use one fixed Gaussian test matrix, the same for every expert: merges are
# reproducible, and identical experts get identical factors (so they return that expert).
SKETCH_SEED = 20250615

# Read by mergepipe.merge.catalogue (via mergepipe.merge.methods.CATALOGUE_INFO).
CATALOGUE_INFO = {
    "layout": "delta",
    "description": (
        "Data-free closed-form merge of task vectors that keeps each expert's effect on its own "
        "input and output subspaces (bilateral least squares); no per-task coefficients."
    ),
    "defaults": dict(DEFAULTS),
}


def vocabulary_axis(name: str | None, axis: int | None, ndim: int) -> int | None:
    if ndim != 2:
        return None
    if axis is not None:
        return axis
    # Callers that pass names but no vocabulary axis (mergekit's merge_state_dicts): by name.
    if name and is_vocabulary_tensor(name):
        return 0
    return None


def _tiny(x: torch.Tensor) -> float:
    return torch.finfo(x.dtype).tiny


def _weighted_mean(deltas: torch.Tensor, reduce_dims: tuple[int, ...]) -> torch.Tensor:
    """sum_i e_i tau_i / sum_i e_i with e_i the energy of tau_i over ``reduce_dims``.

    The minimiser of the bilateral objective when every element (or row) is its own problem.
    """
    energy = deltas.square()
    if reduce_dims:
        energy = energy.sum(reduce_dims, keepdim=True)
    total = energy.sum(0)
    return (energy * deltas).sum(0) / total.clamp_min(_tiny(total))


def expert_weights(deltas: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Per expert ``1 / ||tau_i||_F^4`` (``normalize``; 0 for an expert that left the matrix
    unchanged), else 1, in float64: with it, rescaling one expert's task vector does not
    change its say."""
    if not normalize:
        return torch.ones(deltas.shape[0], dtype=torch.float64)
    # One norm per expert, no float64 copy of the stack (that would be 8 bytes per element x K).
    energy = torch.stack([torch.linalg.vector_norm(t).double() for t in deltas]).square()
    # Kept in float64 (on the CPU): 1 / ||tau||^4 of a tiny change overflows float32.
    return torch.where(energy > 0, 1.0 / energy.clamp_min(_tiny(energy)).square(), 0.0).cpu()


def presence(deltas: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
    """Each expert's presence in ``merged``: ``<M, tau_i> / ||tau_i||_F^2`` (float64, one per expert
    that changed the matrix). 1 for an expert that ``M`` carries whole: the expert itself, the
    sum of experts on orthogonal subspaces, a shared part counted once plus the private parts."""
    flat = merged.reshape(-1)
    values = []
    for t in deltas:
        energy = float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2
        if energy > 0:  # one dot product per expert: no out x in temporary
            values.append(float(torch.dot(t.reshape(-1).to(flat), flat)) / energy)
    return torch.tensor(values, dtype=torch.float64)


def presence_scaled(deltas: torch.Tensor, merged: torch.Tensor, exponent: float) -> torch.Tensor:
    """``merged`` times ``(1 / mean_i presence_i) ** exponent`` (``presence_exponent``), unchanged
    where that mean is not positive. Where dense experts' row spaces overlap everywhere the
    least-squares compromise keeps each only in part (mean presence 0.6-0.8 at K = 4 on the
    benchmark's full fine-tunes); exponent 1 gives them back their full size in the mean, 0.5
    half of it in log scale: experts that learned the same skill (each one's presence rightly
    below 1) lose with 1. The directions stay those of the solve, and the factor is 1 in every
    sanity case (one expert, identical experts, experts on orthogonal subspaces, a shared part
    plus private parts)."""
    if not exponent:
        return merged
    values = presence(deltas, merged)
    mean = float(values.mean()) if values.numel() else 0.0
    return merged * (1.0 / mean) ** exponent if mean > 0 else merged


def _bilateral_exact(deltas: torch.Tensor, eps: float, output_weight: float, weights: torch.Tensor,
                     background_per_input: float = 0.0) -> torch.Tensor:
    """Closed-form minimiser for stacked matrices [K, out, in].

    With ``A_i = tau_i^T tau_i``, ``B_i = tau_i tau_i^T``, expert weights ``w_i`` and output
    weight ``o`` the objective ``sum_i w_i (||(M - tau_i) A_i||^2 + o ||B_i (M - tau_i)||^2)``
    has its gradient vanish where ``H M + M G = C``, ``H = o sum_i w_i B_i^2``,
    ``G = sum_i w_i A_i^2``, ``C = (1 + o) sum_i w_i tau_i A_i^2`` (``B_i^2 tau_i = tau_i A_i^2``).
    ``solve_sylvester`` decouples it by the eigendecompositions of ``H`` and ``G``. Where no
    expert acts on either side every task vector is zero, and so is M.

    The background term ``sum_i l_i ||M - tau_i||^2`` with ``l_i = background_per_input * w_i
    tr(A_i^2)`` (``background_per_input`` = background / fan-in) adds ``L = sum_i l_i`` to every
    ``h_a + g_b`` and ``sum_i l_i tau_i`` to ``C``.
    """
    x = deltas.double()
    out_dim, in_dim = x.shape[1], x.shape[2]
    gram_in = x.new_zeros(in_dim, in_dim)
    gram_out = x.new_zeros(out_dim, out_dim)
    rhs = torch.zeros_like(x[0])
    background_rhs = torch.zeros_like(x[0])
    background_total = 0.0
    # Every product is taken in an order that costs O(out * in * (out + in)) per expert: no
    # out^3 or in^3 term besides the two eigendecompositions.
    for weight, t in zip(weights.tolist(), x):
        if weight == 0.0:
            continue
        t3 = (t @ t.T) @ t if out_dim <= in_dim else t @ (t.T @ t)  # B_i tau_i = tau_i A_i
        a2 = t.T @ t3  # A_i^2
        gram_in += weight * a2
        if out_dim <= in_dim or output_weight:
            b2 = t3 @ t.T  # B_i^2
            gram_out += (weight * output_weight) * b2
        rhs += weight * (b2 @ t if out_dim <= in_dim else t @ a2)  # tau_i A_i^2
        if background_per_input:
            share = background_per_input * weight * float(torch.diagonal(a2).sum())  # l_i
            background_total += share
            background_rhs += share * t
    solved = solve_sylvester(gram_out, gram_in, (1.0 + output_weight) * rhs + background_rhs, eps, background_total)
    return solved.to(deltas.dtype)


def solve_sylvester(gram_out: torch.Tensor, gram_in: torch.Tensor, rhs: torch.Tensor, eps: float,
                    shift: float = 0.0) -> torch.Tensor:
    """``M`` with ``H M + M G + shift M = C`` for symmetric PSD ``H`` (out x out), ``G`` (in x in).

    With ``H = P diag(h) P^T`` and ``G = Q diag(g) Q^T``: ``(P^T M Q)_ab = (P^T C Q)_ab / (h_a + g_b
    + shift)``; pairs whose denominator is below eps of the largest are directions no expert acts
    on, and M is 0 there."""
    h, p = torch.linalg.eigh(gram_out)
    g, q = torch.linalg.eigh(gram_in)
    denom = h.clamp_min(0)[:, None] + g.clamp_min(0)[None, :] + shift
    rotated = p.T @ rhs @ q
    solved = torch.where(denom > eps * denom.max(), rotated / denom.clamp_min(_tiny(denom)), 0.0)
    return p @ solved @ q.T


def _bottom_energy_share(beta: float, fraction: float, points: int = 4096) -> float:
    """The share of a pure-noise matrix's energy held by its smallest ``fraction`` of squared
    singular values, under the Marchenko-Pastur law with aspect ratio ``beta`` <= 1 (numerical
    quadrature on its support)."""
    if fraction <= 0.0:
        return 0.0
    if fraction >= 1.0:
        return 1.0
    low, high = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2
    grid = torch.linspace(low, high, points + 1, dtype=torch.float64)
    mid = (grid[1:] + grid[:-1]) / 2
    density = torch.sqrt(((high - mid) * (mid - low)).clamp_min(0)) / (2 * math.pi * beta * mid)
    count = torch.cumsum(density, 0)
    energy = torch.cumsum(density * mid, 0)
    below = int(torch.searchsorted(count / count[-1], torch.tensor(fraction, dtype=torch.float64)))
    return float(energy[min(below, points - 1)] / energy[-1])


def signal_rank(spectrum: torch.Tensor, out_dim: int, in_dim: int, tail_energy: float | None = None) -> int:
    """How many leading singular values of one task matrix stand above its noise bulk.

    The Gavish-Donoho hard threshold (Gavish & Donoho 2014): with the whole spectrum, for an
    unknown noise level, ``omega(beta) * median`` (their eq. 5's cubic fit of ``omega``); with
    only the leading values (a low-rank factor) and the energy ``tail_energy`` the factor leaves
    out, the noise's per-element variance is estimated from that energy and the threshold is
    ``lambda*(beta) * sqrt(larger side) * noise std`` (their known-noise threshold). Never
    below 1e-6 of the largest value: an exactly low-rank delta (a LoRA adapter) keeps its rank.
    ``spectrum`` is sorted in descending order."""
    if spectrum.numel() == 0 or float(spectrum[0]) <= 0.0:
        return 0
    smaller, larger = min(out_dim, in_dim), max(out_dim, in_dim)
    beta = smaller / larger
    if tail_energy is None:
        omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
        threshold = omega * float(spectrum.median())
    else:
        # The factor holds the largest values, noise ones included: the energy it leaves out is
        # the bottom of the noise bulk, whose share of the bulk's energy the Marchenko-Pastur law gives.
        share = _bottom_energy_share(beta, (smaller - spectrum.numel()) / smaller)
        noise_variance = max(tail_energy, 0.0) / (share * smaller * larger) if share > 0 else 0.0
        optimal = math.sqrt(2 * (beta + 1) + 8 * beta / (beta + 1 + math.sqrt(beta**2 + 14 * beta + 1)))
        threshold = optimal * math.sqrt(larger * noise_variance)
    threshold = max(threshold, 1e-6 * float(spectrum[0]))
    return int((spectrum > threshold).sum())


Factor = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (left [out, r], singular values [r], right [in, r])


def is_low_rank(spectrum: torch.Tensor, kept: int, energy: float, out_dim: int, in_dim: int,
                complete: bool = True) -> bool:
    """Whether a delta is adapter-like (``weighting: auto``): its ``kept`` signal directions (of
    the leading values ``spectrum``, out of its total ``energy``) fit in ``LOW_RANK_SHARE`` of the
    smaller side, hold most of its energy (a pure-noise delta has no signal directions, and is
    no adapter) and end in a gap (``LOW_RANK_GAP``: a full fine-tune's spectrum has none). With a
    factor that is not ``complete``, the factor must also hold more than the signal: a factor
    filled with signal may hide more of it."""
    if energy <= 0.0:
        return True  # an expert that left the matrix unchanged constrains nothing
    fits = kept <= LOW_RANK_SHARE * min(out_dim, in_dim) and (complete or kept < spectrum.numel())
    if not fits or float(spectrum[:kept].double().square().sum()) < LOW_RANK_ENERGY * energy:
        return False
    following = float(spectrum[kept]) if kept < spectrum.numel() else 0.0
    return float(spectrum[kept - 1]) >= LOW_RANK_GAP * following


def _energy64(t: torch.Tensor) -> float:
    """``||t||_F^2`` from per-row norms summed in float64: the energy a factor leaves out is this
    minus the factor's, and a float32 norm of a whole large matrix is off by up to 1 % (measured
    on 14336 x 4096), which then reads as a noise bulk, or as none. Per-row norms are exact to
    about 1e-8 and cost a single pass."""
    return float(torch.linalg.vector_norm(t, dim=1).double().square().sum())


def _factor_signal(x: torch.Tensor, factors: list[Factor], complete: bool) -> tuple[list[int], bool]:
    """Each expert's signal rank from its factor (a complete factor has the whole spectrum, for the
    threshold's median form; otherwise the noise level comes from the energy the factor leaves
    out), and whether every expert is adapter-like there (``is_low_rank``)."""
    out_dim, in_dim = x.shape[1:]
    kept, adapter_like = [], True
    for t, (_, s, _) in zip(x, factors):
        energy = _energy64(t)
        left_out = None if complete else energy - float(s.double().square().sum())
        kept.append(signal_rank(s, out_dim, in_dim, left_out))
        adapter_like = adapter_like and is_low_rank(s, kept[-1], energy, out_dim, in_dim, complete)
    return kept, adapter_like


def _gram_spectrum(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The singular values of ``t`` (descending, float64) and the matching singular vectors of its
    smaller side, from the eigendecomposition of its smaller Gram matrix: a fraction of an SVD's
    cost, and exact to about 1e-8 of the largest value, far below what the signal-rank rule
    resolves (its floor is 1e-6)."""
    x = t.double()
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    values, vectors = torch.linalg.eigh(gram)
    return values.flip(0).clamp_min(0).sqrt(), vectors.flip(1)


def _signal_factor(t: torch.Tensor, s: torch.Tensor, vectors: torch.Tensor, kept: int) -> Factor:
    """The leading ``kept`` singular triplets of ``t`` (float64) from ``_gram_spectrum``: the
    other side's vectors are ``t v / s``, exact for the directions above the threshold."""
    s = s[:kept]
    if t.shape[0] >= t.shape[1]:  # vectors are the right singular vectors
        right = vectors[:, :kept]
        return (t @ right) / s, s, right
    left = vectors[:, :kept]
    return left, s, (t.T @ left) / s


def _spectra_adapter_like(spectra: list[tuple[torch.Tensor, torch.Tensor]], out_dim: int, in_dim: int) -> bool:
    """Every expert adapter-like, from ``_gram_spectrum``'s full spectra (``weighting: auto`` on
    small matrices)."""
    return all(is_low_rank(s, signal_rank(s, out_dim, in_dim), float(s.square().sum()), out_dim, in_dim)
               for s, _ in spectra)


def auto_weighting(deltas: torch.Tensor, rank: int) -> str:
    """What ``weighting: auto`` takes on a [K, out, in] stack: ``signal`` where every expert is
    adapter-like, else ``energy``. Small matrices (both sides within ``2 * rank``) decide on full
    spectra; larger ones on the low-rank solver's factors, whichever solver then runs, so both
    solvers take the same weighting."""
    out_dim, in_dim = deltas.shape[1:]
    if max(out_dim, in_dim) <= 2 * rank:
        return "signal" if _spectra_adapter_like([_gram_spectrum(t) for t in deltas], out_dim, in_dim) else "energy"
    x = deltas.float() if deltas.dtype != torch.float64 else deltas
    factors, complete = _expert_factors(x, rank)
    return "signal" if _factor_signal(x, factors, complete)[1] else "energy"


def signal_system(factors: list[Factor], out_dim: int, in_dim: int, output_weight: float, like: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``H``, ``G`` and ``C / (1 + o)`` of the signal weighting (``_solve_signal``), in float64."""
    gram_in = like.new_zeros(in_dim, in_dim, dtype=torch.float64)
    gram_out = like.new_zeros(out_dim, out_dim, dtype=torch.float64)
    rhs = like.new_zeros(out_dim, in_dim, dtype=torch.float64)
    for left, s, right in factors:
        if s.numel() == 0:
            continue
        weight = s / s[0]
        gram_in += (right * weight) @ right.T
        gram_out += output_weight * ((left * weight) @ left.T)
        rhs += (left * (s * weight)) @ right.T
    return gram_out, gram_in, rhs


def _solve_signal(factors: list[Factor], out_dim: int, in_dim: int, output_weight: float, eps: float,
                  like: torch.Tensor, reader: torch.Tensor | None = None,
                  base_metric_weight: float = 0.0) -> torch.Tensor:
    """The bilateral minimiser with ``weighting: signal``, in float64, from each expert's signal
    factors: ``H = o sum_i L_i F_i L_i^T``, ``G = sum_i R_i F_i R_i^T``,
    ``C = (1 + o) sum_i L_i S_i F_i R_i^T`` with ``F_i = S_i / s_i1`` (each signal direction
    weighted by its singular value relative to the expert's largest: scale-free, as ``normalize``
    is for the energy weighting).

    With ``base_metric_weight`` and ``reader`` (the base matrix in the factors' input
    coordinates) each expert also gets the base-metric term (``base_metric_terms``)."""
    gram_out, gram_in, rhs = signal_system(factors, out_dim, in_dim, output_weight, like)
    rhs *= 1.0 + output_weight
    if base_metric_weight and reader is not None:
        extra_gram, extra_rhs = base_metric_terms(factors, reader, base_metric_weight)
        gram_in += extra_gram
        rhs += extra_rhs
    return solve_sylvester(gram_out, gram_in, rhs, eps)


def base_metric_terms(factors: list[Factor], reader: torch.Tensor, strength: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``base_metric_weight`` adds to the signal solve's ``G`` and ``C`` (float64).

    An adapter's row space stands for its task's inputs only in part (its input factor starts
    random); those inputs also reach the directions the base layer reads together with them.
    With ``S = P_V W^T W P_V`` (the base matrix ``W``'s metric on the experts' joint signal row
    space ``V``, scaled to mean eigenvalue 1) expert ``i``'s inputs are read as ``S R_i``, and
    the term ``sum_i ||(M - tau_i) C_i^(1/2)||^2``, ``C_i = S R_i R_i^T S`` scaled to
    ``strength * sum_j F_ij`` (the trace of the expert's own signal term), asks the merge to act
    like ``tau_i`` there too: another expert's delta that reads what the base metric couples to
    expert ``i``'s inputs is held back. It adds ``sum_i C_i`` to ``G`` and ``sum_i tau_i C_i`` to
    ``C``. Experts with identical factors still return the expert, and experts whose outputs are
    orthogonal and whose row spaces are orthogonal in the base metric (``R_i^T S R_j = 0``) still
    merge to their sum. Staying inside ``V`` keeps the low-rank solver's answer equal to the
    exact one's."""
    rights = [right for _, s, right in factors if s.numel()]
    first = factors[0][2]
    gram = first.new_zeros(first.shape[0], first.shape[0], dtype=torch.float64)
    rhs = first.new_zeros(factors[0][0].shape[0], first.shape[0], dtype=torch.float64)
    if not rights:
        return gram, rhs
    joint, _ = torch.linalg.qr(torch.cat(rights, 1).double())
    read = reader.double() @ joint
    inner = read.T @ read
    trace = float(torch.diagonal(inner).sum())
    if not trace > 0.0:  # a zero base layer reads nothing
        return gram, rhs
    metric = joint @ (inner * (joint.shape[1] / trace)) @ joint.T
    for left, s, right in factors:
        if s.numel() == 0:
            continue
        reach = metric @ right.double()  # expert i's inputs, as the base layer reads them
        coupling = reach @ reach.T
        size = float(torch.diagonal(coupling).sum())
        if not size > 0.0:
            continue
        coupling *= strength * float((s / s[0]).sum()) / size
        gram += coupling
        rhs += ((left.double() * s.double()) @ right.double().T) @ coupling
    return gram, rhs


def _signal_exact(deltas: torch.Tensor, eps: float, output_weight: float,
                  spectra: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                  base: torch.Tensor | None = None, base_metric_weight: float = 0.0) -> torch.Tensor:
    """``weighting: signal`` with full spectra: each expert's directions above its Gavish-Donoho
    threshold enter the objective, weighted by ``sigma / sigma_1``; what lies below (its noise
    bulk) is averaged over the experts, as the low-rank solver averages what its factors leave
    out, so identical experts still return the expert."""
    x = deltas.double()
    factors: list[Factor] = []
    below = torch.zeros_like(x[0])
    for t, (s, vectors) in zip(x, spectra if spectra is not None else map(_gram_spectrum, x)):
        left, s, right = _signal_factor(t, s, vectors, signal_rank(s, *t.shape))
        factors.append((left, s, right))
        below += t - (left * s) @ right.T
    merged = _solve_signal(factors, x.shape[1], x.shape[2], output_weight, eps, x, base,
                           base_metric_weight) + below / x.shape[0]
    return merged.to(deltas.dtype)


@contextmanager
def _one_cpu_thread(like: torch.Tensor) -> Iterator[None]:
    """Thin QRs and small SVDs / eigendecompositions on one CPU thread.

    They are memory-bound and gain nothing from threads, but on a machine whose cores other
    processes share, a multi-threaded LAPACK call can wait 10-100x longer in its thread barriers
    than it computes (measured: a 4096 x 40 QR took 0.24 s on two busy cores, 7 ms on one). The
    large matrix products around them keep every thread.
    """
    threads = torch.get_num_threads()
    if like.device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _sketch_matrix(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SKETCH_SEED)
    return torch.randn(rows, cols, generator=generator, dtype=torch.float32).to(like)


def _factor(t: torch.Tensor, share: int, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``t ~ L diag(s) R^T`` with at most ``share`` columns: the randomized range finder with one
    power iteration (Halko et al. 2011, Alg. 4.4), three passes over ``t``, all matrix products.
    Exact when ``rank(t) <= share``."""
    sample = t @ omega
    with _one_cpu_thread(t):
        q_left, _ = torch.linalg.qr(sample)
    sample = t.T @ q_left
    with _one_cpu_thread(t):
        q_right, _ = torch.linalg.qr(sample)
    sample = t @ q_right
    with _one_cpu_thread(t):
        q_left, core = torch.linalg.qr(sample)  # t q_right q_right^T = q_left core q_right^T
        a, s, bt = torch.linalg.svd(core.double())
    keep = min(share, s.numel())
    return q_left @ a[:, :keep].to(t), s[:keep], q_right @ bt[:keep].T.to(t)


def _expert_factors(x: torch.Tensor, rank: int) -> tuple[list[Factor], bool]:
    """Every expert's factor at the budget ``rank`` (one shared sketch), and whether the factors
    are complete (the whole spectrum: the smaller side fits the expert's share)."""
    k, out_dim, in_dim = x.shape
    share, width = factor_size(k, out_dim, in_dim, rank)
    omega = _sketch_matrix(in_dim, width, x)
    return [_factor(t, share, omega) for t in x], share >= min(out_dim, in_dim)


def factor_size(k: int, out_dim: int, in_dim: int, rank: int) -> tuple[int, int]:
    """(share, width): the rank each expert's factor keeps and the sketch's column count.

    A matrix whose smaller side fits the budget is factored in full (exact factors): the joint
    spaces then have at most K * smaller columns, whatever the larger side."""
    smaller = min(out_dim, in_dim)
    share = smaller if smaller <= rank else max(1, math.ceil(rank / k))
    return share, min(share + OVERSAMPLE, out_dim, in_dim)


def uses_exact_solver(k: int, out_dim: int, in_dim: int, rank: int) -> bool:
    """Whether ``solver: lowrank`` solves a [k, out_dim, in_dim] stack with the exact solver.

    Always when both sides are within twice the budget (two eigendecompositions of at most
    ``2 rank``: cheap, and the exact answer where truncated factors would approximate it); else
    where the exact solver is expected to be faster (``bilateral_cost``: narrow matrices whose
    factors are complete, so both give the same answer, and the joint spaces of several experts
    nearly as large as the matrix)."""
    if max(out_dim, in_dim) <= 2 * rank:
        return True
    return prefers_exact(k, out_dim, in_dim, factor_size(k, out_dim, in_dim, rank)[1])


def _bilateral_lowrank(deltas: torch.Tensor, eps: float, rank: int, output_weight: float,
                       weights: torch.Tensor, background: float = 0.0, weighting: str = "energy",
                       signal_output_weight: float = 0.25, base: torch.Tensor | None = None,
                       base_metric_weight: float = 0.0, presence_exponent: float = 0.0) -> torch.Tensor:
    """The bilateral minimiser restricted to the experts' joint subspaces, for [K, out, in].

    Every task vector is factored to rank ``ceil(rank / K)`` (in full when its smaller side is at
    most ``rank``); ``U`` and ``V`` are orthonormal bases of the joint column and row spaces of
    the factors (at most ``rank``, resp. ``K * smaller side``, columns each). The
    objective is then solved exactly for ``M = U X V^T`` (``H`` and ``G`` act inside ``U`` and
    ``V`` only), a problem of size ``rank x rank``. What each factor leaves out of its task
    vector (the weak tail of its spectrum) is averaged over the experts: in the exact solution
    those directions are weighted means of the experts' tails, and the mean keeps "identical
    experts return the expert" exact (with a background term, the mean weighted like the
    background, as the exact solution weighs them where no expert's Gram matrix acts). Cost
    O(out * in * rank) in float32 matrix products plus O(rank^3) in float64
    (O(K * out * in * smaller) and O((K * smaller)^3) for a narrow matrix).

    With ``weighting: signal`` each factor is cut to the expert's signal directions
    (``signal_rank`` from the factor's values and the energy it leaves out) before the joint
    bases are taken, and the rest of each task vector joins the averaged tail. ``weighting:
    auto`` does so where every expert's factor is adapter-like (``is_low_rank``), and solves
    with the energy weighting otherwise. The signal solve uses ``signal_output_weight``, the
    energy one ``output_weight``; ``presence_exponent`` scales the energy solve (``presence_scaled``).
    """
    in_dim = deltas.shape[2]
    x = deltas.float() if deltas.dtype != torch.float64 else deltas
    lefts, spectra, rights = [], [], []
    # What the factors leave out, averaged over the experts; with a background term weighted by
    # each expert's l_i (w_i tr(A_i^2) = w_i sum s_i^4: the factors keep each expert's spectrum).
    tail = torch.zeros_like(x[0])
    tail_weights = []
    # l_i up to a common factor (in units of the largest expert and the largest weight), so that
    # the float32 accumulation neither underflows for tiny task vectors nor overflows.
    unit = max(float(torch.linalg.vector_norm(t)) for t in x) if background else 1.0
    top_weight = max(float(weights.max()), 0.0)
    factors, complete = _expert_factors(x, rank)
    if weighting != "energy":
        kept, adapter_like = _factor_signal(x, factors, complete)
        if weighting == "auto":
            weighting = "signal" if adapter_like else "energy"
        if weighting == "signal":
            factors = [(left[:, :n], s[:n], right[:, :n]) for n, (left, s, right) in zip(kept, factors)]
    signal = weighting == "signal"
    for weight, t, (left, s, right) in zip(weights.tolist(), x, factors):
        lefts.append(left)
        spectra.append(s)
        rights.append(right)
        if background and unit and top_weight:
            tail_weight = weight / top_weight * float((s.double() / unit).pow(4).sum())
        else:
            tail_weight = 1.0
        tail_weights.append(tail_weight)
        tail.add_(t, alpha=tail_weight)  # in place, no out x in temporary besides the product
        tail.sub_((left * s.to(left)) @ right.T, alpha=tail_weight)
    with _one_cpu_thread(x):
        u, _ = torch.linalg.qr(torch.cat(lefts, 1))
        v, _ = torch.linalg.qr(torch.cat(rights, 1))
    averaged_tail = tail / max(sum(tail_weights), _tiny(tail))
    if signal:
        if u.shape[1] == 0 or v.shape[1] == 0:  # no expert has a direction above its noise bulk
            return averaged_tail.to(deltas.dtype)
        projected = [((u.T @ left).double(), s.double(), (v.T @ right).double())
                     for left, s, right in zip(lefts, spectra, rights)]
        # The base matrix in the joint row space's coordinates: the base-metric term lives there.
        reader = base.to(x) @ v if base is not None and base_metric_weight else None
        with _one_cpu_thread(x):
            solved = _solve_signal(projected, u.shape[1], v.shape[1], signal_output_weight, eps, x, reader,
                                   base_metric_weight).to(x)
        return ((u @ solved) @ v.T + averaged_tail).to(deltas.dtype)
    small = torch.stack([
        ((u.T @ left).double() * s) @ (right.T @ v).double() for left, s, right in zip(lefts, spectra, rights)
    ])
    with _one_cpu_thread(x):
        solved = _bilateral_exact(small, eps, output_weight, weights, background / in_dim).to(x)
    merged = (u @ solved) @ v.T + averaged_tail
    return presence_scaled(x, merged, presence_exponent).to(deltas.dtype)


def _bilateral(deltas: torch.Tensor, options: Options, base: torch.Tensor | None = None) -> torch.Tensor:
    # The weights come from the full task vectors, so both solvers weigh the experts alike.
    weights = expert_weights(deltas, options.normalize)
    # The low-rank solver hands small matrices, and narrow ones where that is faster, to the
    # exact one (uses_exact_solver).
    k, out_dim, in_dim = deltas.shape
    weighting = options.weighting
    if weighting == "auto":
        if max(out_dim, in_dim) <= 2 * options.rank:
            # Small matrices decide on full spectra; the signal solve reuses them.
            spectra = [_gram_spectrum(t) for t in deltas]
            if _spectra_adapter_like(spectra, out_dim, in_dim):
                return _signal_exact(deltas, options.eps, options.signal_output_weight, spectra, base,
                                     options.base_metric_weight)
            weighting = "energy"
        elif options.solver == "lowrank":
            # Decided on the factors the low-rank solver takes anyway (auto_weighting's rule).
            return _bilateral_lowrank(deltas, options.eps, options.rank, options.output_weight, weights,
                                      weighting="auto", signal_output_weight=options.signal_output_weight,
                                      base=base, base_metric_weight=options.base_metric_weight,
                                      presence_exponent=options.presence_exponent)
        else:
            weighting = auto_weighting(deltas, options.rank)
    if weighting == "signal":
        # bilateral_cost's rates are those of the energy weighting's Gram products; this exact
        # path takes one eigendecomposition of each expert's smaller Gram matrix, so beyond small
        # matrices the low-rank path (exact too when its factors are complete) is the cheaper one.
        if options.solver == "exact" or max(out_dim, in_dim) <= 2 * options.rank:
            return _signal_exact(deltas, options.eps, options.signal_output_weight, base=base,
                                 base_metric_weight=options.base_metric_weight)
        return _bilateral_lowrank(deltas, options.eps, options.rank, options.output_weight, weights,
                                  weighting="signal", signal_output_weight=options.signal_output_weight,
                                  base=base, base_metric_weight=options.base_metric_weight)
    if options.solver == "exact" or uses_exact_solver(k, out_dim, in_dim, options.rank):
        merged = _bilateral_exact(deltas, options.eps, options.output_weight, weights,
                                  options.background / deltas.shape[2])
        return presence_scaled(deltas, merged, options.presence_exponent)
    return _bilateral_lowrank(deltas, options.eps, options.rank, options.output_weight, weights, options.background,
                              presence_exponent=options.presence_exponent)


def _aligned_sum(rows: torch.Tensor) -> torch.Tensor:
    """Per row of [K, rows, width]: sum_i r_i / m_i with m_i = sum_j |cos(r_i, r_j)|^4.

    ``m_i`` counts the experts whose change to this token points the same way as expert i's:
    1 when no other change is aligned with it, K when all are identical. The fourth power
    makes only near-parallel changes count as shared (|cos| 0.4 adds 0.03, 0.9 adds 0.66).
    """
    # Only [rows, K, K] intermediates: a Llama-3 embedding with K = 8 is already 17 GB of deltas.
    gram = torch.einsum("irw,jrw->rij", rows, rows)
    norms = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(0).sqrt()  # [rows, K]
    cosine = gram / (norms[:, :, None] * norms[:, None, :]).clamp_min(_tiny(norms))
    multiplicity = cosine.abs().pow(4).sum(2)
    weight = torch.where(norms > 0, 1.0 / multiplicity.clamp_min(_tiny(multiplicity)), 0.0)
    return torch.einsum("rk,krw->rw", weight, rows)


@dataclass(frozen=True)
class Options:
    """The method's parameters (see DEFAULTS), checked on construction."""

    eps: float = 1e-12
    solver: str = "lowrank"
    rank: int = 256
    output_weight: float = 0.25
    normalize: bool = True
    background: float = 0.0
    weighting: str = "auto"
    signal_output_weight: float = 0.25
    base_metric_weight: float = 0.0
    presence_exponent: float = 0.5

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"{METHOD_NAME}: solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"{METHOD_NAME}: weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"{METHOD_NAME}: rank must be a whole number >= 1, got {self.rank!r}")
        if not math.isfinite(self.output_weight) or self.output_weight < 0:
            raise ValueError(f"{METHOD_NAME}: output_weight must be a finite number >= 0, got {self.output_weight!r}")
        if not math.isfinite(self.signal_output_weight) or self.signal_output_weight < 0:
            raise ValueError(f"{METHOD_NAME}: signal_output_weight must be a finite number >= 0, "
                             f"got {self.signal_output_weight!r}")
        if not math.isfinite(self.base_metric_weight) or self.base_metric_weight < 0:
            raise ValueError(f"{METHOD_NAME}: base_metric_weight must be a finite number >= 0, "
                             f"got {self.base_metric_weight!r}")
        if (isinstance(self.presence_exponent, bool) or not isinstance(self.presence_exponent, int | float)
                or not 0 <= self.presence_exponent <= 1):
            raise ValueError(f"{METHOD_NAME}: presence_exponent must be a number in [0, 1], "
                             f"got {self.presence_exponent!r}")
        if not math.isfinite(self.background) or self.background < 0:
            raise ValueError(f"{METHOD_NAME}: background must be a finite number >= 0, got {self.background!r}")
        if self.weighting == "energy" and self.base_metric_weight:
            raise ValueError(f"{METHOD_NAME}: base_metric_weight applies to weighting: signal or auto only, got "
                             f"base_metric_weight {self.base_metric_weight!r} with weighting: energy")
        if self.weighting != "energy" and self.background:
            raise ValueError(f"{METHOD_NAME}: background applies to weighting: energy only, got background "
                             f"{self.background!r} with weighting: {self.weighting}")


def _merge_shared(deltas: torch.Tensor, axis: int | None, input_embedding: bool, options: Options,
                  base: torch.Tensor | None = None) -> torch.Tensor:
    if deltas.dim() <= 2:  # scalars and vectors: per element
        return _weighted_mean(deltas, ())
    if axis is not None:  # vocabulary rows: per row
        moved = deltas.movedim(axis + 1, 1)
        rows = moved.reshape(moved.shape[0], moved.shape[1], -1)
        merged = _aligned_sum(rows) if input_embedding else _weighted_mean(rows, (2,))
        return merged.reshape(moved.shape[1:]).movedim(0, axis)
    k = deltas.shape[0]
    matrices = deltas.reshape(k, deltas.shape[1], -1)  # conv-like weights: flatten the fan-in
    base_matrix = base.reshape(base.shape[0], -1) if base is not None else None
    return _bilateral(matrices, options, base_matrix).reshape(deltas.shape[1:])


def bilateral_delta(
    deltas: torch.Tensor,
    *,
    name: str | None = None,
    vocab_axis: int | None = None,
    options: Options | None = None,
    base: torch.Tensor | None = None,
    **parameters: float | int | str | bool,
) -> torch.Tensor:
    """The merged task vector for stacked expert task vectors ``deltas`` [K, *shape].

    ``options``, or the method's parameters by name (``solver="exact"``, ...). ``base`` (the base
    tensor, shaped like one task vector) is needed by ``base_metric_weight`` > 0 only."""
    options = options or Options(**parameters)  # type: ignore[arg-type]
    if options.base_metric_weight and base is None:
        raise ValueError(f"{METHOD_NAME}: base_metric_weight needs the base tensor")
    if deltas.shape[0] == 1:
        return deltas[0].clone()
    axis = vocabulary_axis(name, vocab_axis, deltas.dim() - 1)
    input_embedding = axis is not None and bool(name and is_input_embedding(name))
    # Elements only one expert touched are added as they are; the rest is solved jointly.
    # For dense fine-tuning no element is exclusive and this split changes nothing.
    touched = (deltas != 0).sum(0)
    exclusive = touched == 1
    if not bool(exclusive.any()):
        return _merge_shared(deltas, axis, input_embedding, options, base)
    alone = (deltas * exclusive).sum(0)
    if not bool((touched > 1).any()):
        return alone
    return alone + _merge_shared(deltas * ~exclusive, axis, input_embedding, options, base)


@merge_method(
    name=METHOD_NAME,
    pretty_name="Bilateral Consensus",
    contract=InputContract(base=BasePolicy.REQUIRED),
)
def bilateral_consensus_merge(
    group: TensorGroup, eps: float = 1e-12, solver: Solver = "lowrank", rank: int = 256,
    output_weight: float = 0.25, normalize: bool = True, background: float = 0.0, weighting: Weighting = "auto",
    signal_output_weight: float = 0.25, base_metric_weight: float = 0.0, presence_exponent: float = 0.5,
) -> torch.Tensor:
    options = Options(eps=eps, solver=solver, rank=rank, output_weight=output_weight, normalize=normalize,
                      background=background, weighting=weighting, signal_output_weight=signal_output_weight,
                      base_metric_weight=base_metric_weight, presence_exponent=presence_exponent)
    return merge_group(group, METHOD_NAME, lambda deltas: bilateral_delta(
        deltas, name=group.metadata.name, vocab_axis=group.metadata.vocabulary_axis, options=options,
        base=group.base.tensor.to(deltas) if base_metric_weight else None,
    ))
