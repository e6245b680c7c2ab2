"""Publishing against a local Hub (tests/hub_server.py): real huggingface_hub client, real CLI.

Each push runs ``mergepipe push`` in a subprocess, because huggingface_hub reads HF_ENDPOINT and
HF_HUB_DISABLE_XET at import time and this test process runs with HF_HUB_OFFLINE=1. A local
server cannot speak Xet storage, so the client takes the plain LFS path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from mergepipe.publish.card import read_front_matter
from mergepipe.publish.hub import local_files
from tests.helpers.hub_server import FakeHub

# Token-shaped, unique, and never legitimately written anywhere.
FAKE_TOKEN = "hf_" + "PushLeakCheck7Qz4xW9bN2mK5vR8tY3uE6"  # fake; split so no file holds a token-shaped literal
RUN = "demo"
NAME = "ties-d0.5"
REPO_ID = f"test-user/{RUN}-{NAME}"
INPUTS = {"base": "acme/tiny-base", "experts": ["acme/tiny-expert-a", "acme/tiny-expert-b"]}
MERGEKIT_YAML = """\
merge_method: ties
base_model: acme/tiny-base
models:
  - model: acme/tiny-expert-a
    parameters: {weight: 0.5, density: 0.5}
  - model: acme/tiny-expert-b
    parameters: {weight: 0.5, density: 0.5}
parameters:
  normalize: true
