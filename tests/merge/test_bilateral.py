"""bilateral_consensus: registration, the sanity properties, fallbacks, dtypes, a real run_merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mergekit.merge_methods import merge_state_dicts, registry
from safetensors.torch import load_file

import mergepipe.merge.methods as custom_methods
from mergepipe.merge.methods import bilateral
from mergepipe.merge.methods.bilateral import METHOD_NAME, Options, bilateral_delta, uses_exact_solver

torch.set_num_threads(1)


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def family(tiny_models):
    base = _state(tiny_models.base)
    experts = [_state(p) for p in tiny_models.experts]
    return base, experts


def _merge(base, experts, method=METHOD_NAME, parameters=None, dtype=None):
    models = {"base": base, **{f"e{i}": e for i, e in enumerate(experts)}}
    with torch.no_grad():
        return merge_state_dicts(models, method, parameters=parameters or {}, base="base", dtype=dtype)


def _assert_states_close(a, b, atol=1e-5, rtol=1e-4):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), atol=atol, rtol=rtol, msg=name)


def test_registered_once_and_catalogued():
    assert registry.get(METHOD_NAME).spec.name == METHOD_NAME
    custom_methods.register_all()  # a second registration must be a no-op, not an error
    names = [m.spec.name for m in registry.registered_methods()]
    assert names.count(METHOD_NAME) == 1
    info = custom_methods.CATALOGUE_INFO[METHOD_NAME]
    assert info["description"] and info["defaults"] == {
        "eps": 1e-12, "solver": "lowrank", "rank": 256, "output_weight": 0.25, "normalize": True, "background": 0.0,
        "weighting": "auto", "signal_output_weight": 0.25, "base_metric_weight": 0.0, "presence_exponent": 0.5,
    }


def test_single_expert_returns_the_expert(family):
    base, experts = family
    _assert_states_close(_merge(base, experts[:1]), experts[0])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_identical_experts_return_that_expert(family, k):
    base, experts = family
    _assert_states_close(_merge(base, [experts[1]] * k), experts[1])


def test_disjoint_experts_return_the_task_arithmetic_sum(family):
    """Expert i moves only its own share of each tensor's elements (and expert 2 only layer 0)."""
    base, experts = family
    gen = torch.Generator().manual_seed(7)
    disjoint = [{}, {}, {}]
    for name, w in base.items():
        owner = torch.randint(0, 2, w.shape, generator=gen)
        for i in range(2):
            disjoint[i][name] = torch.where(owner == i, experts[i][name], w)
        # Expert 2 touches whole tensors nobody else touches: layer 0's attention output.
        disjoint[2][name] = w.clone()
    only2 = "model.layers.0.self_attn.o_proj.weight"
    for i in range(2):
        disjoint[i][only2] = base[only2].clone()
    disjoint[2][only2] = experts[2][only2]

    merged = _merge(base, disjoint)
    task_sum = _merge(base, disjoint, method="task_arithmetic", parameters={"weight": 1.0})
    _assert_states_close(merged, task_sum, atol=1e-6, rtol=1e-6)
    # ...and it is a real sum: both experts' changes are present in full.
    name = "model.layers.1.mlp.up_proj.weight"
    expected = base[name] + sum(d[name] - base[name] for d in disjoint)
    torch.testing.assert_close(merged[name], expected)


def test_shared_component_is_counted_once():
    """Experts = shared low-rank part + own low-rank part: the ideal merge has each once."""
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(64, 6, generator=gen) @ torch.randn(6, 48, generator=gen)
    own = [torch.randn(64, 3, generator=gen) @ torch.randn(3, 48, generator=gen) for _ in range(4)]
    deltas = torch.stack([shared + u for u in own])
    ideal = shared + sum(own)
    err = lambda m: float((m - ideal).norm() / ideal.norm())  # noqa: E731
    ours = err(bilateral_delta(deltas))
    assert ours < 0.25 * err(deltas.sum(0))  # task arithmetic counts the shared part 4 times
    assert ours < 0.7 * err(deltas.mean(0))  # averaging keeps a quarter of each own part
    # The output-side term is what tells a shared part from an own one when the subspaces are
    # not orthogonal: at its full weight the merge gets closer still, with either weighting
    # (these low-rank experts take the signal weighting by default).
    energy = err(bilateral_delta(deltas, weighting="energy"))
    assert err(bilateral_delta(deltas, weighting="energy", output_weight=1.0)) < 0.9 * energy
    assert err(bilateral_delta(deltas, signal_output_weight=1.0)) < 0.9 * ours


