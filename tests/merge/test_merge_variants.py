"""benchmarks/merge_variants.py: the geometric variant's kernel and the script's options."""

from __future__ import annotations

import pytest
import torch

from mergepipe.merge.methods.tsv import tsv_delta
from tests.helpers.benchmark_scripts import benchmark_module


@pytest.fixture(scope="module")
def variants():
    with benchmark_module("merge_variants") as module:
        yield module


def _low_rank(k: int, out_dim: int, in_dim: int, rank: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([
        torch.randn(out_dim, rank, generator=gen, dtype=torch.float64)
        @ torch.randn(rank, in_dim, generator=gen, dtype=torch.float64)
        for _ in range(k)
    ])


@pytest.mark.parametrize("k", [2, 4])
def test_power_zero_is_tsv_without_truncation(variants, k):
    deltas = _low_rank(k, 16, 20, 16 // k, seed=k)
    torch.testing.assert_close(variants.geometric_delta(deltas, 0.0), tsv_delta(deltas))


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_one_expert_and_identical_experts_return_the_expert(variants, power):
    t = _low_rank(1, 10, 14, 10, seed=1)
    # Fourth powers (p = 2) square the Gram matrices' condition number: 1e-6 relative, not 1e-7.
    torch.testing.assert_close(variants.geometric_delta(t, power), t[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(variants.geometric_delta(torch.cat([t, t, t]), power), t[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_a_shared_component_is_counted_once_and_private_ones_are_added(variants, power):
    """tau_i = c + u_i with c and every u_i on mutually orthogonal row and column spaces."""
    gen = torch.Generator().manual_seed(7)
    left, _ = torch.linalg.qr(torch.randn(18, 18, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(24, 24, generator=gen, dtype=torch.float64))

    def block(i: int) -> torch.Tensor:  # a rank-3 matrix on the i-th orthogonal block
        core = torch.randn(3, 3, generator=gen, dtype=torch.float64)
        return left[:, 3 * i:3 * i + 3] @ core @ right[:, 3 * i:3 * i + 3].T

    shared = block(0)
    private = [block(i) for i in (1, 2, 3)]
    deltas = torch.stack([shared + u for u in private])
    merged = variants.geometric_delta(deltas, power)
    torch.testing.assert_close(merged, shared + sum(private), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(merged, deltas.sum(0))  # task arithmetic counts c three times


def test_non_matrix_tensors_follow_each_kernel_s_rule(variants):
    deltas = torch.randn(3, 12, dtype=torch.float64)
    torch.testing.assert_close(variants.VARIANTS["tsv"](deltas, "model.norm.weight"), deltas.mean(0))
    torch.testing.assert_close(variants.VARIANTS["task_arithmetic"](deltas, "model.norm.weight"), deltas.sum(0))
    embed = torch.randn(3, 30, 8, dtype=torch.float64)
    ours = variants.VARIANTS["ours"](embed, "model.embed_tokens.weight")
    torch.testing.assert_close(variants.VARIANTS["geometric_p1"](embed, "model.embed_tokens.weight"), ours)


def test_options_are_checked_and_the_table_has_one_row_per_variant(variants):
    parser = variants.build_parser()
    args = parser.parse_args(["--variants", "ours,geometric_p0.5", "--experts", "2,4", "--seeds", "5"])
    assert args.variants == ("ours", "geometric_p0.5") and args.experts == (2, 4) and args.seeds == (5,)
    for bad in (["--variants", "ours,nope"], ["--seeds", "a"], ["--family", "huge"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    table = variants.markdown({
        "family": "lora", "base": "abc", "seeds": (0, 1), "experts": (4,), "date": "2026-12-03",
        "per_seed": {"ours": {"K=4": [80.0, 82.0]}, "tsv": {"K=4": [78.0, 79.0]}},
    })
    assert "| ours | 81.0 (80.0 / 82.0) |" in table and "| tsv | 78.5 (78.0 / 79.0) |" in table


def _layer_state(gen: torch.Generator, scale: float = 1.0) -> dict[str, torch.Tensor]:
    shapes = {"q_proj": (6, 8), "k_proj": (4, 8), "v_proj": (4, 8)}
    state = {f"model.layers.0.self_attn.{p}.weight": scale * torch.randn(*s, generator=gen) for p, s in shapes.items()}
    state["model.layers.0.mlp.gate_proj.weight"] = scale * torch.randn(5, 8, generator=gen)
    state["model.norm.weight"] = scale * torch.randn(8, generator=gen)
    return state


def test_a_fused_layout_round_trips_and_merges_the_stacked_matrix(variants):
    gen = torch.Generator().manual_seed(3)
    base = _layer_state(gen)
    groups = variants.FUSED_LAYOUTS["fused_qkv"]
    fused = variants.fuse(base, groups)
    assert set(fused) == {"model.layers.0.self_attn.q_proj_k_proj_v_proj_fused.weight",
                          "model.layers.0.mlp.gate_proj.weight", "model.norm.weight"}
    assert fused["model.layers.0.self_attn.q_proj_k_proj_v_proj_fused.weight"].shape == (14, 8)
    back = variants.unfuse(fused, groups, base)
    assert set(back) == set(base) and all(torch.equal(back[n], base[n]) for n in base)

    experts = [{n: w + d for (n, w), d in zip(base.items(), _layer_state(gen, 0.1).values())} for _ in range(2)]
    merged = variants.merge("fused_qkv", base, experts)
    names = [f"model.layers.0.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj")]
    stacked = torch.stack([torch.cat([e[n] - base[n] for n in names]) for e in experts])
    expected = torch.cat([base[n] for n in names]) + variants.VARIANTS["ours"](stacked, "qkv")
    torch.testing.assert_close(torch.cat([merged[n] for n in names]), expected)
    per_tensor = variants.merge("ours", base, experts)  # the layout matters: not the per-matrix merge
    assert not torch.allclose(merged[names[0]], per_tensor[names[0]])
    torch.testing.assert_close(merged["model.layers.0.mlp.gate_proj.weight"],
                               per_tensor["model.layers.0.mlp.gate_proj.weight"])


@pytest.mark.parametrize("k", [2, 3])
def test_the_output_metric_solver_with_ours_gram_is_ours(variants, k):
    from mergepipe.merge.methods.bilateral import bilateral_delta

    deltas = torch.randn(k, 9, 7, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    grams = [t @ (t.T @ t) @ t.T for t in deltas]  # B_i^2
    solve = {"name": "w", "solver": "exact", "weighting": "energy", "presence_exponent": 0.0}  # the plain solve
    torch.testing.assert_close(variants.output_metric_delta(deltas, grams), bilateral_delta(deltas, **solve))
    other = variants.output_metric_delta(deltas, [torch.eye(9, dtype=torch.float64) * g.trace() for g in grams])
    assert not torch.allclose(other, bilateral_delta(deltas, **solve))


def test_the_query_key_read_metric_changes_only_the_query_and_key(variants):
    gen = torch.Generator().manual_seed(5)
    base = {f"model.layers.0.self_attn.{p}.weight": torch.randn(8, 8, generator=gen) for p in ("q_proj", "k_proj")}
    base["model.layers.0.mlp.up_proj.weight"] = torch.randn(6, 8, generator=gen)
    experts = [{n: w + 0.1 * torch.randn(w.shape, generator=gen) for n, w in base.items()} for _ in range(2)]
    merged, ours = variants.merge("qk_read_metric", base, experts), variants.merge("ours", base, experts)
    torch.testing.assert_close(merged["model.layers.0.mlp.up_proj.weight"], ours["model.layers.0.mlp.up_proj.weight"])
    for p in ("q_proj", "k_proj"):
        name = f"model.layers.0.self_attn.{p}.weight"
        assert not torch.allclose(merged[name], ours[name])
    one = variants.merge("qk_read_metric", base, experts[:1])  # one expert is returned unchanged
    for name in base:
        torch.testing.assert_close(one[name], experts[0][name], rtol=1e-5, atol=1e-5)


def _orthogonal_blocks(k: int, rank: int, out_dim: int, in_dim: int, seed: int) -> torch.Tensor:
    """K task matrices of rank ``rank`` on mutually orthogonal row and column spaces."""
    gen = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(out_dim, out_dim, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(in_dim, in_dim, generator=gen, dtype=torch.float64))
    return torch.stack([
        left[:, rank * i:rank * (i + 1)] @ torch.randn(rank, rank, generator=gen, dtype=torch.float64)
        @ right[:, rank * i:rank * (i + 1)].T
        for i in range(k)
    ])


@pytest.mark.parametrize("power", [0.0, 1.0, 4.0])
@pytest.mark.parametrize("output_weight", [0.25, 1.0])
def test_spectral_weighting_keeps_the_sanity_properties(variants, power, output_weight):
    t = _low_rank(1, 12, 16, 3, seed=2)
    merge = lambda d: variants.spectral_delta(d, power, output_weight)  # noqa: E731
    torch.testing.assert_close(merge(t), t[0])
    torch.testing.assert_close(merge(torch.cat([t, t])), t[0])
    blocks = _orthogonal_blocks(3, 3, 12, 16, seed=4)
    torch.testing.assert_close(merge(blocks), blocks.sum(0))
    overlapping = _low_rank(3, 12, 16, 3, seed=5)
    assert not torch.allclose(merge(overlapping), overlapping.sum(0))


def test_spectral_weighting_drops_what_lies_in_the_noise_bulk(variants):
    gen = torch.Generator().manual_seed(6)
    signal = _low_rank(1, 40, 60, 2, seed=7)[0]
    noisy = signal + 1e-3 * torch.randn(40, 60, generator=gen, dtype=torch.float64)
    spectrum = torch.linalg.svdvals(noisy)
    assert variants.signal_rank(spectrum, 40, 60) == 2
    # One noisy expert comes back as its two signal directions, not with its noise.
    kept = variants.spectral_delta(noisy[None], 1.0)
    assert torch.linalg.matrix_rank(kept, rtol=1e-8) == 2
    assert (kept - signal).norm() < (noisy - signal).norm()


def test_the_power_sum_solve_is_ours_at_one_and_shrinks_shared_directions_less_below(variants):
    from mergepipe.merge.methods.bilateral import bilateral_delta

    deltas = torch.randn(3, 9, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(variants.power_sum_delta(deltas, 1.0), bilateral_delta(
        deltas, name="w", solver="exact", presence_exponent=0.0))
    # n experts read one input direction and write orthogonal outputs: each output keeps
    # (1 + o) / (n + o) with r = 1 and ((1 + sqrt o) / (sqrt o + sqrt n))^2 with r = 1/2.
    n, o = 4, 0.25
    shared = torch.stack([torch.outer(torch.eye(6, dtype=torch.float64)[i], torch.eye(5, dtype=torch.float64)[0])
                          for i in range(n)])
    for exponent, kept in ((1.0, (1 + o) / (n + o)), (0.5, ((1 + o**0.5) / (o**0.5 + n**0.5)) ** 2)):
        merged = variants.power_sum_delta(shared, exponent, o)
        torch.testing.assert_close(merged, kept * shared.sum(0))
    single = _low_rank(1, 9, 7, 3, seed=9)
    torch.testing.assert_close(variants.power_sum_delta(torch.cat([single, single]), 0.5), single[0],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [2, 4])
def test_tsv_s_merged_matrix_has_the_spectrum_tsv_spectrum_names(variants, k):
    deltas = torch.randn(k, 16, 12, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    expected = variants.tsv_spectrum(deltas)
    torch.testing.assert_close(torch.linalg.svdvals(tsv_delta(deltas))[:expected.numel()], expected)
    ours = variants.VARIANTS["ours"](deltas, "w")
    moved = variants.with_spectrum(ours, expected)
    torch.testing.assert_close(torch.linalg.svdvals(moved)[:expected.numel()], expected)
    # ...with ours' singular vectors: the leading left singular vector is unchanged up to sign.
    u_ours, u_moved = torch.linalg.svd(ours)[0][:, 0], torch.linalg.svd(moved)[0][:, 0]
    torch.testing.assert_close(u_ours.dot(u_moved).abs(), torch.tensor(1.0, dtype=torch.float64))


def test_the_writer_rule_is_ours_transposed_on_o_and_down_projections_only(variants):
    from mergepipe.merge.methods.bilateral import bilateral_delta

    deltas = torch.randn(3, 10, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    writer, reader = "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"
    # Transposing swaps the sides: input side at weight 1 / o against the output side, i.e. o = 4.
    torch.testing.assert_close(variants.VARIANTS["writers_transposed"](deltas, writer),
                               bilateral_delta(deltas, name="w", solver="exact", output_weight=4.0,
                                               presence_exponent=0.0))
    torch.testing.assert_close(variants.VARIANTS["writers_transposed"](deltas, reader),
                               variants.VARIANTS["ours"](deltas, reader))
    torch.testing.assert_close(variants.VARIANTS["writers_tsv"](deltas, writer), tsv_delta(deltas))
    query, up = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(variants.VARIANTS["tsv_on_q_k"](deltas, query), tsv_delta(deltas))
    torch.testing.assert_close(variants.VARIANTS["tsv_on_q_k"](deltas, up), variants.VARIANTS["ours"](deltas, up))


def test_the_adaptive_weighting_tells_low_rank_experts_from_full_rank_ones(variants):
    name = "model.layers.0.mlp.up_proj.weight"
    low = _low_rank(3, 16, 20, 2, seed=12)  # rank 2 <= 16 / 4: LoRA-like
    torch.testing.assert_close(variants.adaptive_spectral_delta(low, name), variants.spectral_delta(low, 1.0, 1.0))
    full = torch.randn(3, 16, 20, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    full = full + 5 * _low_rank(3, 16, 20, 8, seed=14)  # rank-8 signal above a noise bulk: > 16 / 4
    torch.testing.assert_close(variants.adaptive_spectral_delta(full, name), variants.VARIANTS["ours"](full, name))


@pytest.mark.parametrize("output_weight", [0.25, 1.0])
def test_the_catalogue_signal_weighting_is_the_spectral_variant_on_low_rank_experts(variants, output_weight):
    """Exactly low-rank experts have no noise bulk to average: ``weighting: signal`` is ``spectral_p1``."""
    deltas = _low_rank(3, 40, 30, 4, seed=8)
    torch.testing.assert_close(
        variants.VARIANTS[f"signal_o{output_weight:g}"](deltas, "model.layers.0.mlp.up_proj.weight"),
        variants.spectral_delta(deltas, 1.0, output_weight), rtol=1e-6, atol=1e-6)


def _one_input_many_outputs(n: int) -> torch.Tensor:
    """n experts that read the same input direction and write to mutually orthogonal outputs."""
    outputs, inputs = torch.eye(6, dtype=torch.float64), torch.eye(5, dtype=torch.float64)
    return torch.stack([torch.outer(outputs[i], inputs[0]) for i in range(n)])


@pytest.mark.parametrize("kernel", ["interpolation_delta", "product_form_delta"])
def test_the_interpolation_and_product_form_kernels_keep_the_sanity_properties(variants, kernel):
    merge = getattr(variants, kernel)
    t = _low_rank(1, 12, 16, 3, seed=2)
    torch.testing.assert_close(merge(t), t[0])
    torch.testing.assert_close(merge(torch.cat([t, t, t])), t[0])
    blocks = _orthogonal_blocks(3, 3, 12, 16, seed=4)
    torch.testing.assert_close(merge(blocks), blocks.sum(0))


def test_interpolation_matches_every_expert_on_its_own_inputs_when_their_row_spaces_are_independent(variants):
    deltas = _low_rank(3, 10, 16, 4, seed=15)  # 3 x 4 = 12 <= 16 input dimensions
    merged = variants.interpolation_delta(deltas)
    for t in deltas:
        rows = torch.linalg.svd(t)[2][:4].T
        torch.testing.assert_close(merged @ rows, t @ rows)
    assert not torch.allclose(merged, deltas.sum(0))  # task arithmetic's cross-talk is gone
    # Experts that disagree on one shared input direction get their mean there.
    shared = _one_input_many_outputs(4)
    torch.testing.assert_close(variants.interpolation_delta(shared), shared.mean(0))


def test_the_product_form_is_stationary_and_adds_what_writes_outside_an_expert_s_outputs(variants):
    deltas = _low_rank(3, 12, 10, 3, seed=16)  # 9 of 10 input directions: the row spaces overlap
    merged = variants.product_form_delta(deltas, power=1.0)
    gradient = torch.zeros_like(merged)
    for t in deltas:
        u, s, vh = torch.linalg.svd(t, full_matrices=False)
        u, s, v = u[:, :3], s[:3] / s[0], vh[:3].T
        gradient += (u * s) @ u.T @ (merged - t) @ (v * s) @ v.T
    assert gradient.norm() < 1e-6 * deltas.norm()
    # Same input, orthogonal outputs: no expert's outputs are disturbed by the others, so the
    # product form keeps the sum, where ours' Sylvester solve (without its rule for elements
    # only one expert changed) shrinks it to (1 + o) / (n + o).
    shared = _one_input_many_outputs(4)
    torch.testing.assert_close(variants.product_form_delta(shared), shared.sum(0))
    torch.testing.assert_close(variants.power_sum_delta(shared, 1.0, 0.25), (1.25 / 4.25) * shared.sum(0))


def test_the_product_form_drops_the_bulk_unless_told_to_average_it_back(variants):
    # A low-rank signal plus small full-rank noise: the plain product form keeps the signal
    # directions only; with ``bulk`` identical experts return the expert again.
    gen = torch.Generator().manual_seed(7)
    expert = _low_rank(1, 40, 48, 3, seed=3)[0] + 1e-3 * torch.randn(40, 48, generator=gen, dtype=torch.float64)
    pair = torch.stack([expert, expert])
    signal_only = variants.product_form_delta(pair)
    assert float((signal_only - expert).norm()) > 1e-3
    assert float((signal_only - expert).norm()) < 0.1 * float(expert.norm())
    torch.testing.assert_close(variants.product_form_delta(pair, bulk=True), expert)


def test_base_metric_variants_reduce_to_the_default_at_zero_and_ours_bm_is_the_catalogue_option(variants):
    from mergepipe.merge.methods.bilateral import bilateral_delta

    gen = torch.Generator().manual_seed(9)
    base = torch.randn(24, 32, generator=gen)
    deltas = torch.stack([torch.randn(24, 2, generator=gen) @ torch.randn(2, 32, generator=gen) for _ in range(3)])
    default = bilateral_delta(deltas, name="q_proj.weight")
    for kernel in (variants.base_metric_signal_delta, variants.base_metric_own_delta):
        torch.testing.assert_close(kernel(deltas, base, 0.0), default, atol=1e-6, rtol=1e-5)
        assert float((kernel(deltas, base, 1.0) - default).norm()) > 1e-4 * float(default.norm())
    name = "model.layers.0.self_attn.q_proj.weight"
    state = {name: base}
    merged = variants.STATE_VARIANTS["ours_bm1"](state, [{name: base + d} for d in deltas])
    expected = base + bilateral_delta(deltas, name=name, base=base, base_metric_weight=1.0, presence_exponent=0.0)
    torch.testing.assert_close(merged[name], expected, atol=1e-6, rtol=1e-5)
