"""One lm-eval job: scores identical to the lm_eval CLI, lm-eval's file layout, resume, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mergepipe.config import HarnessSettings
from mergepipe.config.options import validate_with_flags
from mergepipe.core.records import ModelInfo
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.harness.results import find_finished, remove_incomplete, settings_hash
from mergepipe.evaluate.harness.run import run_harness
from mergepipe.evaluate.harness.tasks import parse_tasks, select_tasks
from mergepipe.evaluate.models import prepare_model
from tests.helpers.lm_eval_tasks import job_env
from tests.helpers.paths import REPO, VENV_BIN


def _metrics(results_file: Path) -> dict[str, dict[str, float]]:
    data = json.loads(results_file.read_text())
    return {task: {k: v for k, v in m.items() if isinstance(v, (int, float))}
            for task, m in data["results"].items()}


@pytest.mark.slow
def test_scores_identical_to_lm_eval_cli(tiny_models, tasks_dir: Path, tmp_path: Path) -> None:
    model = tiny_models.experts[0]
    cli_out, ours = tmp_path / "cli", tmp_path / "harness_results"
    # Both run at once: same model, tasks and settings (seed 7, batch size 1, limit 10).
    cli = subprocess.Popen(
        [str(VENV_BIN / "lm_eval"), "run", "--model", "hf", "--model_args", f"pretrained={model}",
         "--tasks", "tiny_mc,tiny_gen", "--include_path", str(tasks_dir), "--output_path", str(cli_out),
         "--log_samples", "--seed", "7", "--batch_size", "1", "--limit", "10", "--device", "cpu"],
        env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mine = subprocess.run(
        [str(REPO / "eval-harness.sh"), str(model), "tiny_mc,tiny_gen", "--include-path", str(tasks_dir),
         "--results-dir", str(ours), "--seed", "7", "--batch-size", "1", "--limit", "10", "--device", "cpu"],
        env=job_env(), capture_output=True, text=True)
    cli_log = cli.communicate()[0]
    assert mine.returncode == 0, mine.stdout + mine.stderr
    assert cli.returncode == 0, cli_log

    cli_results = list(cli_out.glob("*/results_*.json"))
    our_results = list(ours.glob("*/*/results_*.json"))
    assert len(cli_results) == 1 and len(our_results) == 1
    ref, got = _metrics(cli_results[0]), _metrics(our_results[0])
    assert set(ref) == {"tiny_mc", "tiny_gen"}
    assert got == ref  # every metric and stderr, exactly

    # lm-eval's own layout: results_<ts>.json + samples_<task>_<ts>.jsonl, same keys as the CLI's.
    folder = our_results[0].parent
    stamp = our_results[0].stem.removeprefix("results_")
    assert {p.name for p in folder.iterdir()} == {
        our_results[0].name, f"samples_tiny_mc_{stamp}.jsonl", f"samples_tiny_gen_{stamp}.jsonl"}
    assert folder.name == "tiny_mc+tiny_gen"
    cli_data, our_data = json.loads(cli_results[0].read_text()), json.loads(our_results[0].read_text())
    assert set(our_data) - set(cli_data) == {"mergepipe"}
    n_cli = sum(1 for _ in next(cli_results[0].parent.glob("samples_tiny_mc_*.jsonl")).open())
    assert sum(1 for _ in (folder / f"samples_tiny_mc_{stamp}.jsonl").open()) == n_cli == 10

    record = our_data["mergepipe"]
    for key in ("backend", "dtype", "batch_size", "num_fewshot", "apply_chat_template", "seed", "limit",
                "lm_eval_version", "transformers_version", "model_content_hash", "settings_hash"):
        assert key in record, key
    assert record["seed"] == 7 and record["limit"] == 10 and record["apply_chat_template"] is False
    assert record["model_id"] == folder.parent.name == prepare_model(str(model)).model_id
    info = ModelInfo.read(folder.parent)
    assert info is not None and info.reference == str(model) and info.local_dir == str(model)


@pytest.mark.slow
def test_second_run_is_skipped_and_settings_change_reruns(tiny_models, tasks_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    settings = HarnessSettings(limit=4, seed=1)
    first = run_harness(str(tiny_models.base), ["tiny_mc"], results_dir=tmp_path, settings=settings,
                        include_paths=[tasks_dir], device="cpu", role="base")
    assert first.status == "done" and first.scores["tiny_mc"]["sample_len"] == 4
    again = run_harness(str(tiny_models.base), ["tiny_mc"], results_dir=tmp_path, settings=settings,
                        include_paths=[tasks_dir], device="cpu")
    assert again.status == "skipped" and again.results_file == first.results_file
    assert "skip:" in capsys.readouterr().out
    assert ModelInfo.read(tmp_path / first.model_id).role == "base"
    # Another batch size is another job: the old results do not count as finished for it.
    other = settings_hash(first.model_id, ["tiny_mc"], HarnessSettings(limit=4, seed=1, batch_size=2))
    assert find_finished(first.results_file.parent, other) is None
    assert find_finished(first.results_file.parent,
                         settings_hash(first.model_id, ["tiny_mc"], settings)) == first.results_file


def test_interrupted_job_leaves_nothing_finished(tiny_models, tmp_path: Path) -> None:
    """Leftovers of a killed job (staging folder, samples without results) are not results."""
    model_dir = tmp_path / "m-1234"
    suite_dir = model_dir / "s"
    staging = model_dir / ".s.tmp-999"
    (staging / "x").mkdir(parents=True)
    (staging / "x" / "results_2026-01-01T00-00-00.json").write_text(json.dumps({"mergepipe": {"settings_hash": "h"}}))
    suite_dir.mkdir()
    orphan = suite_dir / "samples_tiny_mc_2026-01-01T00-00-00.jsonl"
    orphan.write_text("{}\n")
    kept = suite_dir / "samples_tiny_mc_2026-01-02T00-00-00.jsonl"
    kept.write_text("{}\n")
    (suite_dir / "results_2026-01-02T00-00-00.json").write_text(json.dumps({"mergepipe": {"settings_hash": "h"}}))
    assert find_finished(suite_dir, "h") == suite_dir / "results_2026-01-02T00-00-00.json"
    assert find_finished(suite_dir, "other") is None
    removed = remove_incomplete(model_dir, suite_dir)
    assert set(removed) == {staging, orphan}
    assert kept.exists() and not staging.exists() and not orphan.exists()


# -- bad input: one line, before anything heavy runs ------------------------------------------

def test_unknown_task_lists_close_matches(tiny_models, tasks_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MergepipeError, match=r"unknown lm-eval task 'tiny_mcc' \(did you mean tiny_mc") as exc:
        select_tasks(["tiny_mcc"], [tasks_dir])
    assert "\n" not in str(exc.value)


def test_task_yaml_syntax_error_names_file_and_line(tiny_models, tasks_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.yaml").write_text("task: bad\ndataset_path: json\n  nested: [oops\n")
    with pytest.raises(MergepipeError, match=r"task YAML .*bad\.yaml: line \d+"):
        run_harness(str(tiny_models.base), ["tiny_mc"], results_dir=tmp_path / "r",
                    include_paths=[tasks_dir, broken], device="cpu")


def test_missing_model_and_unwritable_dir(tiny_models, tasks_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MergepipeError, match="model path not found: /no/such/model"):
        run_harness("/no/such/model", ["tiny_mc"], results_dir=tmp_path, include_paths=[tasks_dir])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MergepipeError, match=r"results dir: .*file/sub is not writable"):
        run_harness(str(tiny_models.base), ["tiny_mc"], results_dir=blocker / "sub", include_paths=[tasks_dir])


def test_cli_one_line_errors(tiny_models, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mergepipe.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main(["eval-harness", str(tiny_models.base), "tiny_mc", "--gpu", "3"]) == 2
    assert capsys.readouterr().err.strip() == "error: GPU 3 does not exist (no GPU is visible)"
    assert main(["eval-harness", str(tiny_models.not_a_model), "tiny_mc", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MODEL: ") and "not a model directory" in err and "\n" not in err


def test_cli_gpu_error_message(tiny_models, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mergepipe.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert main(["eval-harness", str(tiny_models.base), "tiny_mc", "--gpu", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: GPU 5 does not exist (visible GPUs: 0, 1)"


def test_parse_tasks_and_settings_validation() -> None:
    assert parse_tasks(["a,b", "c", "a"]) == ["a", "b", "c"]
    with pytest.raises(MergepipeError, match="no task names"):
        parse_tasks(" , ")
    # Settings from flags are validated by the model they are generated from; errors name the flag.
    with pytest.raises(MergepipeError, match=r"^--batch-size: must be a positive integer or 'auto', got 0$"):
        validate_with_flags(HarnessSettings, {}, {"batch_size": "0"})
    with pytest.raises(MergepipeError, match=r"^--backend: Input should be 'hf' or 'vllm'$"):
        validate_with_flags(HarnessSettings, {}, {"backend": "onnx"})
    assert validate_with_flags(HarnessSettings, {}, {"batch_size": "auto", "limit": "3"}).batch_size == "auto"
    assert HarnessSettings(limit=0.5).lm_eval_limit() == 0.5
    assert HarnessSettings(limit=10.0).lm_eval_limit() == 10


def test_model_ids_keep_hub_org() -> None:
    from mergepipe.core.models import model_id

    assert model_id("a/x") == "a__x" != model_id("b/x")


@pytest.mark.slow
def test_lora_adapter_is_evaluated_over_its_base(tiny_models, tasks_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(LlamaForCausalLM.from_pretrained(tiny_models.base),
                                LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    prepared = prepare_model(str(adapter))
    assert prepared.kind == "adapter" and prepared.base_dir == tiny_models.base.resolve()
    out = run_harness(prepared, ["tiny_mc"], results_dir=tmp_path / "r", settings=HarnessSettings(limit=4),
                      include_paths=[tasks_dir], device="cpu")
    data = json.loads(out.results_file.read_text())
    assert data["config"]["model_args"] == {"pretrained": str(tiny_models.base.resolve()), "peft": str(adapter)}
    assert data["mergepipe"]["model_kind"] == "adapter" and out.model_id.startswith("adapter-")
    assert out.scores["tiny_mc"]["sample_len"] == 4


@pytest.mark.slow
def test_zoo_models_and_tasks(zoo, tmp_path: Path) -> None:
    """zoo:// references and the zoo's tasks need no include path; a zoo LoRA runs over its base."""
    settings = HarnessSettings(limit=4, seed=0)
    full = run_harness("zoo://base", ["zoo_inc", "zoo_inc_mc"], results_dir=tmp_path, settings=settings,
                       device="cpu", role="base")
    assert full.status == "done" and full.model_id.startswith("zoo-base-")
    assert {"zoo_inc", "zoo_inc_mc"} <= set(full.scores)
    assert full.scores["zoo_inc_mc"]["sample_len"] == 4
    record = json.loads(full.results_file.read_text())["mergepipe"]
    assert record["builtin_tasks_indexed"] is False and record["reference"] == "zoo://base"
    lora = run_harness("zoo://inc-lora", ["zoo_inc_mc"], results_dir=tmp_path, settings=settings, device="cpu")
    data = json.loads(lora.results_file.read_text())
    assert data["mergepipe"]["model_kind"] == "adapter" and "peft" in data["config"]["model_args"]
    assert lora.model_id.startswith("zoo-inc-lora-")


def test_vllm_backend_needs_vllm(tiny_models, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(MergepipeError, match="--backend vllm: the vllm package is not installed"):
        run_harness(str(tiny_models.base), ["tiny_mc"], results_dir=tmp_path,
                    settings=HarnessSettings(backend="vllm"))