def test_shared_component_on_its_own_subspace_is_counted_once_exactly():
    """Shared part and own parts on mutually orthogonal inputs and outputs: exactly once each."""
    gen = torch.Generator().manual_seed(4)
    u, _ = torch.linalg.qr(torch.randn(64, 15, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(48, 15, generator=gen))
    block = lambda i: u[:, 3 * i : 3 * i + 3] @ torch.randn(3, 3, generator=gen) @ v[:, 3 * i : 3 * i + 3].T  # noqa: E731
    shared, own = block(0), [block(i) for i in range(1, 5)]
    merged = bilateral_delta(torch.stack([shared + o for o in own]))
    torch.testing.assert_close(merged, shared + sum(own), atol=1e-5, rtol=1e-4)


def test_experts_on_orthogonal_subspaces_are_summed():
    """Dense deltas (every element touched by both) acting on orthogonal inputs and outputs."""
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(48, 8, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(40, 8, generator=gen))
    a = u[:, :4] @ torch.randn(4, 4, generator=gen) @ v[:, :4].T
    b = u[:, 4:] @ torch.randn(4, 4, generator=gen) @ v[:, 4:].T
    assert bool(((a != 0) & (b != 0)).all())
    torch.testing.assert_close(bilateral_delta(torch.stack([a, b])), a + b, atol=1e-5, rtol=1e-4)


def test_vector_and_vocabulary_fallbacks():
    gen = torch.Generator().manual_seed(1)
    # 1-D: per element, the energy-weighted mean sum_i t_i^3 / sum_i t_i^2.
    a, b = torch.randn(10, generator=gen), torch.randn(10, generator=gen)
    torch.testing.assert_close(bilateral_delta(torch.stack([a, a, torch.zeros(10)])), a)
    torch.testing.assert_close(bilateral_delta(torch.stack([a, b])), (a**3 + b**3) / (a**2 + b**2))
    # Vocabulary rows are merged row by row: a row one expert changed is kept as it is, a row
    # all experts changed the same way is that change, whatever happens in other rows.
    rows = torch.zeros(3, 20, 8)
    rows[0, 0] = torch.randn(8, generator=gen)
    common = torch.randn(8, generator=gen)
    rows[:, 1] = common
    rows[:, 2:] = torch.randn(3, 18, 8, generator=gen)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        merged = bilateral_delta(rows, name=name)
        torch.testing.assert_close(merged[0], rows[0, 0])
        torch.testing.assert_close(merged[1], common)
        # mergekit's vocabulary axis wins over the layout: axis 1 means rows along dim 1.
        merged_t = bilateral_delta(rows.transpose(1, 2), name=name, vocab_axis=1)
        torch.testing.assert_close(merged_t, merged.T)
    # Output-head rows: the energy-weighted mean. Input-embedding rows: changes in orthogonal
    # directions add up in full; a change shared by all is counted once.
    a_row, b_row = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    b_row -= (b_row @ a_row) / (a_row @ a_row) * a_row  # orthogonal, yet every element shared
    pair = torch.stack([a_row, b_row])[:, None, :].repeat(1, 3, 1)  # [K=2, 3 rows, 8]
    pair[:, 2] = common
    head = bilateral_delta(pair, name="lm_head.weight")
    wa, wb = a_row.square().sum(), b_row.square().sum()
    torch.testing.assert_close(head[0], (wa * a_row + wb * b_row) / (wa + wb))
    embed = bilateral_delta(pair, name="model.embed_tokens.weight")
    torch.testing.assert_close(embed[0], a_row + b_row)
    torch.testing.assert_close(embed[2], common)


def test_bfloat16_storage_computes_in_float32(family):
    base, experts = family
    base16 = {k: v.to(torch.bfloat16) for k, v in base.items()}
    experts16 = [{k: v.to(torch.bfloat16) for k, v in e.items()} for e in experts]
    merged16 = _merge(base16, experts16)
    assert all(v.dtype == torch.bfloat16 for v in merged16.values())
    reference = _merge(
        {k: v.float() for k, v in base16.items()}, [{k: v.float() for k, v in e.items()} for e in experts16]
    )
    for name in reference:
        assert torch.isfinite(merged16[name].float()).all()
        # One bf16 rounding of the float32 result, not bf16 arithmetic throughout.
        torch.testing.assert_close(merged16[name], reference[name].to(torch.bfloat16), atol=0, rtol=0)


def test_run_merge_by_name_in_a_config(tiny_models, tmp_path):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = {
        "merge_method": METHOD_NAME,
        "base_model": str(tiny_models.base),
        "models": [{"model": str(p)} for p in tiny_models.experts],
        "dtype": "bfloat16",
    }
    out = tmp_path / "merged"
    run_merge(MergeConfiguration.model_validate(config), str(out),
              options=MergeOptions(copy_tokenizer=False, quiet=True), config_source=yaml.safe_dump(config))
    merged = _state(out)
    base = _state(tiny_models.base)
    assert merged.keys() == base.keys()
    for name, w in merged.items():
        assert w.dtype == torch.bfloat16 and torch.isfinite(w.float()).all(), name
    # Same result as the in-memory path (which has no vocabulary metadata but finds it by name).
    reference = _merge(base, [_state(p) for p in tiny_models.experts], dtype=torch.float32)
    for name in merged:
        torch.testing.assert_close(merged[name].float(), reference[name].to(torch.bfloat16).float(),
                                   atol=2e-2, rtol=2e-2, msg=name)


# ---------------------------------------------------------------- the low-rank (default) solver


def _decaying(k: int, out_dim: int, in_dim: int, alpha: float, seed: int) -> torch.Tensor:
    """K task vectors with singular values ~ i^-alpha on random singular vectors."""
    gen = torch.Generator().manual_seed(seed)
    r = min(out_dim, in_dim)
    sigma = torch.arange(1, r + 1, dtype=torch.float32).pow(-alpha)
    out = []
    for _ in range(k):
        u, _ = torch.linalg.qr(torch.randn(out_dim, r, generator=gen))
        v, _ = torch.linalg.qr(torch.randn(in_dim, r, generator=gen))
        out.append((u * sigma) @ v.T)
    return torch.stack(out)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_lowrank_equals_exact_when_every_rank_fits_its_share():
    """LoRA-like experts (rank 4) on a 300 x 500 matrix, budget 24 = 8 per expert: exact."""
    gen = torch.Generator().manual_seed(11)
    deltas = torch.stack([torch.randn(300, 4, generator=gen) @ torch.randn(4, 500, generator=gen) for _ in range(3)])
    exact = bilateral_delta(deltas, solver="exact")
    low = bilateral_delta(deltas, solver="lowrank", rank=24)
    assert _rel(low, exact) < 1e-4


def test_narrow_matrices_are_solved_exactly():
    """The smaller side (40) fits the budget: full factors, the exact answer, at any K."""
    deltas = _decaying(6, 40, 700, 0.3, seed=2)
    assert _rel(bilateral_delta(deltas, rank=64), bilateral_delta(deltas, solver="exact")) < 1e-4


def test_lowrank_keeps_the_sanity_properties_when_it_truncates():
    full = _decaying(3, 200, 300, 0.5, seed=5)  # full-rank experts, budget 16: truncated
    # K = 1 and identical experts: the expert itself, not its rank-16 approximation.
    torch.testing.assert_close(bilateral_delta(full[:1], rank=16), full[0])
    torch.testing.assert_close(bilateral_delta(full[1:2].repeat(4, 1, 1), rank=16), full[1], atol=1e-6, rtol=1e-4)
    # Experts on orthogonal input and output subspaces, each within its share: the sum.
    a, b = _orthogonal_pair(seed=6)
    torch.testing.assert_close(bilateral_delta(torch.stack([a, b]), rank=16), a + b, atol=1e-5, rtol=1e-4)


def _orthogonal_pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rank-4 task vectors (200 x 300) on mutually orthogonal input and output subspaces."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(200, 8, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(300, 8, generator=gen))
    return (u[:, :4] @ torch.randn(4, 4, generator=gen) @ v[:, :4].T,
            u[:, 4:] @ torch.randn(4, 4, generator=gen) @ v[:, 4:].T)


def test_lowrank_is_close_to_exact_on_decaying_spectra_and_deterministic():
    """Singular values ~ 1/i (fine-tuning-like decay), 256 x 640, budget 64: a few % off exact;
    the budget buys accuracy (128 is closer than 32)."""
    deltas = _decaying(2, 256, 640, 1.0, seed=8)
    exact = bilateral_delta(deltas, solver="exact", weighting="energy")
    errors = {r: _rel(bilateral_delta(deltas, rank=r, weighting="energy"), exact) for r in (32, 64, 128)}
    assert errors[64] < 0.08, errors
    assert errors[128] < errors[32], errors
    # One fixed sketch: the same inputs give bit-identical merges.
    assert torch.equal(bilateral_delta(deltas, rank=64), bilateral_delta(deltas, rank=64))
    # weighting: auto decides on the factors of the budget in use, so both solvers take the same
    # weighting at every budget and the default stays close to the exact solver.
    for rank in (32, 64, 128, 256):
        assert _rel(bilateral_delta(deltas, rank=rank, solver="exact"), bilateral_delta(deltas, rank=rank)) < 0.15


def test_default_solver_hands_a_matrix_to_the_exact_one_where_that_is_faster(monkeypatch):
    """768 x 256 at K = 4 (complete factors whose joint spaces nearly fill the matrix): the exact
    solver, bit for bit; 600 x 700 at budget 64 (truncated factors): the low-rank one."""
    shapes = []
    lowrank = bilateral._bilateral_lowrank

    def spy(deltas: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        shapes.append(tuple(deltas.shape))
        return lowrank(deltas, *args, **kwargs)

    monkeypatch.setattr(bilateral, "_bilateral_lowrank", spy)
    narrow = _decaying(4, 768, 256, 1.0, seed=3)
    assert torch.equal(bilateral_delta(narrow, weighting="energy"),
                       bilateral_delta(narrow, solver="exact", weighting="energy"))
    assert shapes == []
    wide = _decaying(2, 600, 700, 1.0, seed=4)
    low = bilateral_delta(wide, rank=64, weighting="energy")
    assert shapes == [(2, 600, 700)]
    assert _rel(low, bilateral_delta(wide, solver="exact", weighting="energy")) > 1e-3  # truncated: an approximation


def test_solver_choice_follows_the_cost_of_each_path():
    rank = 256
    # Every matrix of a Llama-3-8B layer: low-rank, the exact solver's width^3 dominates.
    for shape in [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)]:
        assert not any(uses_exact_solver(k, *shape, rank) for k in (1, 2, 8)), shape
    # Both sides within twice the budget: exact, whatever K.
    assert all(uses_exact_solver(k, 512, 300, rank) for k in (1, 2, 8))
    # Narrow matrices: more experts widen the joint spaces (towards exact), a longer side makes
    # the exact eigendecomposition dearer (towards low-rank); once exact, more experts keep it so.
    assert uses_exact_solver(8, 2048, 256, rank) and not uses_exact_solver(2, 2048, 256, rank)
    assert not uses_exact_solver(8, 8192, 256, rank)
    for shape in [(1024, 256), (256, 1024), (768, 128)]:
        choices = [uses_exact_solver(k, *shape, rank) for k in range(1, 17)]
        assert choices == sorted(choices) and choices[-1], (shape, choices)


def test_options_are_checked():
    with pytest.raises(ValueError, match="solver must be one of lowrank, exact"):
        Options(solver="fast")
    with pytest.raises(ValueError, match="rank must be a whole number"):
        Options(rank=0)
    with pytest.raises(ValueError, match="output_weight must be a finite number >= 0"):
        Options(output_weight=-0.5)
    with pytest.raises(ValueError, match="signal_output_weight must be a finite number >= 0"):
        Options(signal_output_weight=float("inf"))
    with pytest.raises(ValueError, match="background must be a finite number >= 0"):
        Options(background=float("nan"))
    with pytest.raises(ValueError, match="base_metric_weight must be a finite number >= 0"):
        Options(base_metric_weight=-1.0)
    with pytest.raises(ValueError, match="base_metric_weight applies to weighting: signal or auto only"):
        Options(weighting="energy", base_metric_weight=1.0)
    with pytest.raises(ValueError, match="weighting must be one of auto, energy, signal, got 'flat'"):
        Options(weighting="flat")
    with pytest.raises(ValueError, match="background applies to weighting: energy only"):
        Options(weighting="signal", background=1.0)
    with pytest.raises(ValueError, match=r"background applies to weighting: energy only, got background 1\.0 "
                                         r"with weighting: auto"):
        Options(background=1.0)  # the default weighting is auto
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="presence_exponent must be a number in"):
            Options(presence_exponent=bad)


