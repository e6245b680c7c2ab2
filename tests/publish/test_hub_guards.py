"""Guards that run before any request: a token never ends up in a card or an uploaded file."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import constants

from mergepipe.config.hub import HubSection
from mergepipe.errors import ModelError
from mergepipe.publish.hub import PublishError, push_merged_model, scrub

FAKE_TOKEN = "hf_" + "GuardLeakCheck9Hj3Kl5Mn7Bv1Cx4Zq8"  # fake; split so no file holds a token-shaped literal


@pytest.fixture
def model_dir(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # any request would fail loudly
    path = tmp_path / "merged_models" / "demo" / "linear"
    shutil.copytree(tiny_models.experts[0], path)
    (path / "README.md").write_text("mergekit card\n")
    record = {"name": "linear", "method": "linear", "mergekit_config": {"merge_method": "linear"},
              "inputs": {"base": None, "experts": ["org/a", "org/b"]}}
    (path / "mergepipe_merge.json").write_text(json.dumps(record))
    return path


SETTINGS = HubSection(push=True, namespace="org")


def test_token_in_merge_record_is_never_written_to_the_card(model_dir):
    record = json.loads((model_dir / "mergepipe_merge.json").read_text())
    record["parameters"] = {"note": FAKE_TOKEN}
    (model_dir / "mergepipe_merge.json").write_text(json.dumps(record))
    with pytest.raises(PublishError) as exc:
        push_merged_model(model_dir, SETTINGS, run="demo", results_table=None)
    assert "would contain the Hub token" in str(exc.value) and FAKE_TOKEN not in str(exc.value)
    assert (model_dir / "README.md").read_text() == "mergekit card\n"


def test_file_containing_the_token_is_not_published(model_dir):
    (model_dir / "push.sh").write_text(f"export HF_TOKEN={FAKE_TOKEN}\n")
    with pytest.raises(PublishError) as exc:
        push_merged_model(model_dir, SETTINGS, run="demo", results_table=None)
    assert str(exc.value) == f"{model_dir / 'push.sh'}: contains the Hub token; remove it before publishing " \
        "(nothing was uploaded)"


def test_incomplete_merge_is_refused(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weight files"):
        push_merged_model(model_dir, SETTINGS, run="demo", results_table=None)


def test_scrub_removes_token_and_token_shapes():
    assert scrub(f"Bearer {FAKE_TOKEN} failed", FAKE_TOKEN) == "Bearer *** failed"
    assert scrub("header hf_abcdefghijklmnop leaked", None) == "header hf_*** leaked"