dtype: float32
"""


@dataclass
class Layout:
    root: Path
    config: Path
    model_dir: Path
    hf_home: Path


def make_layout(root: Path, model_src: Path, hub: dict) -> Layout:
    """A run as the merge stage leaves it: model dir + merge record + exact mergekit YAML."""
    model_dir = root / "merged_models" / RUN / NAME
    shutil.copytree(model_src, model_dir)
    (model_dir / "README.md").write_text("---\ntags:\n- mergekit\n---\n# card written by mergekit\n")
    (model_dir / "mergekit_config.yml").write_text(MERGEKIT_YAML)
    record = {
        "name": NAME, "method": "ties", "parameters": {"weight": 0.5, "density": 0.5, "normalize": True},
        "mergekit_config": yaml.safe_load(MERGEKIT_YAML), "config_hash": "0123456789abcdef",
        "mergekit_version": "0.1.5", "seed": 42, "dtype": "float32", "device": "cpu",
        "wall_seconds": 1.0, "peak_rss_bytes": 1, "output_bytes": 1,
        "created_at": "2026-01-01T00:00:00+00:00", "inputs": INPUTS,
    }
    (model_dir / "mergepipe_merge.json").write_text(json.dumps(record, indent=2))
    (root / "merge_config" / RUN).mkdir(parents=True)
    (root / "merge_config" / RUN / f"{NAME}.yaml").write_text(MERGEKIT_YAML)
    config = root / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"run": RUN, "dtype": "float32", "hub": hub}))
    hf_home = root / "hf_home"
    hf_home.mkdir()
    return Layout(root, config, model_dir, hf_home)


@dataclass
class PushRun:
    returncode: int
    stdout: str
    stderr: str
    argv: list[list[str]]


def run_push(layout: Layout, hub: FakeHub, *extra: str, token: str = FAKE_TOKEN) -> PushRun:
    """``mergepipe -vv push`` in a child process; records the argv of it and its children."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING")) and not k.endswith("_OFFLINE")}
    env.update(
        HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN=token, HF_HOME=str(layout.hf_home),
        HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DEBUG="1",
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
    )
    logs = layout.root / "logs" / RUN
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "push-console.out", logs / "push-console.err"
    cmd = [sys.executable, "-m", "mergepipe", "-vv", "push", "--config", str(layout.config), *extra]
    argv: list[list[str]] = []
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=layout.root)
        deadline = time.monotonic() + 180
        watched = psutil.Process(proc.pid)
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                family = [watched, *watched.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in family:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    argv.append(p.cmdline())
            time.sleep(0.02)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return PushRun(proc.returncode, out_path.read_text(), err_path.read_text(), argv)


@pytest.fixture
def fake_hub():
    with FakeHub(FAKE_TOKEN) as hub:
        yield hub
    assert not hub.errors, hub.errors


def _assert_published(hub: FakeHub, model_dir: Path) -> None:
    repo = hub.repos[REPO_ID]
    local = local_files(model_dir)
    assert sorted(set(repo.head.files) - {".gitattributes"}) == local
    for rel in local:
        assert hub.file_bytes(REPO_ID, rel) == (model_dir / rel).read_bytes(), rel


def test_push_publishes_every_file_with_card_and_repush_is_cheap(tmp_path, tiny_models, fake_hub):
    layout = make_layout(tmp_path, tiny_models.experts[0], {"push": True, "namespace": "test-user"})
    first = run_push(layout, fake_hub)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"pushed {NAME} -> {fake_hub.url}/{REPO_ID}" in first.stdout

    repo = fake_hub.repos[REPO_ID]
    assert repo.private is True  # private unless configured otherwise
    _assert_published(fake_hub, layout.model_dir)
    # Weights went through LFS batch + PUT (no Xet), small files inline in the commit.
    assert repo.head.files["model.safetensors"][0] == "lfs"
    assert repo.head.files["config.json"][0] == "regular"
    puts = fake_hub.count("PUT", r"^/lfs-upload/")
    assert puts >= 1

    card = (layout.model_dir / "README.md").read_text()
    assert "card written by mergekit" not in card
    meta = read_front_matter(card)
    assert meta["base_model"] == [INPUTS["base"], *INPUTS["experts"]]
    assert meta["base_model_relation"] == "merge"
    assert {"merge", "mergekit"} <= set(meta["tags"])
    assert meta["library_name"] == "transformers"
    assert "license" not in meta  # the inputs' licenses are unknown here
    assert MERGEKIT_YAML.rstrip("\n") in card
    assert "| `density` | 0.5 |" in card
    assert "Not evaluated yet" in card

    # Same content again: no new commit, nothing re-uploaded.
    commits = len(repo.commits)
    again = run_push(layout, fake_hub)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(repo.commits) == commits
    assert fake_hub.count("PUT", r"^/lfs-upload/") == puts

    # After evaluation: the card is re-published with the scores; weights are not re-sent.
    organized = tmp_path / "organized_results"
    organized.mkdir()
    (organized / "harness.csv").write_text(
        "run,model_id,role,task,metric,filter,value,stderr\n"
        f"{RUN},{NAME}-0a1b2c3d,merged,zoo_addition,exact_match,strict-match,0.8125,0.01\n"
        f"{RUN},zoo-base-12345678,base,zoo_addition,exact_match,strict-match,0.1,0.01\n"
    )
    evaluated = run_push(layout, fake_hub)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert len(repo.commits) == commits + 1
    assert "evaluation" in repo.head.summary
    assert fake_hub.count("PUT", r"^/lfs-upload/") == puts
    remote_card = fake_hub.file_bytes(REPO_ID, "README.md").decode()
    assert "| zoo_addition | exact_match (strict-match) | 0.8125 ± 0.0100 |" in remote_card
    assert "0.1000" not in remote_card  # other models' rows stay out
    _assert_published(fake_hub, layout.model_dir)


def _files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_token_is_found_nowhere(tmp_path, tiny_models, fake_hub):
    layout = make_layout(tmp_path, tiny_models.experts[1], {"push": True, "namespace": "test-user"})
    result = run_push(layout, fake_hub)
    assert result.returncode == 0, result.stderr[-3000:]
    assert REPO_ID in fake_hub.repos  # the server only accepts requests bearing the token

    roots = [tmp_path / d for d in ("merged_models", "merge_config", "logs", "organized_results")]
    files = _files_under(*roots, layout.hf_home)
    assert layout.model_dir / "README.md" in files
    push_log = tmp_path / "logs" / RUN / "push.log"
    assert push_log in files and "published" in push_log.read_text()
    assert "authenticated: True" in push_log.read_text()  # debug request logs were captured
    needle = FAKE_TOKEN.encode()
    leaked = [str(p) for p in files if needle in p.read_bytes()]
    assert leaked == []
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert result.argv, "no child process argv was captured"
    assert all(FAKE_TOKEN not in arg for argv in result.argv for arg in argv)
    # Every uploaded byte came from the model dir, which holds no token either.
    repo = fake_hub.repos[REPO_ID]
    assert all(needle not in fake_hub.file_bytes(REPO_ID, path) for path in repo.head.files)


def test_rejected_token_is_one_clean_line(tmp_path, tiny_models, fake_hub):
    layout = make_layout(tmp_path, tiny_models.experts[2], {"push": True, "namespace": "test-user"})
    wrong = "hf_" + "WrongTokenForLeakCheck1234567890ab"
    result = run_push(layout, fake_hub, token=wrong)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: publishing {NAME} to {REPO_ID} failed: HTTP 401: the Hub rejected the token "
                      "(check HF_TOKEN or run 'hf auth login')"]
    assert wrong not in result.stderr + result.stdout
    assert REPO_ID not in fake_hub.repos


