"""Variants of bilateral_consensus tried against TSV-M, on merge_quality's experts.

The variant tables in docs/benchmarks.md ("Tried on the 2026-12-03 base") come from this script.
It merges the experts of benchmarks/merge_quality.py (the same cache, trained on first use) by
applying each variant's kernel to every weight tensor directly, without mergekit, and evaluates
the merged model exactly as merge_quality does (normalised exact match, per seed). Kernels:

* ``task_arithmetic``, ``ours`` (``bilateral_delta`` with ``weighting: energy``, the default
  before ``weighting: auto``), ``ours_auto`` (``bilateral_delta`` at its defaults),
  ``ours_auto_o1`` (the defaults with the signal-weighted matrices at output weight 1,
  ``signal_output_weight: 1``) and ``tsv`` (``tsv_delta``; vectors and vocabulary tensors get
  the mean, as the catalogue's ``tsv``);
* ``ours_o1``: output weight 1 (normalised); ``ours_energy``: ours rescaled per matrix to the
  experts' energy ``sqrt(sum_i ||tau_i||^2)``; ``ours_x0.8`` / ``ours_x0.6``: fixed scales;
  ``q_proj_sum``: task arithmetic on the attention query projections, ours elsewhere;
  ``mean_ours_tsv``: the mean of the two merged deltas;
* ``geometric_p<p>``: ``M = G_out^(-1/2) C G_in^(-1/2)`` with ``G_in = sum_i w_i A_i^p``,
  ``G_out = sum_i w_i B_i^p``, ``C = sum_i w_i tau_i A_i^p`` (``A_i = tau_i^T tau_i``,
  ``B_i = tau_i tau_i^T``, ``w_i = ||tau_i||^(-2p)``): the multiplicative counterpart of ours'
  Sylvester equation. With ``p = 0`` (projectors) it is TSV-M without truncation
  (docs/methods/tsv.md, "A closed form"); ``p = 2`` uses ours' Gram matrices. Non-matrix
  tensors are merged by ours. ``geometric_p<p>_in<e>``: exponents ``e`` on the input side and
  ``1 - e`` on the output side;
* ``tsv_on_<projection>`` / ``tsv_on_layer<i>``: TSV on those tensors only, ours elsewhere;
  ``sum_on_<projection>`` (``q_proj_sum`` for the query), ``sum_on_q_k`` (query and key) and
  ``sum_on_mlp``: task arithmetic on those tensors only, ours elsewhere.
* ``fused_qkv``, ``fused_qk``, ``fused_gate_up``, ``fused_qkv_gate_up``: ours on a fused checkpoint
  layout (the query / key / value, or gate / up, projections of a layer stacked into one matrix,
  as Phi-3 and GPT-2 store them), split back after the merge.
* ``qk_read_metric``: ours, with the output side of each query / key projection weighted by how
  the other projection of the pair reads it (``qk_read_merge``).
* ``spectral_p<p>_o<o>``: ours' Sylvester equation with each expert's *signal* directions (above
  the Gavish-Donoho threshold of its spectrum, ``signal_rank``) weighted by ``(sigma / sigma_1)^p``
  and output weight ``o`` (``spectral_delta``): ``p`` = 4 is ours' weighting, 0 weighs every signal
  direction alike, as TSV does. ``spectral_adaptive``: ``spectral_p1_o1`` where every expert is
  low-rank (LoRA-like), ours elsewhere (``adaptive_spectral_delta``).
* ``power_sum_r<r>``: ours' decoupled solve with ``(h^r + g^r)^(1/r)`` in place of ``h + g``
  (``power_sum_delta``; towards r = 0 the geometric mean of the two sides).
* ``ours_tsv_spectrum`` / ``ta_tsv_spectrum``: ours' (task arithmetic's) singular vectors with the
  singular values TSV-M's merge has (``tsv_spectrum``, ``with_spectrum``): is TSV's lead at K = 8 in
  its spectrum or in its directions?
* ``writers_transposed`` / ``writers_tsv``: ours transposed (the output side leads) or TSV on the
  projections that write into the residual stream (``o_proj``, ``down_proj``), ours elsewhere;
  ``ours0.25_tsv`` / ``ours0.75_tsv``: weighted means of ours and TSV; ``tsv_on_q_k`` /
  ``geometric_p<p>_on_q_k``: TSV or the geometric form on the query and key projections only.
* ``interpolation``: ours' input side alone on projectors, ``C G^+`` (``interpolation_delta``);
  ``product_form``: a mismatch counts only where it reads from an expert's inputs and writes
  into its outputs (``product_form_delta``, conjugate gradients), ``product_form_bulk`` with each
  expert's below-threshold remainder averaged over the experts, as ours; ``tsv_x<f>`` / ``signal_x<f>``:
  TSV and ``signal_o0.5`` scaled by ``f`` (is K = 8 a matter of magnitude?).
* ``ours_bm<b>``: the catalogue's defaults with the base-metric term at ``base_metric_weight: b``
  (docs/methods/bilateral_consensus.md, "Base-metric term"); the forms tried before it:
  ``base_metric_<b>`` (the base layer's metric ``W^T W`` on the whole input space, the experts'
  mean as its target, every matrix), ``bm_signal_<b>`` (the same on the signal-weighted matrices
  only, restricted to the experts' joint signal row space), ``bm_iso_<b>`` (the identity in place
  of the base's metric there) and ``bm_own_<b>`` (the base's metric inside each expert's own row
  space).
* ``ours_auto_unscaled``: the defaults without the presence factor (``presence_exponent: 0``, the
  default before it); ``ours_auto_p1``: the defaults at ``presence_exponent: 1``;
  ``ours_auto_shrink<e>``: the defaults, every matrix then multiplied by its mean presence to the
  power ``e`` (shrunk where the solve keeps the experts in part; ``_presence_shrunk``);
  ``projfit<e>``: the defaults without the factor, every matrix then scaled by
  ``projection_fit_scale ** e`` (the experts' presences pooled by their energy),
  ``projfit<e>_energy`` the same on the energy-weighted matrices only; ``ours_x1.1`` / ``ours_x1.2``: fixed factors;
  ``vectors_sum`` / ``head_sum`` / ``head_aligned`` / ``vocab_sum``: the tensors that are not
  plain matrices merged otherwise (norm gains summed; output-head rows summed or merged like the
  input embedding's; both vocabulary tensors summed). These, ``ours`` and every variant that falls
  back on the defaults (the base-metric and state variants) use them without the presence factor
  (``_unscaled``), as they were measured; ``ours_auto`` is the current default, with it.
* ``signal_o<o>``: the catalogue's ``weighting: signal`` at output weight ``o`` (``spectral_p1_o<o>``
  with each expert's below-threshold remainder averaged over the experts, not dropped).

Every row is a check, never a published block: results go to benchmarks/results/checks/.

    environments/main/bin/python benchmarks/merge_variants.py --family lora --variants ours,tsv,geometric_p1
    environments/main/bin/python benchmarks/merge_variants.py --family zoo --experts 2 --seeds 5,6,7,8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge_quality as mq

from mergepipe.core.tensor_names import is_output_head, is_vocabulary_tensor
from mergepipe.merge.methods.bilateral import (
    _aligned_sum,
    _gram_spectrum,
    _signal_factor,
    _spectra_adapter_like,
    bilateral_delta,
    expert_weights,
    presence,
    signal_rank,
    signal_system,
    solve_sylvester,
)
from mergepipe.merge.methods.tsv import tsv_delta
from mergepipe.zoo.skills import SKILLS

Kernel = Callable[[torch.Tensor, str], torch.Tensor]
FAMILIES = ("lora", "lora8", "gentle", "wide", "zoo")
OUT = mq.RESULTS / "checks" / "merge_variants.json"


def is_matrix(deltas: torch.Tensor, name: str) -> bool:
    """A plain weight matrix (not a vector, not one row per token)."""
    return deltas.dim() == 3 and not is_vocabulary_tensor(name)


def _pseudo_power(gram: torch.Tensor, power: float, eps: float = 1e-12) -> torch.Tensor:
    """``gram^power`` on its range (eigenvalues above eps of the largest), 0 elsewhere."""
    values, vectors = torch.linalg.eigh(gram)
    values = values.clamp_min(0)
    kept = values > eps * values.max()
    scaled = torch.where(kept, values.clamp_min(torch.finfo(values.dtype).tiny).pow(power), 0.0)
    return (vectors * scaled) @ vectors.T


def _gram_power(gram: torch.Tensor, power: float) -> torch.Tensor:
    """``gram^power``: repeated products for a whole power, else on the range (0: its projector)."""
    if power >= 1 and float(power).is_integer():
        return torch.linalg.matrix_power(gram, int(power))
    return _pseudo_power(gram, power, 1e-10)


def _accumulators(deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stack in float64 and zeroed ``G_in`` (in x in), ``G_out`` (out x out) and ``C`` (out x in)."""
    x = deltas.double()
    out_dim, in_dim = x.shape[1:]
    return x, x.new_zeros(in_dim, in_dim), x.new_zeros(out_dim, out_dim), torch.zeros_like(x[0])


