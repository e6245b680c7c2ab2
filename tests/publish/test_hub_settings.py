"""The ``hub:`` section and the model card: bad input gives one clear line, before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import constants

from mergepipe.cli import main
from mergepipe.config import HubSection, build_config
from mergepipe.errors import ConfigError
from mergepipe.publish.card import agreed_license, build_model_card, eval_table_from_organized, read_front_matter
from mergepipe.publish.settings import check_publishing

FAKE_TOKEN = "hf_" + "SettingsLeakCheck4Lm8Pq2Zx6Cv0Bn3"  # fake; split so no file holds a token-shaped literal


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No HF_TOKEN and an empty login cache."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


@pytest.fixture
def online_with_token(no_token, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # Relative output locations resolve against the working directory.
    monkeypatch.chdir(tmp_path)


def _config(hub: dict, run: str = "demo", methods=("ties",)):
    return build_config({"run": run, "merge": {"methods": list(methods)}, "hub": hub}, "pipeline.yaml")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# -- settings --------------------------------------------------------------------------------

def test_defaults_are_safe():
    settings = HubSection()
    assert settings.push is False and settings.private is True and settings.delete_local_after_push is False
    assert settings.model_copy(update={"namespace": "org"}).repo_id_for(run="r1", name="ties") == "org/r1-ties"


@pytest.mark.parametrize(
    ("hub", "expected"),
    [
        ({"push": True, "token": FAKE_TOKEN}, "Hub token must not be stored"),
        ({"push": True, "hf_token": "x"}, "hub.hf_token: a Hub token must not be stored"),
        ({"push": True, "namespace": FAKE_TOKEN}, "hub.namespace: this value looks like a Hub token"),
        ({"namespace": "my org!"}, "hub.namespace: namespace 'my org!' contains ' ', '!'"),
        ({"namespace": "-org"}, "must not start or end with '-' or '.'"),
        ({"namespace": "a--b"}, "must not contain '--' or '..'"),
        ({"namespace": "org/repo"}, "must be a user or organisation name only"),
        ({"repo_name": "{run}-{model}"}, "unknown field {model}"),
        ({"pushh": True}, "unknown key 'hub.pushh' (did you mean 'hub.push'?)"),
        ({"private": "maybe"}, "hub.private"),
    ],
)
def test_bad_hub_settings_are_one_line(hub, expected):
    with pytest.raises(ConfigError) as exc:
        build_config({"hub": hub}, "pipeline.yaml")
    text = _one_line(exc)
    assert expected in text
    assert FAKE_TOKEN not in text


def test_token_in_config_file_is_refused(tmp_path):
    from mergepipe.config import load_config

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"hub": {"push": True, "token": FAKE_TOKEN}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "HF_TOKEN" in _one_line(exc) and FAKE_TOKEN not in str(exc.value)


def test_token_pasted_elsewhere_in_config_is_refused(online_with_token):
    with pytest.raises(ConfigError) as exc:
        build_config({"models": ["org/model", f"/models/{FAKE_TOKEN}"]}, "pipeline.yaml")
    text = _one_line(exc)
    assert text.startswith("pipeline.yaml: models[1]: this value looks like a Hub token")
    assert FAKE_TOKEN not in text


def test_repo_name_too_long(online_with_token):
    config = _config({"push": True, "namespace": "org"}, run="r" * 60, methods=[{"name": "ties", "label": "x" * 40}])
    with pytest.raises(ConfigError) as exc:
        check_publishing(config)
    assert "101 characters long; the Hub allows at most 96" in _one_line(exc)


def test_push_without_token_fails_in_validation(no_token):
    config = _config({"push": True, "namespace": "org"})
    with pytest.raises(ConfigError) as exc:
        check_publishing(config)
    assert "no Hub token was found; set HF_TOKEN" in _one_line(exc)
    # Not publishing: no token needed.
    assert check_publishing(_config({"namespace": "org"})).push is False


def test_push_without_namespace(online_with_token):
    with pytest.raises(ConfigError) as exc:
        check_publishing(_config({"push": True}))
    assert "hub.namespace" in _one_line(exc)


def test_offline_mode_is_reported_before_work(online_with_token, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as exc:
        check_publishing(_config({"push": True, "namespace": "org"}))
    assert "offline mode" in _one_line(exc)


# -- the push command's dry run --------------------------------------------------------------

def _merged(root: Path, run: str, name: str) -> Path:
    model_dir = root / "merged_models" / run / name
    model_dir.mkdir(parents=True)
    (model_dir / "mergepipe_merge.json").write_text(json.dumps({"name": name, "method": "ties"}))
    return model_dir


def test_dry_run_lists_repositories(tmp_path, capsys, online_with_token):
    _merged(tmp_path, "demo", "ties-d0.5")
    _merged(tmp_path, "demo", "linear")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"run": "demo", "hub": {"namespace": "org"}}))
    assert main(["push", "--dry-run", "--config", str(cfg), "--public"]) == 0
    out = capsys.readouterr().out
    assert "2 model(s) to publish (public when created)" in out
    assert "org/demo-ties-d0.5" in out and "org/demo-linear" in out


@pytest.mark.parametrize(
    ("hub", "flags", "expected"),
    [
        ({"namespace": "org", "delete_local": True}, [], "unknown key 'hub.delete_local'"),
        ({"namespace": "org"}, ["--namespace", "bad name"], "--namespace: namespace 'bad name' contains"),
        ({}, [], "hub.namespace: set the Hub user or organisation"),
        ({"namespace": "org", "repo_name": "{name}" + "y" * 90}, [], "the Hub allows at most 96"),
        ({"namespace": "org", "token": FAKE_TOKEN}, [], "Hub token must not be stored"),
    ],
)
def test_dry_run_with_invalid_config_is_one_line(tmp_path, capsys, online_with_token, hub, flags, expected):
    _merged(tmp_path, "demo", "ties-d0.5")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"run": "demo", "hub": hub}))
    assert main(["push", "--dry-run", "--config", str(cfg), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
    assert FAKE_TOKEN not in err[0]


def test_dry_run_without_token_or_models(tmp_path, capsys, no_token):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"run": "demo", "hub": {"namespace": "org"}}))
    assert main(["push", "--dry-run", "--config", str(cfg)]) == 2
    assert "no merged models to publish; run 'mergepipe merge' first" in capsys.readouterr().err
    _merged(tmp_path, "demo", "ties")
    assert main(["push", "--dry-run", "--config", str(cfg)]) == 2
    assert "no Hub token was found" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [[], ["--dry-run"]])
def test_run_with_push_but_no_token_fails_before_merging(tiny_models, tmp_path, capsys, monkeypatch, no_token,
                                                         flags):
    # The default evaluation uses the demo zoo's tasks: the token check must come before its build.
    monkeypatch.setenv("MERGEPIPE_ZOO_DIR", str(tmp_path / "zoo"))
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({
        "run": "demo", "base_model": str(tiny_models.base),
        "models": [str(p) for p in tiny_models.experts[:2]], "dtype": "float32",
        "merge": {"methods": ["linear"]}, "hub": {"push": True, "namespace": "org"},
    }))
    assert main(["run", "--config", str(cfg), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no Hub token was found" in err[0]
    assert not (tmp_path / "merged_models" / "demo").exists()
    assert not (tmp_path / "zoo").exists()


# -- model card ------------------------------------------------------------------------------

def _model_with_license(root: Path, name: str, license: str | None) -> str:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text("{}")
    if license:
        (path / "README.md").write_text(f"---\nlicense: {license}\n---\n# {name}\n")
    return str(path)


def test_license_only_when_all_inputs_agree(tmp_path):
    a = _model_with_license(tmp_path, "a", "apache-2.0")
    b = _model_with_license(tmp_path, "b", "Apache-2.0")
    c = _model_with_license(tmp_path, "c", "mit")
    d = _model_with_license(tmp_path, "d", None)
    assert agreed_license([a, b]) == "apache-2.0"
    assert agreed_license([a, c]) is None
    assert agreed_license([a, d]) is None  # unknown is not agreement
    record = {"name": "m", "method": "linear", "inputs": {"base": None, "experts": [a, b]}}
    meta = read_front_matter(build_model_card(record, "merge_method: linear\n"))
    assert meta["license"] == "apache-2.0"
    assert "base_model" not in meta  # local directories are not Hub ids
    record["inputs"]["experts"] = [a, c]
    assert "license" not in read_front_matter(build_model_card(record, "merge_method: linear\n"))
    forced = build_model_card(record, "merge_method: linear\n", license="other")
    assert read_front_matter(forced)["license"] == "other"


def test_card_lists_local_inputs_in_body_and_hub_inputs_in_metadata(tmp_path):
    local = _model_with_license(tmp_path, "local-expert", None)
    record = {"name": "m", "method": "task_arithmetic", "parameters": {"weight": [0.3, 0.7]},
              "inputs": {"base": "org/base@v1", "experts": ["org/expert", local, "zoo://addition"]}}
    card = build_model_card(record, "merge_method: task_arithmetic\n", "| task | metric | value |")
    meta = read_front_matter(card)
    assert meta["base_model"] == ["org/base", "org/expert"]
    assert f"`{local}`" in card and "`zoo://addition`" in card
    assert "| `weight` | [0.3, 0.7] |" in card
    assert "| task | metric | value |" in card and "Not evaluated yet" not in card


def test_eval_table_reads_organized_results(tmp_path):
    (tmp_path / "harness.csv").write_text(
        "run,model_id,task,metric,filter,value,stderr\n"
        "demo,ties-0a1b2c3d,zoo_add,acc,none,0.5,\n"
        "other,ties-0a1b2c3d,zoo_add,acc,none,0.9,\n"
        "demo,ties-extra-0a1b2c3d,zoo_add,acc,none,0.7,\n"
    )
    (tmp_path / "holmes_competences.csv").write_text(
        "run,model_id,competence,mean_score\ndemo,ties-0a1b2c3d,syntax,0.61234\n"
    )
    table = eval_table_from_organized(tmp_path, "demo", "ties")
    assert table is not None
    assert table.splitlines()[2:] == ["| holmes: syntax | mean probing score | 0.6123 |", "| zoo_add | acc | 0.5000 |"]
    assert eval_table_from_organized(tmp_path, "demo", "linear") is None


def test_eval_table_labels_how_tinybenchmarks_scores_were_aggregated(tmp_path):
    (tmp_path / "harness.csv").write_text(
        "run,model_id,task,metric,filter,aggregation,value,stderr\n"
        "demo,ties-0a1b2c3d,tinyArc_mean,acc_norm,none,mean of items (not IRT): limit 3 < 100,0.5,\n"
        "demo,ties-0a1b2c3d,tinyMMLU,acc_norm,none,gp-IRT estimate (tinyBenchmarks),0.25,\n"
        "demo,ties-0a1b2c3d,boolq,acc,none,,0.75,\n"
    )
    rows = eval_table_from_organized(tmp_path, "demo", "ties").splitlines()[2:]
    assert rows == ["| boolq | acc | 0.7500 |",
                    "| tinyArc_mean | acc_norm, mean of items (not IRT) | 0.5000 |",
                    "| tinyMMLU | acc_norm, gp-IRT estimate (tinyBenchmarks) | 0.2500 |"]