# ---------------------------------------------------------------- output weight and normalisation


def _objective(m, deltas, output_weight, weights):
    total = 0.0
    for w, t in zip(weights, deltas):
        total += w * (((m - t) @ (t.T @ t)).square().sum() + output_weight * ((t @ t.T) @ (m - t)).square().sum())
    return float(total)


@pytest.mark.parametrize("output_weight", [0.0, 0.25, 1.0, 3.0])
@pytest.mark.parametrize("normalize", [False, True])
def test_solution_is_the_minimiser_of_the_weighted_objective(output_weight, normalize):
    """Against a plain reference: the stationary point of the objective, found by solving the
    normal equations on vec(M) with dense Kronecker products (float64)."""
    deltas = _decaying(3, 12, 9, 0.7, seed=21).double() * torch.tensor([1.0, 3.0, 0.2]).double()[:, None, None]
    weights = [float(t.square().sum()) ** -2 if normalize else 1.0 for t in deltas]
    out_dim, in_dim = deltas.shape[1:]
    lhs = torch.zeros(out_dim * in_dim, out_dim * in_dim, dtype=torch.float64)
    rhs = torch.zeros(out_dim * in_dim, dtype=torch.float64)
    for w, t in zip(weights, deltas):
        a2, b2 = torch.linalg.matrix_power(t.T @ t, 2), torch.linalg.matrix_power(t @ t.T, 2)
        # row-major vec: vec(M G) = (I kron G^T) vec(M), vec(H M) = (H kron I) vec(M)
        op = torch.kron(torch.eye(out_dim, dtype=torch.float64), a2.T.contiguous()) + output_weight * torch.kron(
            b2, torch.eye(in_dim, dtype=torch.float64))
        lhs += w * op
        rhs += w * (op @ t.reshape(-1))
    reference = torch.linalg.lstsq(lhs, rhs).solution.reshape(out_dim, in_dim)
    merged = bilateral_delta(deltas, solver="exact", output_weight=output_weight, normalize=normalize,
                             presence_exponent=0.0)
    assert _rel(merged, reference) < 1e-6
    bumped = merged + 1e-3 * merged.norm() * torch.randn(merged.shape, generator=torch.Generator().manual_seed(2),
                                                         dtype=torch.float64) / merged.numel() ** 0.5
    assert _objective(merged, deltas, output_weight, weights) < _objective(bumped, deltas, output_weight, weights)