def test_delete_local_after_verified_push(tmp_path, tiny_models, fake_hub):
    hub = {"push": True, "namespace": "test-user", "delete_local_after_push": True, "private": False,
           "license": "apache-2.0"}
    layout = make_layout(tmp_path, tiny_models.experts[0], hub)
    expected = {rel: (layout.model_dir / rel).read_bytes() for rel in local_files(layout.model_dir)}
    result = run_push(layout, fake_hub)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "local copy deleted" in result.stdout
    assert not layout.model_dir.exists()
    repo = fake_hub.repos[REPO_ID]
    assert repo.private is False
    for rel, data in expected.items():
        if rel != "README.md":
            assert fake_hub.file_bytes(REPO_ID, rel) == data
    assert read_front_matter(fake_hub.file_bytes(REPO_ID, "README.md").decode())["license"] == "apache-2.0"
    # verification listed the tree of the new commit before deleting
    assert fake_hub.count("GET", rf"^/api/models/{REPO_ID}/tree/{repo.head.oid}$") == 1


@pytest.mark.parametrize("path", ["model.safetensors", "config.json"])
def test_failed_verification_keeps_local_copy(tmp_path, tiny_models, fake_hub, path):
    layout = make_layout(tmp_path, tiny_models.experts[0],
                         {"push": True, "namespace": "test-user", "delete_local_after_push": True})
    fake_hub.tampered.add(path)
    result = run_push(layout, fake_hub)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: verification failed: {path} differs between the Hub and the local copy"]
    assert (layout.model_dir / "model.safetensors").is_file()


def test_push_a_real_merge(tmp_path, tiny_models, fake_hub, monkeypatch):
    """The merge stage's own output (record, exact YAML, mergekit files) publishes as is."""
    from mergepipe.cli import main

    monkeypatch.chdir(tmp_path)  # relative outputs resolve against the working directory
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "run": RUN, "base_model": str(tiny_models.base), "models": [str(p) for p in tiny_models.experts[:2]],
        "dtype": "float32", "merge": {"methods": ["task_arithmetic"]},
        "hub": {"push": True, "namespace": "test-user", "repo_name": "{name}-{run}"},
    }))
    assert main(["merge", "--config", str(config)]) == 0
    (model_dir,) = [p for p in (tmp_path / "merged_models" / RUN).iterdir() if p.is_dir()]
    record = json.loads((model_dir / "mergepipe_merge.json").read_text())
    exact_yaml = (tmp_path / "merge_config" / RUN / f"{record['name']}.yaml").read_text()
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    result = run_push(Layout(tmp_path, config, model_dir, hf_home), fake_hub)
    assert result.returncode == 0, result.stderr[-3000:]
    repo_id = f"test-user/{record['name']}-{RUN}"
    repo = fake_hub.repos[repo_id]
    local = local_files(model_dir)
    assert sorted(set(repo.head.files) - {".gitattributes"}) == local
    assert all(fake_hub.file_bytes(repo_id, rel) == (model_dir / rel).read_bytes() for rel in local)
    card = fake_hub.file_bytes(repo_id, "README.md").decode()
    assert exact_yaml.rstrip("\n") in card
    meta = read_front_matter(card)
    assert "task_arithmetic" in meta["tags"]
    assert "base_model" not in meta  # the inputs are local directories, not Hub ids
    assert f"`{tiny_models.experts[1]}`" in card
