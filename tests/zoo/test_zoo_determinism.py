"""Building the zoo twice with the same seed gives bit-identical weights and data."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from mergepipe.zoo import build, data_parts, ensure_built, recipe, store
from mergepipe.zoo.skills import skill
from mergepipe.zoo.training import ModelShape, Schedule

# Bookkeeping files that legitimately differ between builds (timings, absolute paths).
VOLATILE = {build.BUILD_INFO, store.MANIFEST}


def _digests(root: Path) -> dict[str, str]:
    """File digests, with the build folder's own path (in YAMLs, adapter configs) masked."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in VOLATILE:
            data = p.read_bytes()
            if p.suffix in {".yaml", ".json", ".md"}:
                data = data.replace(str(root).encode(), b"<root>")
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture
def tiny_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = replace(
        recipe.RECIPE,
        shape=ModelShape(hidden=32, layers=1, heads=2, intermediate=64),
        base=Schedule(steps=4, lr=1e-3, batch=8, warmup=1),
        expert=Schedule(steps=3, lr=0.05, batch=8, warmup=1, optimizer="sgd"),
        lora=Schedule(steps=3, lr=1e-3, batch=8, warmup=1),
    )
    monkeypatch.setattr(build, "RECIPE", tiny)


def test_two_builds_are_bit_identical(tiny_recipe: None, tmp_path: Path, monkeypatch) -> None:
    digests = []
    for name in ("first", "second"):
        monkeypatch.setenv("MERGEPIPE_ZOO_DIR", str(tmp_path / name))
        manifest = ensure_built(experts=2, seed=7)
        assert [m.name for m in manifest.models] == ["base", "inc", "next", "inc-lora", "next-lora"]
        digests.append(_digests(Path(manifest.root)))
    assert digests[0] == digests[1]
    assert any(k.endswith("model.safetensors") for k in digests[0])
    assert any(k.endswith("samples.csv") for k in digests[0])
    # A different seed really changes the weights.
    monkeypatch.setenv("MERGEPIPE_ZOO_DIR", str(tmp_path / "other-seed"))
    other = _digests(Path(ensure_built(experts=1, seed=8).root))
    assert other["base/model.safetensors"] != digests[0]["base/model.safetensors"]


@pytest.mark.slow
def test_rebuilding_a_cached_expert_reproduces_it(zoo, tmp_path: Path) -> None:
    """Retrain one real expert from the cached base: the bytes equal the cached ones."""
    base_dir = Path(zoo.model("base").path)
    build.build_expert(tmp_path / "next", base_dir, skill("next"), zoo.seed)
    fresh = (tmp_path / "next" / "model.safetensors").read_bytes()
    cached = (Path(zoo.model("next").path) / "model.safetensors").read_bytes()
    assert fresh == cached


def test_data_is_reproducible(zoo, tmp_path: Path) -> None:
    data_parts.build_tasks(tmp_path / "tasks", zoo.seed)
    data_parts.build_probing(tmp_path / "probing", zoo.seed)
    cached = Path(zoo.root)
    for part in ("tasks/data", "probing"):
        assert _digests(tmp_path / part) == _digests(cached / part), part


def test_cache_key_is_code_hash_and_seed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MERGEPIPE_ZOO_DIR", str(tmp_path))
    assert store.build_root(3) == tmp_path / f"{store.code_hash()[:16]}-seed3"
    assert store.build_root(3) != store.build_root(4)


def test_interrupted_part_never_looks_finished(tmp_path: Path) -> None:
    def crash(_tmp: Path) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build.timed_part(tmp_path / "base", crash)
    assert list(tmp_path.iterdir()) == []
