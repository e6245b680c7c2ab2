"""The zoo build shows per-model progress (a bar per model over its training steps), not silence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergepipe import zoo
from mergepipe.zoo import build, data_parts
from mergepipe.zoo.recipe import RECIPE


def test_each_model_gets_a_progress_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MERGEPIPE_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    steps_seen: dict[str, int] = {}

    def fake(kind: str, steps: int):
        # Stands in for training only (the real builders are tested by the zoo tests): it reports
        # every step through the hook the real training loop calls, and leaves a finished part.
        def make(out: Path, *args) -> None:
            on_step = args[-1]
            for _ in range(steps):
                on_step()
            out.mkdir(parents=True)
            (out / build.BUILD_INFO).write_text(json.dumps({"seconds": 0.0, "peak_rss_mib": 1.0}))
            steps_seen[out.name] = steps
        return make

    monkeypatch.setattr(build, "build_base", fake("base", RECIPE.base.steps))
    monkeypatch.setattr(build, "build_expert", fake("expert", RECIPE.expert.steps))
    monkeypatch.setattr(build, "build_lora", fake("lora", RECIPE.lora.steps))
    monkeypatch.setattr(data_parts, "build_tasks", lambda out, seed: out.mkdir(parents=True))
    monkeypatch.setattr(data_parts, "build_probing", lambda out, seed: out.mkdir(parents=True))
    monkeypatch.setattr(data_parts, "is_current", lambda folder: folder.is_dir())
    manifest = zoo.ensure_built(experts=2)
    err = capsys.readouterr().err
    names = [m.name for m in manifest.models]
    assert names[:3] == ["base", "inc", "next"] and set(steps_seen) == set(names)
    total = len(names)
    for i, name in enumerate(names, 1):
        steps = steps_seen[name]
        assert f"zoo [{i}/{total}] {name}: 100%" in err and f"{steps}/{steps}" in err, err[-2000:]