@pytest.mark.parametrize("solver", ["exact", "lowrank"])
def test_normalised_what_an_expert_brings_does_not_depend_on_another_experts_scale(solver):
    """Normalised, each expert's terms are divided by ||tau_i||^4, so rescaling expert 1 by c
    leaves every operator of the objective unchanged: the merge is L0 tau_0 + c L1 tau_1, and
    expert 0's part L0 tau_0 = (c M(tau_0, tau_1) - M(tau_0, c tau_1)) / (c - 1) is the same for
    every c. Unnormalised, the rescaled expert's weight grows with c^4 and expert 0's part shrinks."""
    deltas = _decaying(2, 40, 30, 0.8, seed=13).double()

    def part_of_expert_0(c: float, normalize: bool) -> torch.Tensor:
        scaled = deltas.clone()
        scaled[1] *= c
        # The objective's minimiser: the presence scale is one number for all experts together.
        solve = {"solver": solver, "rank": 16, "normalize": normalize, "weighting": "energy", "presence_exponent": 0.0}
        return (c * bilateral_delta(deltas, **solve) - bilateral_delta(scaled, **solve)) / (c - 1)

    assert _rel(part_of_expert_0(10.0, True), part_of_expert_0(3.0, True)) < 1e-6
    assert _rel(part_of_expert_0(10.0, False), part_of_expert_0(3.0, False)) > 0.1


