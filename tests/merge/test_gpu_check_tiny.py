"""benchmarks/gpu_check.py --tiny: the GPU check's whole flow (models, two merges, lm-eval) on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_tiny_runs_the_whole_flow(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--docs", "40", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["device"] == "cpu" and result["tiny"] is True and result["ok"] is True
    assert set(result["merges"]) == {"ties", "bilateral_consensus"}
    for method, merge in result["merges"].items():
        assert merge["ok"], method
        assert merge["config"]["merge_method"] == method
        assert merge["seconds"] > 0 and merge["tensors"] == 3 + 9 * result["shape"]["layers"]
        assert merge["missing"] == [] and merge["wrong_shape"] == [] and merge["dtype"] == "torch.bfloat16"
        assert merge["relative_change_vs_base"] > 0
    evaluation = result["eval"]
    assert evaluation["status"] == "done" and evaluation["model"] == "bilateral_consensus"
    assert 0.0 <= evaluation["acc"] <= 1.0 and evaluation["seconds"] > 0
    assert result["create"]["seconds"] > 0 and result["total_seconds"] > 0
    assert not any((tmp_path / "work").iterdir()), "the work folder was not cleaned up"
    assert "gpu_check on cpu" in proc.stdout