def geometric_delta(deltas: torch.Tensor, power: float, input_exponent: float = 0.5) -> torch.Tensor:
    """``G_out^(-1/2) C G_in^(-1/2)`` for stacked task matrices [K, out, in] (module docstring);
    ``input_exponent`` e gives ``G_out^(e-1) C G_in^(-e)`` instead (the two sides' exponents
    must add up to 1, else one expert would not be returned unchanged)."""
    x, g_in, g_out, rhs = _accumulators(deltas)
    for t in x:
        energy = t.square().sum()
        if energy == 0:
            continue
        weight = energy.pow(-power)
        a, b = _gram_power(t.T @ t, power), _gram_power(t @ t.T, power)
        g_in += weight * a
        g_out += weight * b
        rhs += weight * (t @ a)
    return (_pseudo_power(g_out, input_exponent - 1.0) @ rhs @ _pseudo_power(g_in, -input_exponent)).to(deltas.dtype)


def _ours(deltas: torch.Tensor, name: str, **options: Any) -> torch.Tensor:
    """Ours with the energy weighting and no presence factor (the default until ``weighting: auto``;
    what every table of this script measured as "ours"), unless ``options`` say otherwise."""
    return bilateral_delta(deltas, name=name, **{"weighting": "energy", "presence_exponent": 0.0, **options})


def _unscaled(deltas: torch.Tensor, name: str) -> torch.Tensor:
    """The catalogue's defaults before the presence factor (what the variants built on them measured)."""
    return bilateral_delta(deltas, name=name, presence_exponent=0.0)


def _sum(deltas: torch.Tensor, name: str) -> torch.Tensor:
    return deltas.sum(0)


def _tsv(deltas: torch.Tensor, name: str) -> torch.Tensor:
    return tsv_delta(deltas) if is_matrix(deltas, name) else deltas.mean(0)


def _energy(deltas: torch.Tensor, name: str) -> torch.Tensor:
    merged = _ours(deltas, name)
    if not is_matrix(deltas, name):
        return merged
    target = deltas.square().sum().sqrt()
    return merged * (target / merged.norm().clamp_min(torch.finfo(merged.dtype).tiny))