@pytest.mark.parametrize("output_weight", [0.0, 0.25, 2.0])
def test_sanity_properties_hold_at_any_output_weight(output_weight):
    gen = torch.Generator().manual_seed(9)
    one = _decaying(1, 30, 20, 0.5, seed=3)[0]
    torch.testing.assert_close(bilateral_delta(one[None].repeat(3, 1, 1), output_weight=output_weight), one,
                               atol=1e-5, rtol=1e-4)
    u, _ = torch.linalg.qr(torch.randn(30, 8, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(20, 8, generator=gen))
    a = u[:, :4] @ torch.randn(4, 4, generator=gen) @ v[:, :4].T
    b = 5.0 * u[:, 4:] @ torch.randn(4, 4, generator=gen) @ v[:, 4:].T
    torch.testing.assert_close(bilateral_delta(torch.stack([a, b]), output_weight=output_weight), a + b,
                               atol=1e-5, rtol=1e-4)


def test_without_the_output_term_experts_on_independent_inputs_are_each_kept_on_their_inputs():
    """output_weight 0 is the input-side objective alone: with linearly independent row spaces
    it has a zero-loss solution, M acts like tau_i on every row of tau_i."""
    gen = torch.Generator().manual_seed(17)
    deltas = torch.stack([torch.randn(24, 8, generator=gen) @ torch.randn(8, 40, generator=gen) for _ in range(3)])
    merged = bilateral_delta(deltas, solver="exact", output_weight=0.0).double()
    for t in deltas.double():
        assert _rel(merged @ t.T, t @ t.T) < 1e-5


def test_exact_solver_by_name_in_a_merge(family):
    base, experts = family
    # The tiny family's matrices are narrower than the budget: both solvers give the same merge.
    _assert_states_close(_merge(base, experts, parameters={"solver": "exact"}), _merge(base, experts))


def test_tiny_task_vectors_do_not_overflow_the_normalisation():
    """||tau||^-4 of a 1e-12-sized change is 1e48: beyond float32, kept in float64."""
    deltas = _decaying(2, 20, 16, 0.5, seed=23) * 1e-12
    merged = bilateral_delta(deltas)
    assert torch.isfinite(merged).all()
    torch.testing.assert_close(merged / 1e-12, bilateral_delta(deltas / 1e-12), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- presence scale


def _mean_presence(deltas: torch.Tensor, merged: torch.Tensor) -> float:
    """Plain reference: mean over the experts of <M, tau_i>_F / ||tau_i||_F^2, in float64."""
    x, m = deltas.double(), merged.double()
    return float(torch.stack([(m * t).sum() / t.square().sum() for t in x]).mean())


@pytest.mark.parametrize("solver", ["exact", "lowrank"])
def test_presence_exponent_gives_dense_experts_back_their_size(solver):
    """Dense, full-rank experts share every row space: the least-squares solve keeps each only
    in part (mean presence < 1). Exponent 1 rescales the solve, same direction, to mean presence
    1; the default, 0.5, by the square root of that factor."""
    gen = torch.Generator().manual_seed(41)
    deltas = torch.randn(4, 300, 280, generator=gen) * torch.tensor([1.0, 2.0, 0.5, 1.5])[:, None, None]
    solve = {"solver": solver, "rank": 64}
    unscaled = bilateral_delta(deltas, presence_exponent=0.0, **solve)
    factor = 1.0 / _mean_presence(deltas, unscaled)
    assert factor > 1.1  # the solve shrinks them
    full = bilateral_delta(deltas, presence_exponent=1.0, **solve)
    assert abs(_mean_presence(deltas, full) - 1.0) < 1e-5
    assert _rel(full, factor * unscaled) < 1e-5  # a scale of the solve, nothing else
    assert _rel(bilateral_delta(deltas, **solve), factor ** 0.5 * unscaled) < 1e-5


def test_presence_exponent_leaves_the_sanity_cases_and_adapters_unchanged():
    """One expert, identical experts, experts on orthogonal subspaces and a shared part plus
    private ones are carried whole (presence 1): the scale is 1. Adapter-like matrices are
    merged with the signal weighting, which the scale does not touch."""
    gen = torch.Generator().manual_seed(43)
    one = torch.randn(40, 30, generator=gen)
    u, _ = torch.linalg.qr(torch.randn(40, 12, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(30, 12, generator=gen))
    a = u[:, :4] @ torch.randn(4, 4, generator=gen) @ v[:, :4].T
    b = u[:, 4:8] @ torch.randn(4, 4, generator=gen) @ v[:, 4:8].T
    shared = u[:, 8:] @ torch.randn(4, 4, generator=gen) @ v[:, 8:].T
    cases = [one[None].repeat(3, 1, 1), torch.stack([a, b]), torch.stack([shared + a, shared + b])]
    for deltas in cases:
        torch.testing.assert_close(bilateral_delta(deltas, weighting="energy", presence_exponent=1.0),
                                   bilateral_delta(deltas, weighting="energy", presence_exponent=0.0),
                                   atol=1e-5, rtol=1e-4)
    adapters = _low_rank_experts(4, 256, 192, 8, seed=44)
    assert torch.equal(bilateral_delta(adapters), bilateral_delta(adapters, presence_exponent=0.0))
    assert not torch.equal(bilateral_delta(adapters, weighting="energy"),
                           bilateral_delta(adapters, weighting="energy", presence_exponent=0.0))


def test_presence_exponent_by_name_in_a_merge(family):
    base, experts = family
    off = _merge(base, experts, parameters={"presence_exponent": 0.0})
    on = _merge(base, experts)
    name = "model.layers.0.mlp.down_proj.weight"
    deltas = torch.stack([e[name].float() - base[name].float() for e in experts])
    expected = base[name].float() + bilateral_delta(deltas, name=name)
    torch.testing.assert_close(on[name].float(), expected, atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(on[n].float(), off[n].float()) for n in on)


# ---------------------------------------------------------------- background term


def _background_shares(deltas, background, normalize=True):
    """l_i = background * w_i tr(A_i^2) / fan-in, the weight of expert i's ||M - tau_i||^2."""
    shares = []
    for t in deltas.double():
        a = t.T @ t
        w = float(t.square().sum()) ** -2 if normalize else 1.0
        shares.append(background * w * float(torch.trace(a @ a)) / deltas.shape[2])
    return shares


@pytest.mark.parametrize("background", [0.5, 4.0])
@pytest.mark.parametrize("normalize", [False, True])
def test_background_solution_is_the_minimiser_with_the_isotropic_term(background, normalize):
    """Dense Kronecker reference of the objective plus sum_i l_i ||M - tau_i||^2."""
    deltas = _decaying(3, 10, 8, 0.7, seed=31).double() * torch.tensor([1.0, 2.0, 0.5]).double()[:, None, None]
    weights = [float(t.square().sum()) ** -2 if normalize else 1.0 for t in deltas]
    out_dim, in_dim = deltas.shape[1:]
    eye = torch.eye(out_dim * in_dim, dtype=torch.float64)
    lhs = torch.zeros(out_dim * in_dim, out_dim * in_dim, dtype=torch.float64)
    rhs = torch.zeros(out_dim * in_dim, dtype=torch.float64)
    for w, share, t in zip(weights, _background_shares(deltas, background, normalize), deltas):
        a2, b2 = torch.linalg.matrix_power(t.T @ t, 2), torch.linalg.matrix_power(t @ t.T, 2)
        op = torch.kron(torch.eye(out_dim, dtype=torch.float64), a2.T.contiguous()) + 0.25 * torch.kron(
            b2, torch.eye(in_dim, dtype=torch.float64))
        lhs += w * op + share * eye
        rhs += (w * op + share * eye) @ t.reshape(-1)
    reference = torch.linalg.solve(lhs, rhs).reshape(out_dim, in_dim)
    merged = bilateral_delta(deltas, solver="exact", background=background, weighting="energy", normalize=normalize,
                             presence_exponent=0.0)
    assert _rel(merged, reference) < 1e-6
    assert _rel(merged, bilateral_delta(deltas, solver="exact", normalize=normalize)) > 1e-3  # it does act


def test_background_shrinks_experts_on_orthogonal_subspaces_towards_their_mean():
    """On mutually orthogonal subspaces each singular direction of expert i is kept at
    (c + l_i) / (c + L) of its size, c = (1 + o) w_i sigma^4: the strong directions nearly in
    full, the weak ones towards the mean of the experts; without background, the plain sum."""
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(48, 8, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(40, 8, generator=gen, dtype=torch.float64))
    spectra = [torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.8, 0.6, 0.4]).double()]
    parts = [(u[:, 4 * i:4 * i + 4], s, v[:, 4 * i:4 * i + 4]) for i, s in enumerate(spectra)]
    deltas = torch.stack([left @ torch.diag(s) @ right.T for left, s, right in parts])
    shares = _background_shares(deltas, 2.0)
    expected = sum(
        left @ torch.diag(s * (c + share) / (c + sum(shares))) @ right.T
        for (left, s, right), share in zip(parts, shares)
        for c in [1.25 * s.pow(4) / s.square().sum().square()]
    )
    for solver in ("exact", "lowrank"):
        merged = bilateral_delta(deltas, solver=solver, rank=8, background=2.0, weighting="energy",
                                 presence_exponent=0.0)
        assert _rel(merged, expected) < 1e-6, solver
    assert _rel(bilateral_delta(deltas, solver="exact"), deltas.sum(0)) < 1e-6


@pytest.mark.parametrize("solver", ["exact", "lowrank"])
def test_background_keeps_single_and_identical_experts(solver):
    full = _decaying(3, 200, 300, 0.5, seed=5)
    energy = {"solver": solver, "rank": 16, "background": 3.0, "weighting": "energy"}
    torch.testing.assert_close(bilateral_delta(full[:1], **energy), full[0])
    torch.testing.assert_close(bilateral_delta(full[1:2].repeat(4, 1, 1), **energy), full[1], atol=1e-6, rtol=1e-4)


def test_background_lowrank_equals_exact_when_every_rank_fits_its_share():
    gen = torch.Generator().manual_seed(12)
    deltas = torch.stack([torch.randn(300, 4, generator=gen) @ torch.randn(4, 500, generator=gen) for _ in range(3)])
    exact = bilateral_delta(deltas, solver="exact", background=1.0, weighting="energy")
    assert _rel(bilateral_delta(deltas, rank=24, background=1.0, weighting="energy"), exact) < 1e-4
    assert _rel(exact, bilateral_delta(deltas, solver="exact")) > 1e-3


def test_background_is_scale_free_down_to_tiny_task_vectors():
    deltas = _decaying(2, 300, 400, 0.5, seed=24)
    merged = bilateral_delta(deltas, rank=16, background=1.0, weighting="energy", normalize=False)
    tiny = bilateral_delta(deltas * 1e-12, rank=16, background=1.0, weighting="energy", normalize=False)
    assert torch.isfinite(tiny).all()
    assert _rel(tiny / 1e-12, merged) < 1e-4


# ---------------------------------------------------------------- weighting: signal


def _low_rank_experts(k: int, out_dim: int, in_dim: int, rank: int, seed: int, noise: float = 0.0) -> torch.Tensor:
    """LoRA-like task vectors (B A of the given rank), plus i.i.d. noise of std ``noise``
    (what bf16 storage of a materialised adapter adds)."""
    gen = torch.Generator().manual_seed(seed)
    stack = [torch.randn(out_dim, rank, generator=gen) @ torch.randn(rank, in_dim, generator=gen) / rank
             for _ in range(k)]
    return torch.stack(stack) + noise * torch.randn(k, out_dim, in_dim, generator=gen)


@pytest.mark.parametrize("shape", [(128, 128), (300, 1000), (1000, 300)])
def test_signal_rank_finds_the_adapter_rank_under_noise_from_the_spectrum_or_its_tail(shape):
    from mergepipe.merge.methods.bilateral import signal_rank

    out_dim, in_dim = shape
    delta = _low_rank_experts(1, out_dim, in_dim, 8, seed=31, noise=2e-3)[0].double()
    spectrum = torch.linalg.svdvals(delta)
    assert signal_rank(spectrum, out_dim, in_dim) == 8
    for kept in (12, 40):  # a factor of the leading values and the energy it leaves out
        left_out = float(spectrum.square().sum() - spectrum[:kept].square().sum())
        assert signal_rank(spectrum[:kept], out_dim, in_dim, left_out) == 8, kept
    exact = _low_rank_experts(1, out_dim, in_dim, 8, seed=32)[0].double()
    assert signal_rank(torch.linalg.svdvals(exact), out_dim, in_dim) == 8  # a zero bulk: the 1e-6 floor
    noise = torch.randn(out_dim, in_dim, generator=torch.Generator().manual_seed(33), dtype=torch.float64)
    assert signal_rank(torch.linalg.svdvals(noise), out_dim, in_dim) <= 2  # pure noise: (almost) nothing
    assert signal_rank(torch.zeros(5), out_dim, in_dim) == 0


def test_signal_weighting_is_the_minimiser_of_its_objective():
    """Exactly low-rank experts (every direction is signal): the merge minimises
    sum_i ||(M - tau_i) R_i F_i^1/2||^2 + o ||F_i^1/2 L_i^T (M - tau_i)||^2, F_i = S_i / s_i1,
    checked against a dense Kronecker solve of its normal equations."""
    deltas = _low_rank_experts(3, 12, 9, 2, seed=34).double() * torch.tensor([1.0, 4.0, 0.3]).double()[:, None, None]
    output_weight = 0.5
    out_dim, in_dim = deltas.shape[1:]
    lhs = torch.zeros(out_dim * in_dim, out_dim * in_dim, dtype=torch.float64)
    rhs = torch.zeros(out_dim * in_dim, dtype=torch.float64)
    for t in deltas:
        u, s, vh = torch.linalg.svd(t, full_matrices=False)
        u, s, vh = u[:, :2], s[:2], vh[:2]
        g = (vh.T * (s / s[0])) @ vh
        h = (u * (s / s[0])) @ u.T
        op = torch.kron(torch.eye(out_dim, dtype=torch.float64), g.T.contiguous()) + output_weight * torch.kron(
            h, torch.eye(in_dim, dtype=torch.float64))
        lhs += op
        rhs += op @ t.reshape(-1)
    # The normal equations are singular where no expert acts on either side: the minimum-norm
    # solution, which is zero there, as the merge is.
    reference = (torch.linalg.pinv(lhs, hermitian=True) @ rhs).reshape(out_dim, in_dim)
    for solver in ("exact", "lowrank"):
        merged = bilateral_delta(deltas, solver=solver, weighting="signal", signal_output_weight=output_weight)
        assert _rel(merged, reference) < 1e-6, solver
    assert _rel(bilateral_delta(deltas, solver="exact", weighting="energy"), reference) > 1e-2  # energy differs


@pytest.mark.parametrize("solver", ["exact", "lowrank"])
def test_signal_weighting_keeps_the_sanity_properties(solver):
    # Identical noisy experts (a full-rank bulk under the signal): the expert, bulk included.
    noisy = _low_rank_experts(1, 200, 300, 6, seed=35, noise=1e-2)[0]
    torch.testing.assert_close(bilateral_delta(noisy[None].repeat(3, 1, 1), solver=solver, rank=16,
                                               weighting="signal"), noisy, atol=1e-5, rtol=1e-4)
    # Exactly low-rank experts on orthogonal inputs and outputs, of very different sizes: the sum.
    gen = torch.Generator().manual_seed(36)
    u, _ = torch.linalg.qr(torch.randn(200, 8, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(300, 8, generator=gen))
    a = u[:, :4] @ torch.randn(4, 4, generator=gen) @ v[:, :4].T
    b = 50.0 * u[:, 4:] @ torch.randn(4, 4, generator=gen) @ v[:, 4:].T
    torch.testing.assert_close(bilateral_delta(torch.stack([a, b]), solver=solver, rank=16, weighting="signal"),
                               a + b, atol=1e-4, rtol=1e-4)
    # A shared component on its own subspace is counted once, each own part added.
    shared, own = u[:, :2] @ v[:, :2].T, [u[:, 2 + 2 * i : 4 + 2 * i] @ v[:, 2 + 2 * i : 4 + 2 * i].T for i in range(3)]
    merged = bilateral_delta(torch.stack([shared + o for o in own]), solver=solver, rank=16, weighting="signal")
    torch.testing.assert_close(merged, shared + sum(own), atol=1e-5, rtol=1e-4)


def test_signal_weighting_lowrank_matches_exact_on_noisy_adapters():
    """Rank-16 adapters with a noise bulk on a 1024 x 768 matrix (low-rank solver, truncated
    factors whose threshold comes from the energy they leave out): within 1 % of exact."""
    deltas = _low_rank_experts(4, 1024, 768, 16, seed=37, noise=1e-3)
    assert not uses_exact_solver(4, 1024, 768, 256)
    exact = bilateral_delta(deltas, solver="exact", weighting="signal")
    assert _rel(bilateral_delta(deltas, weighting="signal"), exact) < 0.01


@pytest.mark.parametrize("solver", ["exact", "lowrank"])
def test_each_weighting_reads_its_own_output_weight(solver):
    """auto solves adapters (signal weighting) with signal_output_weight, noise-like full
    fine-tunes (energy weighting) with output_weight; neither knob moves the other's matrices."""
    adapters = _low_rank_experts(3, 96, 160, 4, seed=40, noise=1e-4)
    gen = torch.Generator().manual_seed(41)
    full = torch.randn(3, 96, 160, generator=gen)
    assert bilateral.auto_weighting(adapters, 256) == "signal" and bilateral.auto_weighting(full, 256) == "energy"
    for deltas, moved_by, kept_by in ((adapters, "signal_output_weight", "output_weight"),
                                      (full, "output_weight", "signal_output_weight")):
        default = bilateral_delta(deltas, solver=solver)
        torch.testing.assert_close(bilateral_delta(deltas, solver=solver, **{kept_by: 3.0}), default)
        assert _rel(bilateral_delta(deltas, solver=solver, **{moved_by: 3.0}), default) > 1e-3, moved_by
    # The default signal solve is the signal weighting at output weight 0.25.
    torch.testing.assert_close(bilateral_delta(adapters, solver=solver),
                               bilateral_delta(adapters, solver=solver, weighting="signal", signal_output_weight=0.25))


def test_signal_weighting_by_name_in_a_merge(family):
    base, experts = family
    merged = _merge(base, experts, parameters={"weighting": "signal", "signal_output_weight": 0.5})
    name = "model.layers.0.self_attn.q_proj.weight"
    deltas = torch.stack([e[name].float() - base[name].float() for e in experts])
    expected = base[name].float() + bilateral_delta(deltas, name=name, weighting="signal", signal_output_weight=0.5)
    torch.testing.assert_close(merged[name].float(), expected, atol=1e-5, rtol=1e-4)
    assert _rel(merged[name].float(), _merge(base, experts)[name].float()) > 1e-4


def test_signal_weighting_on_a_narrow_matrix_is_exact_from_complete_factors():
    """1024 x 200 at K = 8 (smaller side within the budget: complete factors, the whole spectrum):
    the low-rank path, which the signal weighting takes beyond 2 x rank, gives the exact answer."""
    deltas = _low_rank_experts(8, 1024, 200, 6, seed=38, noise=1e-3)
    exact = bilateral_delta(deltas, solver="exact", weighting="signal")
    assert _rel(bilateral_delta(deltas, weighting="signal"), exact) < 1e-5


# ---------------------------------------------------------------- weighting: auto (the default)


@pytest.mark.parametrize("shape", [(128, 128), (300, 1000), (1000, 768)])
def test_auto_takes_the_signal_weighting_on_adapters_and_energy_elsewhere(shape):
    """Adapters (rank 8, with or without a bf16-like noise floor) get the signal weighting, on
    small matrices (full spectra) and large ones (the low-rank solver's factors); dense noise, a
    mix of an adapter with a full fine-tune and a steep power law over a noise floor (no spectral
    gap after its signal directions) get energy, and so does a flat power-law spectrum
    where the full spectrum is looked at (from a factor's tail alone its few leading values can
    read as signal: the method page, "Weighting for LoRA experts")."""
    out_dim, in_dim = shape
    for noise in (0.0, 2e-3):
        adapters = _low_rank_experts(3, out_dim, in_dim, 8, seed=40, noise=noise)
        assert bilateral.auto_weighting(adapters, 256) == "signal", noise
        torch.testing.assert_close(bilateral_delta(adapters), bilateral_delta(adapters, weighting="signal"))
        assert _rel(bilateral_delta(adapters), bilateral_delta(adapters, weighting="energy")) > 1e-3
    gen = torch.Generator().manual_seed(41)
    noise_only = torch.randn(2, out_dim, in_dim, generator=gen)
    mixed = torch.stack([_low_rank_experts(1, out_dim, in_dim, 8, seed=43)[0], noise_only[0]])
    cases = [("noise", noise_only), ("adapter + full", mixed)]
    if max(shape) <= 512:  # full spectra: a flat power law (sigma_i ~ i^-0.5) has no few leading directions
        cases.append(("flat power law", _decaying(2, out_dim, in_dim, 0.5, seed=42)))
    # A steep power law over a noise floor, like an AdamW full fine-tune: its few signal directions
    # hold ~99 % of the energy, but its spectrum runs smoothly through the threshold (no gap).
    steep = _decaying(2, out_dim, in_dim, 1.5, seed=45)
    floor = 1e-2 * torch.randn(steep.shape, generator=gen) / min(out_dim, in_dim) ** 0.5
    cases.append(("steep power law over noise", steep + floor))
    for name, deltas in cases:
        assert bilateral.auto_weighting(deltas, 256) == "energy", name
        torch.testing.assert_close(bilateral_delta(deltas), bilateral_delta(deltas, weighting="energy"), msg=name)


def test_auto_decides_alike_for_both_solvers_and_keeps_the_sanity_properties():
    # A large matrix (beyond 2 x rank): the exact solver takes the weighting the factors give.
    adapters = _low_rank_experts(2, 1024, 768, 16, seed=44, noise=1e-3)
    assert _rel(bilateral_delta(adapters, solver="exact"), bilateral_delta(adapters, solver="exact",
                                                                         weighting="signal")) < 1e-6
    assert _rel(bilateral_delta(adapters), bilateral_delta(adapters, solver="exact")) < 0.01
    # An adapter rank that fills its factor (rank 64 at budget 64, K = 2: share 32) may hide more
    # signal: energy, for both solvers.
    wide = _low_rank_experts(2, 1024, 768, 64, seed=45)
    assert bilateral.auto_weighting(wide, 64) == "energy" and bilateral.auto_weighting(wide, 256) == "signal"
    torch.testing.assert_close(bilateral_delta(wide, rank=64, solver="exact"),
                               bilateral_delta(wide, rank=64, solver="exact", weighting="energy"))
    # K = 1, identical experts, orthogonal experts: as with either weighting.
    one = _low_rank_experts(1, 200, 300, 6, seed=46, noise=1e-3)
    torch.testing.assert_close(bilateral_delta(one), one[0])
    torch.testing.assert_close(bilateral_delta(one.repeat(3, 1, 1), rank=16), one[0], atol=1e-5, rtol=1e-4)
    a, b = _orthogonal_pair(seed=47)
    torch.testing.assert_close(bilateral_delta(torch.stack([a, b]), rank=16), a + b, atol=1e-4, rtol=1e-4)


def test_is_low_rank_needs_few_directions_holding_most_of_the_energy():
    from mergepipe.merge.methods.bilateral import is_low_rank

    spectrum = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.1, 0.1], dtype=torch.float64)
    energy = float(spectrum.square().sum())
    assert is_low_rank(spectrum, 4, energy, 32, 64)  # 4 of 32: a quarter is 8
    assert not is_low_rank(spectrum, 9, energy, 32, 64)  # more than a quarter of the smaller side
    flat = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.1, 0.1], dtype=torch.float64)
    assert not is_low_rank(flat, 1, float(flat.square().sum()), 32, 64)  # 4 of 16.02: not most of the energy
    assert not is_low_rank(spectrum, 4, 10 * energy, 32, 64)  # most energy below the threshold: noise-like
    assert not is_low_rank(spectrum, 6, energy, 32, 64, complete=False)  # a factor full of signal
    assert is_low_rank(spectrum, 0, 0.0, 32, 64)  # an unchanged matrix constrains nothing
    # A smoothly decaying spectrum (a full fine-tune's) has no gap after its signal directions,
    # however few they are and however much of the energy they hold.
    smooth = 0.9 ** torch.arange(32, dtype=torch.float64)
    assert not is_low_rank(smooth, 6, float(smooth.square().sum()), 32, 64)
    assert is_low_rank(torch.cat([smooth[:6], 1e-3 * smooth[6:]]), 6, float(smooth[:6].square().sum()), 32, 64)


