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
    for bad in (["--variants", "ours,nope"], ["--seeds", "a"], ["--family", "gentle"]):
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
    torch.testing.assert_close(variants.output_metric_delta(deltas, grams),
                               bilateral_delta(deltas, name="w", solver="exact"))
    other = variants.output_metric_delta(deltas, [torch.eye(9, dtype=torch.float64) * g.trace() for g in grams])
    assert not torch.allclose(other, bilateral_delta(deltas, name="w", solver="exact"))


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