def _scaled(factor: float) -> Kernel:
    return lambda d, n: _ours(d, n) * factor if is_matrix(d, n) else _ours(d, n)


def projection_fit_scale(deltas: torch.Tensor, merged: torch.Tensor) -> float:
    """``sum_i ||tau_i||^2 / sum_i <M, tau_i>``: 1 when every expert is fully present in ``M`` (one
    expert, identical experts, a shared part counted once plus private parts added); above 1 when
    the merge shrank the experts (1 where the merge does not point along them at all)."""
    along = float((deltas.double() * merged.double()).sum())
    return float(deltas.double().square().sum()) / along if along > 0 else 1.0


def _projection_fit(exponent: float, energy_only: bool = False) -> Kernel:
    """Ours scaled per matrix by ``projection_fit_scale ** exponent`` (on the energy-weighted
    matrices only with ``energy_only``)."""
    def kernel(deltas: torch.Tensor, name: str) -> torch.Tensor:
        merged = bilateral_delta(deltas, name=name, presence_exponent=0.0)
        if not is_matrix(deltas, name) or (energy_only and _adapter_system(deltas, 0.25) is not None):
            return merged
        return merged * projection_fit_scale(deltas, merged) ** exponent
    return kernel


def _presence_shrunk(exponent: float) -> Kernel:
    """The defaults with every matrix then multiplied by ``mean_i presence_i ** exponent``: shrunk
    where the solve already keeps the experts only in part (the presence factor's opposite)."""
    def kernel(deltas: torch.Tensor, name: str) -> torch.Tensor:
        merged = bilateral_delta(deltas, name=name)
        if not is_matrix(deltas, name):
            return merged
        mean = float(presence(deltas, merged).mean())
        return merged * mean ** exponent if mean > 0 else merged
    return kernel


def _geometric(power: float, input_exponent: float = 0.5) -> Kernel:
    return lambda d, n: geometric_delta(d, power, input_exponent) if is_matrix(d, n) else _ours(d, n)


