"""The 2025 data-free baselines (tsv, iso_c, iso_cts, wudi): registration, catalogue and config
validation, each checked against a plain numpy reference of its paper's algorithm, the sanity
properties of each, dtypes, and one real merge through the merge stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mergekit.merge_methods import merge_state_dicts, registry
from safetensors.torch import load_file

import mergepipe.merge.methods as custom_methods
from mergepipe.cli import main
from mergepipe.errors import ConfigError
from mergepipe.merge.catalogue import get_method
from mergepipe.merge.methods.iso import iso_c_delta, iso_cts_delta, subspace_split
from mergepipe.merge.methods.tsv import tsv_delta
from mergepipe.merge.methods.wudi import wudi_delta, wudi_objective

torch.set_num_threads(1)

NAMES = ("tsv", "iso_c", "iso_cts", "wudi")
DEFAULTS = {
    "tsv": {"alpha": 1.0},
    "iso_c": {"alpha": 1.0},
    "iso_cts": {"alpha": 1.0, "common_space_fraction": 0.8},
    "wudi": {"iterations": 300, "learning_rate": 1e-5},
}
MATRIX = "model.layers.0.mlp.up_proj.weight"
WIDE = "model.layers.0.self_attn.o_proj.weight"
NORM = "model.norm.weight"
EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"


# -- numpy references: the papers' algorithms written out plainly -------------------------------

def _polar(x: np.ndarray) -> np.ndarray:
    p, _, qh = np.linalg.svd(x, full_matrices=False)
    return p @ qh


def ref_tsv(deltas: np.ndarray, alpha: float) -> np.ndarray:
    k = len(deltas)
    keep = min(deltas.shape[1:]) // k
    us, ss, vs = [], [], []
    for t in deltas:
        u, s, vh = np.linalg.svd(t, full_matrices=False)
        us.append(u[:, :keep])
        ss.append(s[:keep])
        vs.append(vh[:keep].T)
    u_perp, v_perp = _polar(np.hstack(us)), _polar(np.hstack(vs))
    return alpha * u_perp @ np.diag(np.concatenate(ss)) @ v_perp.T


def ref_iso_c(deltas: np.ndarray, alpha: float) -> np.ndarray:
    u, s, vh = np.linalg.svd(deltas.sum(0), full_matrices=False)
    return alpha * s.mean() * u @ vh


def ref_iso_cts(deltas: np.ndarray, alpha: float, fraction: float) -> np.ndarray:
    k = len(deltas)
    r = min(deltas.shape[1:])
    common = int(r * fraction)
    task_total = round((r - common) / k) * k
    common = r - task_total
    per_task = task_total // k
    u, s, vh = np.linalg.svd(deltas.sum(0), full_matrices=False)
    us, ss, vs = [u[:, :common]], [s[:common]], [vh[:common].T]
    for t in deltas:
        residual = t - u[:, :common] @ u[:, :common].T @ t
        ut, st, vht = np.linalg.svd(residual, full_matrices=False)
        us.append(ut[:, :per_task])
        ss.append(st[:per_task])
        vs.append(vht[:per_task].T)
    sigma_bar = np.concatenate(ss).mean()
    return alpha * sigma_bar * _polar(np.hstack(us)) @ _polar(np.hstack(vs)).T


def ref_wudi(deltas: np.ndarray, iterations: int, lr: float) -> np.ndarray:
    """Textbook Adam (Kingma & Ba) on sum_i ||(M - t_i) t_i^T||^2 / ||t_i||^2 from M = sum_i t_i."""
    weights = [1.0 / np.sum(t * t) for t in deltas]
    m = deltas.sum(0).copy()
    first, second = np.zeros_like(m), np.zeros_like(m)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, iterations + 1):
        grad = sum(2 * w * (m - t) @ t.T @ t for w, t in zip(weights, deltas))
        first = b1 * first + (1 - b1) * grad
        second = b2 * second + (1 - b2) * grad * grad
        m_hat, v_hat = first / (1 - b1**step), second / (1 - b2**step)
        m = m - lr * m_hat / (np.sqrt(v_hat) + eps)
    return m


def ref_objective(m: np.ndarray, deltas: np.ndarray) -> float:
    return float(sum(np.sum(((m - t) @ t.T) ** 2) / np.sum(t * t) for t in deltas))


REFERENCES = {
    "tsv": lambda d, p: ref_tsv(d, p.get("alpha", 1.0)),
    "iso_c": lambda d, p: ref_iso_c(d, p.get("alpha", 1.0)),
    "iso_cts": lambda d, p: ref_iso_cts(d, p.get("alpha", 1.0), p.get("common_space_fraction", 0.8)),
    "wudi": lambda d, p: ref_wudi(d, p.get("iterations", 300), p.get("learning_rate", 1e-5)),
}
# Non-matrix tensors: alpha * mean for the spectral methods, the mean for WUDI.
VECTOR_SCALE = {"tsv": "alpha", "iso_c": "alpha", "iso_cts": "alpha", "wudi": None}


# -- helpers ------------------------------------------------------------------------------------

def _random(k: int, shape: tuple[int, ...], seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(k, *shape, generator=gen, dtype=dtype)


def _family(k: int, seed: int = 0, dtype=torch.float64):
    """A base and K experts: a 12x20 and a 20x12 matrix, a norm vector and vocabulary tensors."""
    shapes = {MATRIX: (12, 20), WIDE: (20, 12), NORM: (12,), EMBED: (30, 12), HEAD: (30, 12)}
    gen = torch.Generator().manual_seed(1000 + seed)
    base = {n: torch.randn(s, generator=gen, dtype=dtype) for n, s in shapes.items()}
    deltas = {n: _random(k, s, seed + i, dtype) for i, (n, s) in enumerate(shapes.items())}
    experts = [{n: base[n] + deltas[n][i] for n in shapes} for i in range(k)]
    return base, experts, deltas


def _merge(name, base, experts, parameters=None, dtype=None):
    models = {"base": base, **{f"e{i}": e for i, e in enumerate(experts)}}
    with torch.no_grad():
        return merge_state_dicts(models, name, parameters=parameters or {}, base="base", dtype=dtype)


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# -- registration, catalogue, configs -----------------------------------------------------------

def test_registered_once_and_catalogued(capsys):
    custom_methods.register_all()  # a second registration is a no-op
    names = [m.spec.name for m in registry.registered_methods()]
    for name in NAMES:
        assert names.count(name) == 1
        info = custom_methods.CATALOGUE_INFO[name]
        assert info["layout"] == "delta" and info["description"] and info["defaults"] == DEFAULTS[name]
        method = get_method(name)
        assert method.needs_base and method.min_experts == 1 and method.max_experts is None
        assert {p.name: p.default for p in method.parameters} == DEFAULTS[name]
        assert not any(p.per_model or p.required for p in method.parameters)
        assert method.reference_url.startswith("https://arxiv.org/abs/")
    assert get_method("wudi").parameter("iterations").type_name == "int"
    assert main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert set(NAMES) <= set(listed)


def test_a_config_using_them_by_name_validates(tiny_models, tmp_path):
    from mergepipe.config import load_config
    from mergepipe.merge.plan import check_methods

    data = {
        "run": "b25",
        "base_model": str(tiny_models.base),
        "models": [str(p) for p in tiny_models.experts[:2]],
        "dtype": "float32",
        "merge": {"methods": [
            "tsv", "iso_c",
            {"name": "iso_cts", "parameters": {"common_space_fraction": 0.5, "alpha": 1.2}},
            {"name": "wudi", "parameters": {"iterations": 20}},
        ]},
        "outputs": {"merged_models": str(tmp_path / "merged"), "merge_config": str(tmp_path / "configs")},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    checked = check_methods(load_config(path))
    assert [c.method.name for c in checked] == ["tsv", "iso_c", "iso_cts", "wudi"]
    by_name = {c.method.name: c.shared for c in checked}
    assert by_name["iso_cts"] == {"alpha": 1.2, "common_space_fraction": 0.5}
    assert by_name["wudi"] == {"iterations": 20, "learning_rate": 1e-5}
    assert by_name["tsv"] == {"alpha": 1.0}
    data["merge"]["methods"] = [{"name": "wudi", "parameters": {"alpha": 0.5}}]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="wudi has no parameter 'alpha'"):
        check_methods(load_config(path))


# -- against the numpy references ---------------------------------------------------------------

CASES = [
    ("tsv", {}), ("tsv", {"alpha": 0.7}),
    ("iso_c", {}), ("iso_c", {"alpha": 1.5}),
    ("iso_cts", {}), ("iso_cts", {"common_space_fraction": 0.5, "alpha": 0.9}),
    ("wudi", {}), ("wudi", {"iterations": 60, "learning_rate": 1e-2}),
]


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize(("name", "params"), CASES)
def test_matches_numpy_reference_through_merge_state_dicts(name, params, k):
    base, experts, deltas = _family(k, seed=k)
    merged = _merge(name, base, experts, params)
    for tensor in (MATRIX, WIDE):
        expected = base[tensor].numpy() + REFERENCES[name](deltas[tensor].numpy(), params)
        np.testing.assert_allclose(merged[tensor].numpy(), expected, rtol=1e-9, atol=1e-9, err_msg=tensor)
    scale = params.get(VECTOR_SCALE[name], 1.0) if VECTOR_SCALE[name] else 1.0
    for tensor in (NORM, EMBED, HEAD):  # vectors and vocabulary tensors: (alpha *) mean
        expected = base[tensor] + scale * deltas[tensor].mean(0)
        torch.testing.assert_close(merged[tensor], expected, msg=tensor)


def test_wudi_both_gradient_paths_match_the_reference():
    """in <= 2 K out uses the in x in Gram matrix; a very wide matrix goes through the factors."""
    for shape in [(12, 20), (3, 40)]:
        deltas = _random(2, shape, seed=5)
        got = wudi_delta(deltas, iterations=80, learning_rate=5e-3)
        np.testing.assert_allclose(got.numpy(), ref_wudi(deltas.numpy(), 80, 5e-3), rtol=1e-9, atol=1e-10)


# -- properties ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_single_expert_with_defaults(name):
    """K = 1: TSV keeps full rank and WUDI never moves, so both return the expert exactly;
    Iso-C/Iso-CTS return its isotropic version (the expert's directions at its mean singular value)."""
    base, experts, deltas = _family(1, seed=11)
    merged = _merge(name, base, experts)
    for tensor in (MATRIX, WIDE):
        if name in ("tsv", "wudi"):
            torch.testing.assert_close(merged[tensor], experts[0][tensor], rtol=1e-10, atol=1e-10)
        else:
            u, s, vh = torch.linalg.svd(deltas[tensor][0], full_matrices=False)
            torch.testing.assert_close(merged[tensor], base[tensor] + s.mean() * u @ vh)
    torch.testing.assert_close(merged[NORM], experts[0][NORM])


def test_tsv_identical_experts_give_the_shared_truncation():
    """Two copies of one expert: its top rank/2 triplets (stacking a direction twice adds nothing)."""
    t = _random(1, (12, 20), seed=2)[0]
    u, s, vh = torch.linalg.svd(t, full_matrices=False)
    truncated = (u[:, :6] * s[:6]) @ vh[:6]
    torch.testing.assert_close(tsv_delta(torch.stack([t, t])), truncated)
    torch.testing.assert_close(tsv_delta(torch.stack([t, t, t]), alpha=2.0), 2.0 * (u[:, :4] * s[:4]) @ vh[:4])


def test_tsv_an_unchanged_matrix_does_not_disturb_the_other_expert():
    t = _random(1, (12, 20), seed=3)[0]
    u, s, vh = torch.linalg.svd(t, full_matrices=False)
    merged = tsv_delta(torch.stack([t, torch.zeros_like(t)]))
    torch.testing.assert_close(merged, (u[:, :6] * s[:6]) @ vh[:6])


def _pseudo_power(gram: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(gram)
    kept = values > 1e-9 * values.max()
    scaled = torch.where(kept, values.clamp_min(1e-300).pow(power), torch.zeros_like(values))
    return (vectors * scaled) @ vectors.T


@pytest.mark.parametrize("k", [2, 3, 4])
def test_tsv_is_the_sum_whitened_by_the_experts_summed_projectors(k):
    """With no truncation (every expert's rank within r / K), TSV-M equals
    ``(sum_i P_i)^(-1/2) (sum_i tau_i) (sum_i Q_i)^(-1/2)``, with P_i and Q_i the projectors on
    expert i's column and row spaces: the polar factor of [U_1 .. U_K] is (U U^T)^(-1/2) U.
    An independent check of the orthogonalisation (docs/methods/tsv.md, "A closed form")."""
    gen = torch.Generator().manual_seed(40 + k)
    out_dim, in_dim, rank = 24, 30, 24 // k
    deltas = torch.stack([
        torch.randn(out_dim, rank, generator=gen, dtype=torch.float64)
        @ torch.randn(rank, in_dim, generator=gen, dtype=torch.float64)
        for _ in range(k)
    ])
    left = sum(t @ torch.linalg.pinv(t) for t in deltas)  # column-space projectors
    right = sum(torch.linalg.pinv(t) @ t for t in deltas)  # row-space projectors
    expected = _pseudo_power(left, -0.5) @ deltas.sum(0) @ _pseudo_power(right, -0.5)
    torch.testing.assert_close(tsv_delta(deltas), expected)
    # Not the plain sum: the experts' spaces are not orthogonal, and the whitening moves them apart.
    assert not torch.allclose(expected, deltas.sum(0), atol=1e-3)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_iso_spectra_are_flat(k):
    deltas = _random(k, (12, 20), seed=20 + k)
    s = torch.linalg.svdvals(iso_c_delta(deltas, alpha=1.3))
    expected = 1.3 * torch.linalg.svdvals(deltas.sum(0)).mean()
    torch.testing.assert_close(s, expected.expand(12))
    s_cts = torch.linalg.svdvals(iso_cts_delta(deltas))
    torch.testing.assert_close(s_cts, s_cts[0].expand(12))  # full rank, all equal


@pytest.mark.parametrize("k", [2, 3, 4])
def test_iso_cts_with_a_full_common_subspace_is_iso_c(k):
    deltas = _random(k, (12, 20), seed=30 + k)
    assert subspace_split(12, k, 1.0) == (12, 0)
    torch.testing.assert_close(iso_cts_delta(deltas, 0.8, common_space_fraction=1.0), iso_c_delta(deltas, 0.8))


def test_iso_cts_subspace_split_follows_the_reference_rounding():
    # r = 12, f = 0.8: floor(9.6) = 9 common, 3 left, rounded to a multiple of K.
    assert subspace_split(12, 2, 0.8) == (8, 2)
    assert subspace_split(12, 3, 0.8) == (9, 1)
    assert subspace_split(12, 4, 0.8) == (8, 1)
    assert subspace_split(12, 8, 0.8) == (12, 0)
    assert subspace_split(4096, 3, 0.8) == (3277, 273)
    with pytest.raises(ValueError, match="common_space_fraction"):
        iso_cts_delta(_random(2, (4, 5), seed=0), common_space_fraction=1.5)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_wudi_lowers_its_objective_and_is_deterministic(k):
    deltas = _random(k, (12, 20), seed=40 + k, dtype=torch.float32)
    start = deltas.sum(0)
    initial = wudi_objective(start, deltas)
    for lr in (1e-5, 1e-2):
        merged = wudi_delta(deltas, iterations=100, learning_rate=lr)
        assert float(wudi_objective(merged, deltas)) < float(initial)
        torch.testing.assert_close(wudi_delta(deltas, iterations=100, learning_rate=lr), merged, rtol=0, atol=0)
    np.testing.assert_allclose(float(initial), ref_objective(start.double().numpy(), deltas.double().numpy()),
                               rtol=1e-5)
    torch.testing.assert_close(wudi_delta(deltas, iterations=0), start)
    # Identical experts: the optimiser heads from the sum K*t back towards t (the minimiser).
    same = torch.stack([deltas[0]] * k)
    towards = wudi_delta(same, iterations=300, learning_rate=5e-2)
    assert float(wudi_objective(towards, same)) < 0.01 * float(wudi_objective(same.sum(0), same))
    assert float(wudi_objective(same[0], same)) < 1e-8


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_in_bfloat16_out_computed_in_float32(name):
    base, experts, _ = _family(3, seed=50, dtype=torch.float32)
    base16 = {n: v.to(torch.bfloat16) for n, v in base.items()}
    experts16 = [{n: v.to(torch.bfloat16) for n, v in e.items()} for e in experts]
    merged16 = _merge(name, base16, experts16)
    reference = _merge(name, {n: v.float() for n, v in base16.items()},
                       [{n: v.float() for n, v in e.items()} for e in experts16])
    for tensor, value in merged16.items():
        assert value.dtype == torch.bfloat16 and value.shape == base[tensor].shape, tensor
        assert torch.isfinite(value.float()).all(), tensor
        # One rounding of the float32 result, not bf16 arithmetic throughout.
        torch.testing.assert_close(value, reference[tensor].to(torch.bfloat16), rtol=0, atol=0, msg=tensor)
        assert reference[tensor].dtype == torch.float32


# -- one real merge through the merge stage -----------------------------------------------------

def test_merge_stage_runs_iso_cts_on_tiny_models(tiny_models, tmp_path):
    from mergepipe.config import load_config
    from mergepipe.merge.run import prepare, run_merges

    data = {
        "run": "b25",
        "base_model": str(tiny_models.base),
        "models": [str(p) for p in tiny_models.experts],
        "dtype": "float32",
        "merge": {"methods": [{"name": "iso_cts", "parameters": {"alpha": 1.1}}]},
        "outputs": {"merged_models": str(tmp_path / "merged"), "merge_config": str(tmp_path / "configs")},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    plans, _ = prepare(config)
    outcomes = run_merges(config, plans, report=lambda _msg: None)
    assert [o.status for o in outcomes] == ["merged"], [(o.name, o.error) for o in outcomes]
    merged = _state(outcomes[0].output_dir)
    base = _state(tiny_models.base)
    experts = [_state(p) for p in tiny_models.experts]
    assert merged.keys() == base.keys()
    reference = _merge("iso_cts", base, experts, {"alpha": 1.1}, dtype=torch.float32)
    for tensor, value in merged.items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), tensor
        torch.testing.assert_close(value, reference[tensor], rtol=1e-5, atol=1e-6, msg=tensor)
    record = json.loads((outcomes[0].output_dir / "mergepipe_merge.json").read_text())
    assert record["method"] == "iso_cts" and record["parameters"]["common_space_fraction"] == 0.8


@pytest.mark.parametrize("name", NAMES)
def test_unchanged_matrices_stay_at_the_base_and_low_rank_updates_stay_in_their_span(name):
    fn = {"tsv": tsv_delta, "iso_c": iso_c_delta, "iso_cts": iso_cts_delta, "wudi": wudi_delta}[name]
    zero = torch.zeros(3, 12, 20)
    assert torch.equal(fn(zero), torch.zeros(12, 20))
    # LoRA-sized (rank-2) updates: noise-level directions get no weight, so the spectral results
    # lie in the experts' combined column space (Adam's per-element steps need not).
    gen = torch.Generator().manual_seed(9)
    low = torch.randn(3, 12, 2, generator=gen) @ torch.randn(3, 2, 20, generator=gen)
    merged = fn(low)
    assert torch.isfinite(merged).all()
    if name == "wudi":
        return
    basis, _ = torch.linalg.qr(low.permute(1, 0, 2).reshape(12, -1) @ torch.randn(60, 6, generator=gen))
    torch.testing.assert_close(basis @ (basis.T @ merged), merged, rtol=1e-4, atol=1e-4)
