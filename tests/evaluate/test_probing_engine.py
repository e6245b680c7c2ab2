"""The built-in probing engine end to end on tiny random Llama models (byte tokenizer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mergepipe.cli import main as cli_main
from mergepipe.core.models import fingerprint
from mergepipe.core.records import MergeRecord
from mergepipe.evaluate.holmes.data import load_dataset
from mergepipe.evaluate.holmes.encode import encode_dataset, load_frozen_model
from mergepipe.evaluate.holmes.probe import control_labels, run_probing
from mergepipe.evaluate.holmes.results_file import CONTROL_TYPE, RESULT_COLUMNS
from mergepipe.evaluate.holmes.train import macro_f1, pearson, train_probe
from tests.helpers.holmes_data import (
    FLASH,
    copy_fixture,
    needs_fixtures,
    sentence_rows,
    span_rows,
    split_rows,
    token_rows,
    write_dataset,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lm(tiny_models):
    return load_frozen_model(tiny_models.base, "full", fingerprint(tiny_models.base), "cpu")


def _hidden(lm, text: str, layer: int = -1) -> torch.Tensor:
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids.shape[1] == len(text.encode())  # byte tokenizer: one token per byte, no specials
    with torch.no_grad():
        return lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]


def test_sentence_and_pair_features(lm, tmp_path: Path) -> None:
    ds = load_dataset(write_dataset(tmp_path, "s", "SENTENCE", sentence_rows()))
    feats = encode_dataset(lm, ds, -1, 5, 128, None)
    assert feats.shape == (52, 32) and feats.dtype == torch.float32
    # Mask-aware mean pooling: batching with padding changes nothing.
    torch.testing.assert_close(feats[7], _hidden(lm, ds.samples[7].texts[0]).mean(0), atol=1e-5, rtol=1e-4)
    pair = split_rows(lambda i: {"inputs": repr((f"a cat {i}.", "it sleeps.")), "label": i % 2})
    bi = load_dataset(write_dataset(tmp_path, "bi", "SENTENCE_PAIR_BI", pair))
    fb = encode_dataset(lm, bi, -1, 8, 128, None)
    assert fb.shape == (52, 64)
    torch.testing.assert_close(fb[2, 32:], _hidden(lm, "it sleeps.").mean(0), atol=1e-5, rtol=1e-4)
    cross = load_dataset(write_dataset(tmp_path, "cross", "SENTENCE_PAIR_CROSS", pair))
    fc = encode_dataset(lm, cross, -1, 8, 128, None)
    assert fc.shape == (52, 32)
    # No sep token in the byte tokenizer: the pair is joined by two spaces, as upstream does.
    torch.testing.assert_close(fc[2], _hidden(lm, "a cat 2.  it sleeps.").mean(0), atol=1e-5, rtol=1e-4)


def test_token_and_span_features_pool_their_bytes(lm, tmp_path: Path) -> None:
    tok = load_dataset(write_dataset(tmp_path, "tok", "SENTENCE_TOKENS", token_rows()))
    ft = encode_dataset(lm, tok, 1, 8, 128, None)
    assert ft.shape == (52, 64)
    h = _hidden(lm, "the cat sees 3 dogs", layer=1)
    torch.testing.assert_close(ft[3], torch.cat([h[4:7].mean(0), h[15:19].mean(0)]), atol=1e-5, rtol=1e-4)
    spans = load_dataset(write_dataset(tmp_path, "spans", "SENTENCE_SPANS", span_rows(), num_labels=3))
    fs = encode_dataset(lm, spans, -1, 8, 128, None)
    assert fs.shape == (52, 64)
    h0, h1 = _hidden(lm, "a red cat 0."), _hidden(lm, "it sleeps.")
    span0 = torch.stack([h0[2:5].mean(0), h0[6:9].mean(0)]).mean(0)  # words averaged within a span
    torch.testing.assert_close(fs[0], torch.cat([span0, h1[0:2].mean(0)]), atol=1e-5, rtol=1e-4)


def test_encoding_cache_is_reused(lm, tmp_path: Path) -> None:
    ds = load_dataset(write_dataset(tmp_path, "s", "SENTENCE", sentence_rows()))
    cache = tmp_path / "cache"
    first = encode_dataset(lm, ds, -1, 8, 128, cache)
    files = list(cache.rglob("*.pt"))
    assert len(files) == 1
    torch.save(first * 0 + 7, files[0])  # a cached file is trusted, so this value must come back
    assert torch.all(encode_dataset(lm, ds, -1, 8, 128, cache) == 7)
    encode_dataset(lm, ds, 0, 8, 128, cache)  # another layer: another cache entry
    assert len(list(cache.rglob("*.pt"))) == 2


def test_metrics() -> None:
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])) == 1.0
    # class 0: P=1/2 R=1/2 -> 0.5; class 1: P=1/2 R=1/2 -> 0.5
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == 0.5
    # all predicted 0: F1(0)=2*2/(4+2)=2/3, F1(1)=0
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])) == pytest.approx(1 / 3)
    assert pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6.5])) == pytest.approx(0.9986, abs=1e-3)
    assert pearson(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])) == 0.0


def test_probe_learns_separable_data_and_not_permuted_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=gen) * 3
    y = (x[:, 0] > 0).long()
    tr, dev, te = slice(0, 200), slice(200, 300), slice(300, 600)
    score = train_probe(x[tr], y[tr], x[dev], y[dev], x[te], y[te], 2, seed=0)
    assert score > 0.9
    yc = torch.from_numpy(control_labels(y.numpy()))
    control = train_probe(x[tr], yc[tr], x[dev], yc[dev], x[te], yc[te], 2, seed=0)
    assert control < 0.65
    # Regression: Pearson of a linear target (more rows: the protocol has a fixed, low lr).
    xr = torch.randn(1400, 4, generator=gen)
    yr = xr[:, 1] * 2.0
    tr, dev, te = slice(0, 1000), slice(1000, 1200), slice(1200, 1400)
    assert train_probe(xr[tr], yr[tr], xr[dev], yr[dev], xr[te], yr[te], 1, seed=1) > 0.8
    tr, dev, te = slice(0, 200), slice(200, 300), slice(300, 600)
    # Same seed, same score.
    assert train_probe(x[tr], y[tr], x[dev], y[dev], x[te], y[te], 2, seed=0) == score


@needs_fixtures
def test_run_on_real_fixtures_writes_upstream_schema(tiny_models, tmp_path: Path) -> None:
    out = tmp_path / "holmes_results"
    run = run_probing(str(tiny_models.base), FLASH, out, seeds=2, cache_dir=tmp_path / "cache",
                      role="base", run_name="r1")
    assert [o.status for o in run.outcomes] == ["done"] * 3
    assert run.results_csv == out / run.model_id / "results_flash-holmes.csv"
    frame = pd.read_csv(run.results_csv)
    assert list(frame.columns) == RESULT_COLUMNS
    assert len(frame) == 3 * 2 * 2  # datasets x seeds x (task + control)
    assert set(frame["control_task_type"]) == {"NONE", CONTROL_TYPE}
    assert set(frame["sample_size"]) == {643} and set(frame["model_name"]) == {run.model_id}
    assert frame["score"].between(0, 1).all()
    info = json.loads((out / run.model_id / "model_info.json").read_text())
    assert info["role"] == "base" and info["run"] == "r1" and info["model_id"] == run.model_id
    assert info["reference"] == str(tiny_models.base) and info["merge_method"] is None
    status = json.loads((out / run.model_id / "run_flash-holmes.json").read_text())
    assert status["complete"] and status["datasets"]["blimp-inchoative"]["status"] == "done"


def test_resume_per_dataset(tiny_models, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("a", "b"):
        write_dataset(data, name, "SENTENCE", sentence_rows())
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = run_probing(str(tiny_models.base), data, out, seeds=1, cache_dir=cache, control_task=False)
    per = out / run.model_id / "datasets_data"
    stored = (per / "a.csv").read_text()
    (per / "a.csv").write_text(stored.replace("NONE", "NONE", 1))  # untouched content, new mtime
    (per / "b.json").unlink()  # b looks unfinished (rows without their meta): must be recomputed
    again = run_probing(str(tiny_models.base), data, out, seeds=1, cache_dir=cache, control_task=False)
    assert [(o.name, o.status) for o in again.outcomes] == [("a", "reused"), ("b", "done")]
    assert len(pd.read_csv(again.results_csv)) == 2
    # Different settings (more seeds) are not the same work: recomputed.
    third = run_probing(str(tiny_models.base), data, out, seeds=2, cache_dir=cache, control_task=False)
    assert [o.status for o in third.outcomes] == ["done", "done"]
    assert sorted(pd.read_csv(third.results_csv)["seed"]) == [0, 0, 1, 1]


def test_bad_datasets_fail_alone_and_cli_exit_code(tiny_models, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    write_dataset(data, "good", "SENTENCE", sentence_rows())
    bad = write_dataset(data, "no-config", "SENTENCE", sentence_rows())
    (bad / "config-none.yaml").unlink()
    rows = sentence_rows()
    rows[3]["label"] = 5
    write_dataset(data, "label-range", "SENTENCE", rows)
    write_dataset(data, "pair-tokens", "SENTENCE_PAIR_TOKENS_CROSS", sentence_rows())
    out = tmp_path / "out"
    # A merged model: its merge record says what it is.
    merged = Path(shutil.copytree(tiny_models.base, tmp_path / "merged" / "ties"))
    MergeRecord(name="ties", run="r", method="ties", parameters={"density": 0.5}).write(merged)
    code = cli_main(["probe", str(merged), "--data-dir", str(data), "--out", str(out),
                     "--seeds", "1", "--cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 1
    assert "error: dataset label-range, samples.csv row 5: label 5 is out of range" in captured.err
    assert "error: dataset no-config: config-none.yaml is missing" in captured.err
    assert "pair-tokens: skipped" in captured.out and "SENTENCE_PAIR_TOKENS_CROSS" in captured.out
    assert "good: done in " in captured.out
    results = list(out.glob("*/results_data.csv"))
    assert len(results) == 1
    frame = pd.read_csv(results[0])
    assert set(frame["probing_dataset"]) == {"good"} and len(frame) == 2
    info = json.loads((results[0].parent / "model_info.json").read_text())
    assert info["role"] == "merged" and info["merge_parameters"] == {"density": 0.5}
    assert info["merge_method"] == "ties" and info["run"] == "r"


def test_cli_rejects_bad_flags(tiny_models, tmp_path: Path, capsys) -> None:
    code = cli_main(["probe", str(tiny_models.base), "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert code != 0 and "probing data directory not found" in capsys.readouterr().err
    code = cli_main(["probe", str(tiny_models.base), "--data-dir", str(tmp_path), "--seeds", "0"])
    assert code != 0 and "seeds" in capsys.readouterr().err
    data = tmp_path / "d"
    write_dataset(data, "x", "SENTENCE", sentence_rows())
    code = cli_main(["probe", str(tiny_models.base), "--data-dir", str(data), "--out", str(tmp_path / "o"),
                     "--layer", "7", "--cache-dir", str(tmp_path / "c")])
    assert code != 0 and "holmes.layer 7 is out of range" in capsys.readouterr().err


@needs_fixtures
def test_fixture_copy_runs_with_cli(tiny_models, tmp_path: Path, capsys) -> None:
    data = tmp_path / "flash"
    copy_fixture("blimp-inchoative", data)
    code = cli_main(["probe", str(tiny_models.base), "--data-dir", str(data), "--out", str(tmp_path / "o"),
                     "--seeds", "1", "--no-control", "--cache-dir", str(tmp_path / "c"), "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "blimp-inchoative: done in " in out and "1 dataset(s) probed, 0 failed" in out


def test_zoo_probing_sets_read_and_probe(tiny_models, tmp_path: Path) -> None:
    """The zoo's Holmes-format sets (all five competences, three probe types) run end to end."""
    zoo_probing = pytest.importorskip("mergepipe.zoo.probing")
    from mergepipe.evaluate.holmes.results_file import read_results_csv
    from mergepipe.results.holmes_scoring import competence_scores, dataset_scores, find_mapping, load_mapping

    data = tmp_path / "probing"
    zoo_probing.write_probing(data, 0)
    types = {f.name: load_dataset(f).probe_type for f in sorted(data.iterdir()) if f.is_dir()}
    assert {"SENTENCE", "SENTENCE_TOKENS", "SENTENCE_PAIR_BI"} <= set(types.values())
    run = run_probing(str(tiny_models.base), data, tmp_path / "out", seeds=1, control_task=False,
                      cache_dir=tmp_path / "cache")
    assert not run.failed and len(run.outcomes) == len(types)
    mapping = load_mapping(find_mapping([data]))
    comp = competence_scores(dataset_scores(read_results_csv(run.results_csv, "m")), mapping)
    assert set(comp["competence"]) == {"morphology", "syntax", "semantics", "reasoning", "discourse"}


def test_adapter_models_are_probed_merged_into_their_base(tiny_models, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    lora = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(base, lora)
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)  # no tokenizer here: it comes from the base named in adapter_config
    lm_adapter = load_frozen_model(adapter, "adapter", fingerprint(adapter), "cpu")
    lm_base = load_frozen_model(tiny_models.base, "full", fingerprint(tiny_models.base), "cpu")
    ds = load_dataset(write_dataset(tmp_path, "s", "SENTENCE", sentence_rows()))
    with_adapter = encode_dataset(lm_adapter, ds, -1, 8, 128, None)
    assert with_adapter.shape == (52, 32)
    assert not torch.allclose(with_adapter, encode_dataset(lm_base, ds, -1, 8, 128, None))