def _signal_factors(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One expert's signal directions (``signal_rank``): left vectors, singular values, right vectors."""
    u, s, vh = torch.linalg.svd(t, full_matrices=False)
    kept = signal_rank(s, *t.shape) if bool(s.any()) else 0
    return u[:, :kept], s[:kept], vh[:kept].T


def spectral_delta(deltas: torch.Tensor, power: float, output_weight: float = 0.25) -> torch.Tensor:
    """Ours' Sylvester equation with each expert's directions weighted by ``(sigma / sigma_1)^power``
    on its signal directions (``signal_rank``) instead of ``sigma^4 / ||tau||^4`` on all of them:
    ``H = o sum_i U_i F_i U_i^T``, ``G = sum_i V_i F_i V_i^T``, ``C = (1 + o) sum_i U_i S_i F_i V_i^T``.
    ``power`` 4 is ours' weighting (scaled per expert by its top direction, not its norm), 0 weighs
    every signal direction alike, as TSV does. What lies below an expert's threshold is dropped."""
    x, g_in, h_out, rhs = _accumulators(deltas)
    for t in x:
        u, s, v = _signal_factors(t)
        if s.numel() == 0:  # no direction above the noise bulk: the expert brings nothing here
            continue
        weight = (s / s[0]).pow(power)
        g_in += (v * weight) @ v.T
        h_out += output_weight * (u * weight) @ u.T
        rhs += (1.0 + output_weight) * (u * (s * weight)) @ v.T
    return solve_sylvester(h_out, g_in, rhs, 1e-12).to(deltas.dtype)


def power_sum_delta(deltas: torch.Tensor, exponent: float, output_weight: float = 0.25) -> torch.Tensor:
    """Ours' decoupled solve with the denominator ``h_a + g_b`` replaced by ``(h_a^r + g_b^r)^(1/r)``
    (``r`` = 1: ours; towards 0 the geometric mean, which shrinks directions shared by n experts
    like ``1 / sqrt(n)`` instead of ``(1 + o) / (n + o)``); ``C`` is scaled so that one expert is
    returned unchanged."""
    x, g_in, h_out, rhs = _accumulators(deltas)
    for weight, t in zip(expert_weights(x, normalize=True).tolist(), x):
        a2 = (t.T @ t) @ (t.T @ t)
        b = t @ t.T
        g_in += weight * a2
        h_out += output_weight * weight * (b @ b)
        rhs += weight * (t @ a2)
    rhs *= (output_weight**exponent + 1.0) ** (1.0 / exponent)
    h, p = torch.linalg.eigh(h_out)
    g, q = torch.linalg.eigh(g_in)
    denom = (h.clamp_min(0)[:, None] ** exponent + g.clamp_min(0)[None, :] ** exponent) ** (1.0 / exponent)
    rotated = p.T @ rhs @ q
    solved = torch.where(denom > 1e-12 * denom.max(), rotated / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)
    return (p @ solved @ q.T).to(deltas.dtype)


def tsv_spectrum(deltas: torch.Tensor) -> torch.Tensor:
    """The singular values TSV-M's merged matrix has: each expert's top ``min(out, in) // K``, sorted."""
    share = max(1, min(deltas.shape[1:]) // deltas.shape[0])
    values = torch.cat([torch.linalg.svdvals(t)[:share] for t in deltas.double()])
    return torch.sort(values, descending=True).values


def with_spectrum(merged: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """``merged``'s singular vectors (in the order of its singular values) with ``spectrum``."""
    u, s, vh = torch.linalg.svd(merged.double(), full_matrices=False)
    kept = min(s.numel(), spectrum.numel())
    values = torch.zeros_like(s)
    values[:kept] = spectrum[:kept].to(values)
    return ((u * values) @ vh).to(merged.dtype)


def interpolation_delta(deltas: torch.Tensor) -> torch.Tensor:
    """The least-squares ``M`` for ``M P_i = tau_i P_i`` (``P_i``: projector on expert i's signal
    row space), of least norm: ``C G^+`` with ``G = sum_i P_i``, ``C = sum_i tau_i P_i``. Ours'
    input side alone. When the experts' row spaces are linearly independent (K LoRA ranks summing
    to at most the width) every expert is matched exactly on its own inputs, whatever the weights."""
    x, g_in, _, rhs = _accumulators(deltas)
    for t in x:
        _, _, v = _signal_factors(t)
        projector = v @ v.T
        g_in += projector
        rhs += t @ projector
    return (rhs @ _pseudo_power(g_in, -1.0)).to(deltas.dtype)


def product_form_delta(deltas: torch.Tensor, power: float = 1.0, iterations: int = 500,
                       tolerance: float = 1e-10, bulk: bool = False) -> torch.Tensor:
    """The least-norm minimiser of ``sum_i ||W_i (M - tau_i) V_i||^2`` with ``W_i = U_i F_i U_i^T``,
    ``V_i = R_i F_i R_i^T`` on expert i's signal directions, ``F_i = (S_i / s_i1)^power``: only a
    mismatch that reads from expert i's inputs *and* writes into its outputs counts, so another
    expert's delta that writes elsewhere is added in full. No closed form (a sum of K Kronecker
    products): conjugate gradients on ``L(M) = sum_i W_i M V_i``, started at 0 (least norm).
    With ``bulk``, each expert's below-threshold remainder is averaged over the experts and added,
    as ours does (full fine-tunes keep most of their effect there)."""
    x = deltas.double()
    sides = []
    below = torch.zeros_like(x[0])  # the averaged remainder, added only with ``bulk``
    for t in x:
        u, s, v = _signal_factors(t)
        if bulk:
            below += (t - (u * s) @ v.T) / x.shape[0]
        if s.numel() == 0:
            continue
        weight = (s / s[0]).pow(power)
        sides.append(((u * weight) @ u.T, (v * weight) @ v.T, t))
    if not sides:
        return deltas.sum(0)

    def apply(m: torch.Tensor) -> torch.Tensor:
        return sum((w @ m @ v for w, v, _ in sides), torch.zeros_like(m))

    rhs = sum((w @ t @ v for w, v, t in sides), torch.zeros_like(x[0]))
    merged, residual = torch.zeros_like(rhs), rhs.clone()
    direction, energy = residual.clone(), float(residual.square().sum())
    target = tolerance**2 * energy
    for _ in range(iterations):
        if energy <= target or energy == 0.0:
            break
        mapped = apply(direction)
        step = energy / float((direction * mapped).sum())
        merged += step * direction
        residual -= step * mapped
        previous, energy = energy, float(residual.square().sum())
        direction = residual + (energy / previous) * direction
    return (merged + below).to(deltas.dtype)


WRITERS = (".o_proj.", ".down_proj.")  # the projections that write into the residual stream


def _transposed(d: torch.Tensor, n: str) -> torch.Tensor:
    """Ours on the transposed task matrices: its input side becomes the output side (weight 1)
    and the output side the input side (weight ``o``)."""
    return _ours(d.transpose(1, 2), n).transpose(0, 1)


def adaptive_spectral_delta(deltas: torch.Tensor, name: str) -> torch.Tensor:
    """``spectral_delta`` with ``p`` = 1, ``o`` = 1 where every expert is low-rank (signal rank at
    most a quarter of the smaller side, as a LoRA adapter's delta is), ours elsewhere (full
    fine-tunes, whose noise-like directions ``sigma^4`` keeps from counting)."""
    if not is_matrix(deltas, name):
        return _ours(deltas, name)
    limit = min(deltas.shape[1:]) / 4
    low_rank = all(signal_rank(torch.linalg.svdvals(t.double()), *t.shape) <= limit for t in deltas)
    return spectral_delta(deltas, 1.0, 1.0) if low_rank else _ours(deltas, name)


def _on_parts(kernel: Kernel, *parts: str) -> Kernel:
    """``kernel`` on the tensors whose name contains one of ``parts``, ours elsewhere (where does a
    rule gain or lose?)."""
    return lambda d, n: kernel(d, n) if any(part in n for part in parts) else _ours(d, n)


def _matrices_only(kernel: Kernel) -> Kernel:
    return lambda d, n: kernel(d, n) if is_matrix(d, n) else _ours(d, n)


def _blend(share: float) -> Kernel:
    """``share`` x ours + (1 - share) x TSV."""
    return lambda d, n: share * _ours(d, n) + (1.0 - share) * _tsv(d, n)


VARIANTS: dict[str, Kernel] = {
    "task_arithmetic": _sum,
    "tsv": _tsv,
    "ours": _ours,
    "ours_auto": lambda d, n: bilateral_delta(d, name=n),  # the catalogue's defaults: weighting auto
    # the defaults without the presence factor of the energy-weighted matrices (the default before it)
    "ours_auto_unscaled": _unscaled,
    "ours_auto_p1": lambda d, n: bilateral_delta(d, name=n, presence_exponent=1.0),
    **{f"ours_auto_shrink{e:g}": _presence_shrunk(e) for e in (0.5, 1.0)},
    # auto with its signal-weighted matrices at output weight 1
    "ours_auto_o1": lambda d, n: bilateral_delta(d, name=n, signal_output_weight=1.0),
    "ours_o1": lambda d, n: _ours(d, n, output_weight=1.0),
    "ours_energy": _energy,
    "ours_x0.8": _scaled(0.8),
    **{f"projfit{e:g}": _projection_fit(e) for e in (0.5, 1.0)},
    **{f"projfit{e:g}_energy": _projection_fit(e, energy_only=True) for e in (0.5, 1.0)},
    "ours_x1.1": _scaled(1.1),
    "ours_x1.2": _scaled(1.2),
    "ours_x0.6": _scaled(0.6),
    "q_proj_sum": _on_parts(_sum, ".q_proj."),
    "mean_ours_tsv": lambda d, n: 0.5 * (_ours(d, n) + _tsv(d, n)),
    **{f"geometric_p{p:g}": _geometric(p) for p in (0.0, 0.5, 1.0, 2.0)},
    **{f"geometric_p{p:g}_in{e:g}": _geometric(p, e) for p, e in ((1.0, 0.75), (1.0, 0.25), (0.5, 0.25),
                                                                   (0.5, 0.4), (0.5, 0.6))},
    **{f"tsv_on_{proj}": _on_parts(_tsv, f".{proj}.") for proj in mq.LORA_TARGETS},
    **{f"sum_on_{proj}": _on_parts(_sum, f".{proj}.") for proj in mq.LORA_TARGETS if proj != "q_proj"},
    "sum_on_q_k": _on_parts(_sum, ".q_proj.", ".k_proj."),
    "sum_on_mlp": _on_parts(_sum, ".gate_proj.", ".up_proj.", ".down_proj."),
    **{f"tsv_on_layer{i}": _on_parts(_tsv, f"layers.{i}.") for i in range(4)},
    **{f"ours{a:g}_tsv": _blend(a) for a in (0.25, 0.75)},
    "tsv_on_q_k": _on_parts(_tsv, ".q_proj.", ".k_proj."),
    **{f"geometric_p{p:g}_on_q_k": _on_parts(_geometric(p), ".q_proj.", ".k_proj.") for p in (1.0, 2.0)},
    "writers_transposed": _on_parts(_matrices_only(_transposed), *WRITERS),
    "writers_tsv": _on_parts(_tsv, *WRITERS),
    "ours_tsv_spectrum": _matrices_only(lambda d, n: with_spectrum(_ours(d, n), tsv_spectrum(d))),
    "ta_tsv_spectrum": _matrices_only(lambda d, n: with_spectrum(_sum(d, n), tsv_spectrum(d))),
    **{f"power_sum_r{r:g}": _matrices_only(lambda d, n, r=r: power_sum_delta(d, r)) for r in (0.5, 0.25)},
    **{f"spectral_p{p:g}_o{o:g}": _matrices_only(lambda d, n, p=p, o=o: spectral_delta(d, p, o))
       for p in (0.0, 0.5, 1.0, 2.0, 4.0) for o in (0.25, 1.0)},
    "spectral_adaptive": adaptive_spectral_delta,
    **{f"signal_o{o:g}": lambda d, n, o=o: _ours(d, n, weighting="signal", signal_output_weight=o)
       for o in (0.25, 0.5, 1.0)},
    "interpolation": _matrices_only(lambda d, n: interpolation_delta(d)),
    "product_form": _matrices_only(lambda d, n: product_form_delta(d)),
    "product_form_bulk": _matrices_only(lambda d, n: product_form_delta(d, bulk=True)),
    # Non-matrix tensors (full fine-tunes change them; adapters do not): norm gains summed,
    # output-head rows summed or merged like the input embedding's (aligned sum), ours elsewhere.
    "vectors_sum": lambda d, n: d.sum(0) if d.dim() <= 2 else _unscaled(d, n),
    "head_sum": lambda d, n: d.sum(0) if is_output_head(n) else _unscaled(d, n),
    "head_aligned": lambda d, n: _aligned_sum(d) if is_output_head(n) else _unscaled(d, n),
    "vocab_sum": lambda d, n: d.sum(0) if is_vocabulary_tensor(n) else _unscaled(d, n),
    **{f"tsv_x{f:g}": _matrices_only(lambda d, n, f=f: f * _tsv(d, n)) for f in (0.8, 0.9, 1.1)},
    **{f"signal_x{f:g}": _matrices_only(lambda d, n, f=f: f * _ours(d, n, weighting="signal", signal_output_weight=0.5))
       for f in (0.8, 0.9)},
}


# Ours on a fused checkpoint layout: the projections that read the same input stacked along the
# output axis into one matrix (as in Phi-3's qkv_proj / gate_up_proj, GPT-2's c_attn), merged,
# and split back. A per-matrix rule sees other Gram matrices there, so the layout changes the merge.
StateMerge = Callable[[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]
FusedGroup = tuple[str, tuple[str, ...]]  # (module, projections stacked in this order)
QKV: FusedGroup = ("self_attn", ("q_proj", "k_proj", "v_proj"))
QK: FusedGroup = ("self_attn", ("q_proj", "k_proj"))
GATE_UP: FusedGroup = ("mlp", ("gate_proj", "up_proj"))
FUSED_LAYOUTS: dict[str, tuple[FusedGroup, ...]] = {
    "fused_qkv": (QKV,), "fused_qk": (QK,), "fused_gate_up": (GATE_UP,), "fused_qkv_gate_up": (QKV, GATE_UP),
}


def _fused_members(state: dict[str, torch.Tensor], groups: tuple[FusedGroup, ...]
                   ) -> list[tuple[str, list[str]]]:
    """(fused matrix name, the names of its parts) for every layer of ``state`` and every group."""
    found = []
    for module, parts in groups:
        for name in state:
            if name.endswith(f".{module}.{parts[0]}.weight"):
                prefix = name[: -len(f"{parts[0]}.weight")]
                found.append((f"{prefix}{'_'.join(parts)}_fused.weight", [f"{prefix}{p}.weight" for p in parts]))
    return found


def fuse(state: dict[str, torch.Tensor], groups: tuple[FusedGroup, ...]) -> dict[str, torch.Tensor]:
    """``state`` with every group's weights of a layer stacked into one ``<parts>_fused`` matrix."""
    fused = dict(state)
    for fused_name, members in _fused_members(state, groups):
        fused[fused_name] = torch.cat([fused.pop(m) for m in members])
    return fused


def unfuse(state: dict[str, torch.Tensor], groups: tuple[FusedGroup, ...], like: dict[str, torch.Tensor]
           ) -> dict[str, torch.Tensor]:
    """Split the fused matrices of ``state`` back into the projections of ``like``."""
    split = dict(state)
    for fused_name, members in _fused_members(like, groups):
        split.update(zip(members, torch.split(split.pop(fused_name), [like[m].shape[0] for m in members])))
    return split


def output_metric_delta(deltas: torch.Tensor, metrics: list[torch.Tensor], output_weight: float = 0.25,
                        eps: float = 1e-12) -> torch.Tensor:
    """Ours' normalised objective with expert i's output-side Gram ``B_i^2`` replaced by ``metrics[i]``:
    ``H M + M G = C``, ``H = o sum w_i O_i``, ``G = sum w_i A_i^2``, ``C = sum w_i (o O_i tau_i + tau_i A_i^2)``,
    solved exactly (``O_i = B_i^2`` gives ours with ``solver: exact``)."""
    x, g_in, h_out, rhs = _accumulators(deltas)
    for weight, t, metric in zip(expert_weights(x, normalize=True).tolist(), x, metrics):
        a2 = (t.T @ t) @ (t.T @ t)
        g_in += weight * a2
        h_out += output_weight * weight * metric.double()
        rhs += weight * (output_weight * metric.double() @ t + t @ a2)
    return solve_sylvester(h_out, g_in, rhs, eps).to(deltas.dtype)


def qk_read_merge(base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Ours, but the key projection's output side weighted by how expert i's queries read key space
    (``W_q' A^q_i W_q'^T``, ``W_q' = W_q + tau^q_i``, ``A^q_i = tau^q_i^T tau^q_i`` as the query
    inputs), and the query's by how its keys are read, each scaled to the trace of ``B_i^2``: the
    two act through ``x^T W_q^T W_k y`` (RoPE and heads ignored)."""
    merged = merged_state(_ours, base, experts)
    for q_name in [n for n in base if ".q_proj." in n]:
        k_name = q_name.replace(".q_proj.", ".k_proj.")
        taus = {n: torch.stack([e[n].double() - base[n].double() for e in experts]) for n in (q_name, k_name)}
        for name, reader in ((k_name, q_name), (q_name, k_name)):
            reader_base = base[reader].double()
            metrics = []
            for own, other in zip(taus[name], taus[reader]):
                read = (reader_base + other) @ (other.T @ other) @ (reader_base + other).T
                own_gram = own @ (own.T @ own) @ own.T  # ours' B_i^2
                metrics.append(read * (own_gram.trace() / read.trace().clamp_min(torch.finfo(read.dtype).tiny)))
            merged[name] = (base[name].double() + output_metric_delta(taus[name], metrics)).to(base[name].dtype)
    return merged


def _fused_merge(groups: tuple[FusedGroup, ...]) -> StateMerge:
    def run_fused(base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        merged = merged_state(_ours, fuse(base, groups), [fuse(e, groups) for e in experts])
        return unfuse(merged, groups, base)
    return run_fused


def _signal_system(x: torch.Tensor, spectra: list[tuple[torch.Tensor, torch.Tensor]], output_weight: float
                   ) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor,
                              torch.Tensor, torch.Tensor]:
    """The signal weighting's pieces for a float64 stack: each expert's signal factor, the
    experts' summed below-threshold remainders, and ``G``, ``H``, ``C / (1 + o)``."""
    _, out_dim, in_dim = x.shape
    below = torch.zeros_like(x[0])
    factors = []
    for t, (s, vectors) in zip(x, spectra):
        left, s, right = _signal_factor(t, s, vectors, signal_rank(s, out_dim, in_dim))
        factors.append((left, s, right))
        below += t - (left * s) @ right.T
    g_out, g_in, rhs = signal_system(factors, out_dim, in_dim, output_weight, x)
    return factors, below, g_in, g_out, rhs


def _adapter_system(deltas: torch.Tensor, output_weight: float) -> tuple[Any, ...] | None:
    """``(x, factors, below, G, H, C / (1 + o))`` of ``_signal_system`` for a stack whose experts are
    all adapter-like (``weighting: auto``'s rule), else None."""
    x = deltas.double()
    spectra = [_gram_spectrum(t) for t in x]
    if not _spectra_adapter_like(spectra, *x.shape[1:]):
        return None
    return (x, *_signal_system(x, spectra, output_weight))


def base_metric_delta(deltas: torch.Tensor, base_weight: torch.Tensor, strength: float,
                      output_weight: float = 0.25, name: str = "") -> torch.Tensor:
    """Ours at its defaults (``weighting: auto``, solved exactly) plus a background input term in the
    metric of the *base* layer: ``sum_i l ||(M - tau_i) S^(1/2)||^2`` with ``S = W^T W`` of the base
    matrix, scaled to trace ``in``, and ``l = strength * tr(G) / (K in)``.

    Why: an expert's row space stands for its inputs only in part (a LoRA adapter's input factor
    starts random), while the inputs of every task live where the base layer reads; on those
    directions every other expert's delta acts too. ``S`` is a data-free stand-in for them. The
    term keeps the closed form: ``G`` gains ``L S`` and ``C`` gains ``L mean_i(tau_i) S``."""
    x = deltas.double()
    k, out_dim, in_dim = x.shape
    spectra = [_gram_spectrum(t) for t in x]
    base64 = base_weight.double()
    metric = base64.T @ base64
    metric *= in_dim / float(torch.diagonal(metric).sum().clamp_min(1e-300))
    if _spectra_adapter_like(spectra, out_dim, in_dim):
        factors, below, g_in, g_out, rhs = _signal_system(x, spectra, output_weight)
        anchor = torch.stack([(left * s) @ right.T for left, s, right in factors]).mean(0)
    else:
        below = torch.zeros_like(x[0])
        g_in, g_out, rhs = x.new_zeros(in_dim, in_dim), x.new_zeros(out_dim, out_dim), torch.zeros_like(x[0])
        weights = expert_weights(deltas, True)
        for weight, t in zip(weights.tolist(), x):
            if weight == 0.0:
                continue
            a2 = (t.T @ t) @ (t.T @ t)
            b2 = (t @ t.T) @ (t @ t.T)
            g_in += weight * a2
            g_out += weight * output_weight * b2
            rhs += weight * (t @ a2)
        anchor = x.mean(0)
    total = strength * float(torch.diagonal(g_in).sum()) / in_dim
    g_in += total * metric
    merged = solve_sylvester(g_out, g_in, (1.0 + output_weight) * rhs + total * (anchor @ metric), 1e-12)
    return (merged + below / k).to(deltas.dtype)


def base_metric_signal_delta(deltas: torch.Tensor, base_weight: torch.Tensor, strength: float,
                             output_weight: float = 0.25, name: str = "", isotropic: bool = False) -> torch.Tensor:
    """``base_metric_delta`` on the signal-weighted (adapter-like) matrices only, with the base
    metric restricted to the experts' joint signal row space ``V`` (``P_V W^T W P_V``, scaled to
    trace ``dim V``; ``l = strength * tr(G) / (K dim V)``), so that the answer stays inside the
    experts' joint subspaces, as the low-rank solver's is; ours at its defaults elsewhere."""
    system = _adapter_system(deltas, output_weight)
    if system is None:
        return bilateral_delta(deltas, name=name, presence_exponent=0.0)
    x, factors, below, g_in, g_out, rhs = system
    k = x.shape[0]
    joint, _ = torch.linalg.qr(torch.cat([right for _, _, right in factors], 1))
    read = base_weight.double() @ joint  # the base layer on the joint row space
    inner = torch.eye(joint.shape[1], dtype=x.dtype) if isotropic else read.T @ read
    dim = joint.shape[1]
    inner *= dim / float(torch.diagonal(inner).sum().clamp_min(1e-300))
    metric = joint @ inner @ joint.T
    total = strength * float(torch.diagonal(g_in).sum()) / dim
    g_in += total * metric
    anchor = torch.stack([(left * s) @ right.T for left, s, right in factors]).mean(0)
    merged = solve_sylvester(g_out, g_in, (1.0 + output_weight) * rhs + total * (anchor @ metric), 1e-12)
    return (merged + below / k).to(deltas.dtype)


def base_metric_own_delta(deltas: torch.Tensor, base_weight: torch.Tensor, strength: float,
                          output_weight: float = 0.25, name: str = "") -> torch.Tensor:
    """Like ``base_metric_signal_delta`` but each expert's base-metric term lives in its own signal
    row space: ``sum_i ||(M - tau_i) S_i^(1/2)||^2``, ``S_i = R_i (R_i^T W^T W R_i) R_i^T`` scaled
    to ``strength`` times the trace of the expert's signal term. Experts with orthogonal row and
    column spaces still merge to their sum, identical ones to the expert."""
    system = _adapter_system(deltas, output_weight)
    if system is None:
        return bilateral_delta(deltas, name=name, presence_exponent=0.0)
    x, factors, below, g_in, g_out, rhs = system
    k = x.shape[0]
    base64 = base_weight.double()
    for left, s, right in factors:
        if s.numel() == 0:
            continue
        read = base64 @ right
        inner = read.T @ read
        inner *= strength * float((s / s[0]).sum()) / float(torch.diagonal(inner).sum().clamp_min(1e-300))
        g_in += right @ inner @ right.T
        rhs += (1.0 / (1.0 + output_weight)) * ((left * s) @ inner @ right.T)
    merged = solve_sylvester(g_out, g_in, (1.0 + output_weight) * rhs, 1e-12)
    return (merged + below / k).to(deltas.dtype)


def _state_kernel(delta: Callable[..., torch.Tensor], strength: float) -> StateMerge:
    """A state merge that applies ``delta(deltas, base_weight, strength, name=...)`` to every matrix
    and ours at its defaults to every other tensor."""
    def run_kernel(base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        def kernel(deltas: torch.Tensor, name: str) -> torch.Tensor:
            if is_matrix(deltas, name):
                return delta(deltas, base[name].float(), strength, name=name)
            return bilateral_delta(deltas, name=name, presence_exponent=0.0)
        return merged_state(kernel, base, experts)
    return run_kernel


def _ours_base_metric(deltas: torch.Tensor, base_weight: torch.Tensor, strength: float, name: str) -> torch.Tensor:
    return bilateral_delta(deltas, name=name, base=base_weight, base_metric_weight=strength,
                           presence_exponent=0.0)


# Variants that need several tensors at once (not one kernel per tensor).
STATE_VARIANTS: dict[str, StateMerge] = {
    **{name: _fused_merge(groups) for name, groups in FUSED_LAYOUTS.items()},
    "qk_read_metric": qk_read_merge,
    **{f"base_metric_{b:g}": _state_kernel(base_metric_delta, b) for b in (0.1, 0.3, 1.0)},
    **{f"bm_signal_{b:g}": _state_kernel(base_metric_signal_delta, b) for b in (0.1, 0.2, 0.3, 1.0, 3.0)},
    **{f"bm_own_{b:g}": _state_kernel(base_metric_own_delta, b) for b in (0.3, 1.0, 3.0)},
    **{f"bm_iso_{b:g}": _state_kernel(partial(base_metric_signal_delta, isotropic=True), b) for b in (0.1, 0.2, 0.3)},
    # The catalogue's defaults with the base-metric term (``base_metric_weight``) at weight b.
    **{f"ours_bm{b:g}": _state_kernel(_ours_base_metric, b) for b in (0.3, 0.5, 1.0)},
}


def merge(variant: str, base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]]
          ) -> dict[str, torch.Tensor]:
    """The merged state dict of one variant: a per-tensor kernel, or a whole-state rule."""
    if variant in STATE_VARIANTS:
        return STATE_VARIANTS[variant](base, experts)
    return merged_state(VARIANTS[variant], base, experts)


# merge_quality's own recipe builders at their default options: the experts of its published plan.
REGIMES = {"lora": mq.lora_regime, "lora8": mq.lora8_regime, "gentle": mq.gentle_regime, "wide": mq.wide_regime,
           "zoo": mq.zoo_regime}


def family_setup(args: argparse.Namespace) -> tuple[mq.Regime, dict[str, torch.Tensor], mq.Evaluator]:
    """The experts' recipe, the base and its evaluator, as merge_quality sets them up."""
    regime = REGIMES[args.family](mq.build_parser().parse_args([]))
    base, _ = mq.load_base(args, regime.shape)  # the zoo base, or the wide base trained by merge_quality
    return regime, base, mq.Evaluator(base, regime.shape)


def merged_state(kernel: Kernel, base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]]
                 ) -> dict[str, torch.Tensor]:
    merged = {}
    for name, weight in base.items():
        deltas = torch.stack([e[name].float() - weight.float() for e in experts])
        merged[name] = weight if not bool(deltas.any()) else (weight.float() + kernel(deltas, name)).to(weight.dtype)
    return merged


def run(args: argparse.Namespace) -> dict[str, Any]:
    regime, base, evaluator = family_setup(args)
    base_id = mq.digest(base)
    rows: dict[str, dict[str, list[float]]] = {v: {} for v in args.variants}
    expert_acc: dict[tuple[str, int], float] = {}  # one evaluation per expert, whatever the K values
    for k in args.experts:
        skills = tuple(s.name for s in SKILLS[:k])
        for seed in args.seeds:
            experts = [mq.get_expert(args, regime, base, base_id, (s,), seed) for s in skills]
            for s, e in zip(skills, experts):
                if (s, seed) not in expert_acc:
                    expert_acc[s, seed] = evaluator.accuracy(e, (s,))[s]
            for variant in args.variants:
                with torch.no_grad():
                    acc = evaluator.accuracy(merge(variant, base, experts), skills)
                score = 100 * statistics.fmean(
                    acc[s] / expert_acc[s, seed] for s in skills if expert_acc[s, seed] > 0)
                rows[variant].setdefault(f"K={k}", []).append(score)
                mq.log(f"{args.family} K={k} seed={seed} {variant}={score:.1f}")
    return {"family": args.family, "base": base_id, "seeds": args.seeds, "experts": args.experts,
            "per_seed": rows, "date": time.strftime("%Y-%m-%d")}


def markdown(result: dict[str, Any]) -> str:
    columns = [f"K={k}" for k in result["experts"]]
    seeds = " / ".join(str(s) for s in result["seeds"])
    lines = [f"`{result['family']}` experts on base `{result['base']}`, seeds {seeds} "
             f"({result['date']}); normalised accuracy %, mean (per seed)", "",
             "| variant | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for variant, cells in result["per_seed"].items():
        shown = [f"{statistics.fmean(cells[c]):.1f} ({' / '.join(f'{x:.1f}' for x in cells[c])})" for c in columns]
        lines.append(f"| {variant} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def _numbers(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{what}: empty")
    return values


def _variants(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.split(",") if v)
    known = [*VARIANTS, *STATE_VARIANTS]
    if unknown := [v for v in names if v not in known]:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--family", choices=FAMILIES, default="lora",
                   help="whose experts: lora, lora8 (rank 8), gentle (full fine-tunes), wide or zoo (the zoo recipe)")
    p.add_argument("--variants", type=_variants, default=("task_arithmetic", "tsv", "ours"),
                   help=f"comma-separated, of {', '.join([*VARIANTS, *STATE_VARIANTS])}")
    p.add_argument("--experts", type=lambda t: _numbers(t, "--experts"), default=(4, 8), help="K values")
    p.add_argument("--seeds", type=lambda t: _numbers(t, "--seeds"), default=(0, 1, 2), help="expert seeds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=str(mq.cache_dir() / "merge_quality"), help="merge_quality's expert cache")
    p.add_argument("--out", type=Path, default=OUT, help="results JSON (a .md table is written beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.base = None  # load_base: the zoo base
    if bad := [k for k in args.experts if not 1 <= k <= len(SKILLS)]:
        raise SystemExit(f"--experts: K must be between 1 and {len(SKILLS)}, got {bad}")
    torch.set_num_threads(args.threads)
    result = run(args)
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((args.out, json.dumps(result, indent=1)), (args.out.with_suffix(".md"), table)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    mq.log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
