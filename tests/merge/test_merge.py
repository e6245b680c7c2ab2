"""The merge stage on tiny Llama models: every method, exact results, atomicity, skipping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mergepipe.cli import main
from mergepipe.config import load_config
from mergepipe.merge.catalogue import catalogue
from mergepipe.merge.run import prepare, run_merges

PY = sys.executable


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def write_config(tmp: Path, family, methods, experts=None, **extra) -> Path:
    data = {
        "run": "t",
        "base_model": str(family.base),
        "models": [str(p) for p in (experts if experts is not None else family.experts[:2])],
        "dtype": "float32",
        "merge": {"methods": methods},
        "outputs": {"merged_models": str(tmp / "merged"), "merge_config": str(tmp / "configs")},
        **extra,
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def merge(path: Path):
    config = load_config(path)
    plans, _ = prepare(config)
    return config, run_merges(config, plans, report=lambda _msg: None)


def test_every_catalogue_method_merges_to_a_loadable_model(tmp_path, tiny_models):
    from transformers import AutoModelForCausalLM

    methods = [m for m in catalogue() if m != "passthrough"]
    config, outcomes = merge(write_config(tmp_path, tiny_models, methods))
    assert {o.status for o in outcomes} == {"merged"}, [(o.name, o.error) for o in outcomes]
    expected = set(weights(tiny_models.base))
    for outcome in outcomes:
        merged = weights(outcome.output_dir)
        assert set(merged) == expected, outcome.name
        assert not any(torch.isnan(t).any() for t in merged.values()), outcome.name
        model = AutoModelForCausalLM.from_pretrained(outcome.output_dir)
        logits = model(torch.tensor([[5, 6, 7]])).logits
        assert torch.isfinite(logits).all(), outcome.name
        record = json.loads((outcome.output_dir / "mergepipe_merge.json").read_text())
        assert record["method"] == outcome.name
        assert record["output_bytes"] > 0 and record["peak_rss_bytes"] > 0
        assert (config.outputs.merge_config / "t" / f"{outcome.name}.yaml").is_file()
        assert (outcome.output_dir / "tokenizer.json").is_file()


def test_passthrough_of_one_expert_copies_it(tmp_path, tiny_models):
    _, (outcome,) = merge(write_config(tmp_path, tiny_models, ["passthrough"], experts=tiny_models.experts[:1]))
    got, want = weights(outcome.output_dir), weights(tiny_models.experts[0])
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_linear_half_half_is_the_exact_mean(tmp_path, tiny_models):
    _, (outcome,) = merge(write_config(tmp_path, tiny_models, [{"name": "linear", "parameters": {"weight": 0.5}}]))
    a, b, got = weights(tiny_models.experts[0]), weights(tiny_models.experts[1]), weights(outcome.output_dir)
    for name in a:
        torch.testing.assert_close(got[name], (a[name] + b[name]) / 2, rtol=0, atol=1e-6)


def test_task_arithmetic_of_one_expert_with_weight_one_is_that_expert(tmp_path, tiny_models):
    _, (outcome,) = merge(write_config(tmp_path, tiny_models, ["task_arithmetic"], experts=tiny_models.experts[:1]))
    want, got = weights(tiny_models.experts[0]), weights(outcome.output_dir)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)


def test_slerp_at_t0_is_its_first_model(tmp_path, tiny_models):
    _, (outcome,) = merge(write_config(tmp_path, tiny_models, [{"name": "slerp", "parameters": {"t": 0.0}}]))
    want, got = weights(tiny_models.experts[0]), weights(outcome.output_dir)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)


def test_dare_ties_with_the_same_seed_is_bit_identical(tmp_path, tiny_models):
    runs = []
    for i in range(2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        _, (outcome,) = merge(write_config(d, tiny_models, ["dare_ties"], seed=7))
        runs.append(weights(outcome.output_dir))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    # ...and the seed matters: the result is really random, not deterministic by accident.
    d = tmp_path / "other_seed"
    d.mkdir()
    _, (outcome,) = merge(write_config(d, tiny_models, ["dare_ties"], seed=8))
    other = weights(outcome.output_dir)
    assert any(not torch.equal(runs[0][k], other[k]) for k in other)


def test_repeated_method_gets_unique_readable_names(tmp_path, tiny_models):
    methods = [{"name": "ties", "parameters": {"density": 0.3}}, {"name": "ties", "parameters": {"density": 0.7}}]
    _, outcomes = merge(write_config(tmp_path, tiny_models, methods))
    assert [o.name for o in outcomes] == ["ties-density0.3", "ties-density0.7"]
    a, b = weights(outcomes[0].output_dir), weights(outcomes[1].output_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_second_run_skips_and_changed_config_remerges(tmp_path, tiny_models):
    path = write_config(tmp_path, tiny_models, ["linear", "ties"])
    _, first = merge(path)
    stamp = (first[0].output_dir / "model.safetensors").stat().st_mtime_ns
    _, second = merge(path)
    assert [o.status for o in second] == ["skipped", "skipped"]
    assert (first[0].output_dir / "model.safetensors").stat().st_mtime_ns == stamp
    write_config(tmp_path, tiny_models, ["linear", {"name": "ties", "parameters": {"density": 0.8}}])
    _, third = merge(path)
    assert [o.status for o in third] == ["skipped", "merged"]


_KILL_SCRIPT = """
import sys, time
import mergekit.merge
real = mergekit.merge.run_merge
def slow(*args, **kwargs):
    real(*args, **kwargs)
    print("WRITTEN", flush=True)
    time.sleep(60)  # killed here: weights on disk, not yet renamed into place