def test_default_merge_by_name_takes_auto(family):
    base, experts = family
    merged = _merge(base, experts)
    name = "model.layers.0.self_attn.q_proj.weight"
    deltas = torch.stack([e[name].float() - base[name].float() for e in experts])
    weighting = bilateral.auto_weighting(deltas, 256)
    expected = base[name].float() + bilateral_delta(deltas, name=name, weighting=weighting)
    torch.testing.assert_close(merged[name].float(), expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- the base-metric term (option)


def _base_metric_reference(deltas: torch.Tensor, base: torch.Tensor, output_weight: float, strength: float,
                           rank: int) -> torch.Tensor:
    """The minimum-norm minimiser of the signal objective plus sum_i ||(M - tau_i) C_i^1/2||^2,
    C_i = S R_i R_i^T S (S: the base's W^T W on the experts' joint row space, mean eigenvalue 1;
    C_i scaled to strength * sum F_i), by a dense Kronecker solve of its normal equations."""
    out_dim, in_dim = deltas.shape[1:]
    svds = [torch.linalg.svd(t, full_matrices=False) for t in deltas]
    joint, _ = torch.linalg.qr(torch.cat([vh[:rank].T for _, _, vh in svds], 1))
    metric = joint @ joint.T @ base.T @ base @ joint @ joint.T
    metric *= joint.shape[1] / torch.trace(metric)
    lhs = torch.zeros(out_dim * in_dim, out_dim * in_dim, dtype=torch.float64)
    rhs = torch.zeros(out_dim * in_dim, dtype=torch.float64)
    eye_out, eye_in = torch.eye(out_dim, dtype=torch.float64), torch.eye(in_dim, dtype=torch.float64)
    for t, (u, s, vh) in zip(deltas, svds):
        u, s, vh = u[:, :rank], s[:rank], vh[:rank]
        f = s / s[0]
        coupling = metric @ vh.T @ vh @ metric
        coupling *= strength * f.sum() / torch.trace(coupling)
        op = (torch.kron(eye_out, ((vh.T * f) @ vh + coupling).T.contiguous())
              + output_weight * torch.kron((u * f) @ u.T, eye_in))
        lhs += op
        rhs += op @ t.reshape(-1)
    return (torch.linalg.pinv(lhs, hermitian=True) @ rhs).reshape(out_dim, in_dim)


@pytest.mark.parametrize("strength", [0.5, 2.0])
def test_base_metric_term_is_the_minimiser_of_its_objective(strength):
    deltas = _low_rank_experts(3, 12, 10, 2, seed=50).double() * torch.tensor([1.0, 3.0, 0.5]).double()[:, None, None]
    base = torch.randn(12, 10, generator=torch.Generator().manual_seed(51), dtype=torch.float64)
    reference = _base_metric_reference(deltas, base, 0.25, strength, rank=2)
    for solver in ("exact", "lowrank"):
        merged = bilateral_delta(deltas, solver=solver, weighting="signal", base=base, base_metric_weight=strength)
        assert _rel(merged, reference) < 1e-6, solver
        # ... and it is a different merge from the one without the term.
        assert _rel(bilateral_delta(deltas, solver=solver, weighting="signal"), reference) > 1e-2


@pytest.mark.parametrize("solver", ["exact", "lowrank"])
def test_base_metric_term_keeps_the_sanity_properties(solver):
    gen = torch.Generator().manual_seed(52)
    u, _ = torch.linalg.qr(torch.randn(200, 8, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(300, 300, generator=gen))
    a = u[:, :4] @ torch.randn(4, 4, generator=gen) @ v[:, :4].T
    b = 20.0 * u[:, 4:] @ torch.randn(4, 4, generator=gen) @ v[:, 4:8].T
    coupled_base = torch.randn(200, 300, generator=gen)
    options = {"solver": solver, "rank": 16, "base_metric_weight": 1.0}
    # One expert, and identical experts: the expert, whatever the base.
    torch.testing.assert_close(bilateral_delta(a[None], base=coupled_base, **options), a)
    torch.testing.assert_close(bilateral_delta(torch.stack([a, a, a]), base=coupled_base, **options), a,
                               atol=1e-6, rtol=1e-4)
    # Orthogonal outputs and row spaces orthogonal in the base's metric (a base that reads the
    # two row spaces through orthogonal columns): the sum, as without the term.
    separate_base = u @ v[:, :8].T
    torch.testing.assert_close(bilateral_delta(torch.stack([a, b]), base=separate_base, **options), a + b,
                               atol=1e-5, rtol=1e-4)
    # A base that reads both row spaces together couples them: another expert's delta is held
    # back on what the base reads with an expert's inputs, and the merge is no longer the sum.
    coupled = bilateral_delta(torch.stack([a, b]), base=coupled_base, **options)
    assert _rel(coupled, a + b) > 1e-2


def test_base_metric_term_lowrank_matches_exact_and_leaves_energy_matrices_alone():
    deltas = _low_rank_experts(4, 700, 600, 8, seed=53, noise=1e-3)
    base = torch.randn(700, 600, generator=torch.Generator().manual_seed(54)) / 30
    assert not uses_exact_solver(4, 700, 600, 256)
    exact = bilateral_delta(deltas, solver="exact", base=base, base_metric_weight=1.0)
    assert _rel(bilateral_delta(deltas, base=base, base_metric_weight=1.0), exact) < 1e-4
    assert _rel(exact, bilateral_delta(deltas, solver="exact")) > 1e-2
    # Full fine-tunes (auto takes the energy weighting): the term does not apply.
    full = torch.randn(3, 96, 160, generator=torch.Generator().manual_seed(55))
    for solver in ("exact", "lowrank"):
        torch.testing.assert_close(bilateral_delta(full, solver=solver, base=base[:96, :160], base_metric_weight=1.0),
                                   bilateral_delta(full, solver=solver))
    with pytest.raises(ValueError, match="base_metric_weight needs the base tensor"):
        bilateral_delta(deltas, base_metric_weight=1.0)


def test_base_metric_term_by_name_in_a_merge(family):
    """Through mergekit the method hands the base tensor to the term (adapter-like experts on the
    query projection of the tiny family's base)."""
    base, _ = family
    name = "model.layers.0.self_attn.q_proj.weight"
    deltas = _low_rank_experts(3, *base[name].shape, 2, seed=56, noise=1e-4) * 0.05
    experts = [{**base, name: (base[name].float() + d).to(base[name].dtype)} for d in deltas]
    deltas = torch.stack([e[name].float() - base[name].float() for e in experts])
    merged = _merge(base, experts, parameters={"base_metric_weight": 0.5})
    expected = base[name].float() + bilateral_delta(deltas, name=name, base=base[name].float(), base_metric_weight=0.5)
    torch.testing.assert_close(merged[name].float(), expected, atol=1e-5, rtol=1e-4)
    assert _rel(merged[name].float(), _merge(base, experts)[name].float()) > 1e-4