mergekit.merge.run_merge = slow
from mergepipe.cli import main
sys.exit(main(["merge", "--config", sys.argv[1]]))
"""


def test_merge_killed_midway_leaves_nothing_complete_and_rerun_completes(tmp_path, tiny_models):
    path = write_config(tmp_path, tiny_models, ["ties"])
    proc = subprocess.Popen([PY, "-c", _KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    line = ""
    while "WRITTEN" not in line and time.time() < deadline:
        line = proc.stdout.readline() or line
        if proc.poll() is not None:
            break
    assert "WRITTEN" in line, "merge subprocess did not reach the write"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    final = tmp_path / "merged" / "t" / "ties"
    assert not final.exists()
    leftovers = list((tmp_path / "merged" / "t").iterdir())
    assert leftovers and all(p.name.startswith(".") for p in leftovers)  # only a hidden temporary
    _, (outcome,) = merge(path)
    assert outcome.status == "merged"
    assert (final / "mergepipe_merge.json").is_file()
    assert [p.name for p in (tmp_path / "merged" / "t").iterdir()] == ["ties"]


def test_merge_only_sh_with_familiar_flags_needs_no_config_file(tmp_path, tiny_models, repo_root):
    env = {**os.environ, "PATH": f"{repo_root / 'environments/main/bin'}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(repo_root / "merge_only.sh"), "--model-1", str(tiny_models.experts[0]),
         "--model-2", str(tiny_models.experts[1]), "--base-model", str(tiny_models.base),
         "--methods", "linear slerp ties dare_ties task_arithmetic", "--dtype", "float32"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "merged_models" / "default").iterdir())
    assert names == sorted(["linear", "slerp", "ties", "dare_ties", "task_arithmetic"])


def test_raw_mergekit_yaml_is_passed_through_unchanged(tmp_path, tiny_models):
    raw = {
        "merge_method": "linear",
        "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in tiny_models.experts[:2]],
        "dtype": "float32",
    }
    path = tmp_path / "my-linear.yml"
    path.write_text(yaml.safe_dump(raw))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["merge", "--config", str(path)]) == 0
    finally:
        os.chdir(cwd)
    written = yaml.safe_load((tmp_path / "merge_config" / "my-linear" / "my-linear.yaml").read_text())
    assert written == raw
    assert (tmp_path / "merged_models" / "my-linear" / "my-linear" / "mergepipe_merge.json").is_file()


def test_methods_json_lists_the_whole_catalogue(capsys):
    assert main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    for name in ["linear", "slerp", "nuslerp", "multislerp", "karcher", "task_arithmetic", "ties",
                 "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
                 "model_stock", "sce", "ram", "ramplus_tl", "arcee_fusion", "nearswap", "passthrough"]:
        assert name in listed, name
    assert listed["slerp"]["min_experts"] == listed["slerp"]["max_experts"] == 2
    assert listed["ties"]["needs_base"] is True
    assert listed["model_stock"]["min_experts"] == 2
    density = next(p for p in listed["ties"]["parameters"] if p["name"] == "density")
    assert density["default"] == 0.5 and density["per_model"] is True


@pytest.mark.parametrize("command", ["merge", "methods", "validate"])
def test_every_subcommand_documents_its_options(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage:" in text and "--help" in text
