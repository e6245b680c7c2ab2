"""The upstream Holmes adapter: command construction, success judgement, result normalisation.

The upstream code itself is not run here (it needs torch 2.0-era pins and downloaded data).
A small script in its place writes what upstream's investigate.py writes, so the adapter's
subprocess handling, judging and copying run for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from mergepipe.cli import main as cli_main
from mergepipe.evaluate.holmes.results_file import RESULT_COLUMNS
from mergepipe.evaluate.holmes.upstream import (
    UpstreamError,
    build_command,
    check_path,
    command_env,
    judge,
    normalise_results,
    run_upstream,
)
from tests.helpers.paths import REPO

# Writes what upstream investigate.py leaves behind: results_<version>.csv with a pandas index
# and '/' in the model name replaced by '__', or <model with / -> _>_fails.txt in src/. Exit 0.
FAKE_INVESTIGATE = textwrap.dedent('''
    import argparse, os, shutil, sys
    import pandas
    p = argparse.ArgumentParser()
    for flag in ["--model_name", "--version", "--seeds", "--control_task_types", "--num_hidden_layers",
                 "--dump_folder", "--result_folder"]:
        p.add_argument(flag)
    a = p.parse_args()
    open(os.path.join(a.result_folder, "argv.txt"), "w").write(" ".join(sys.argv) + "\\n" + shutil.which("python3"))
    if "FAIL" in os.environ:
        open(a.model_name.replace("/", "_") + "_fails.txt", "w").write("python3 probe.py --failed")
        sys.exit(0)
    rows = []
    for d in sorted(os.listdir(os.path.join("..", "data", a.version))):
        for ctl in [c.upper() for c in a.control_task_types.split(",")]:
            for seed in a.seeds.split(","):
                rows.append({"probing_dataset": d, "model_name": a.model_name.replace("/", "__"),
                             "encoding": "full", "control_task_type": ctl, "sample_size": 643, "seed": int(seed),
                             "num_hidden_layers": 0, "score": 0.5 + 0.1 * int(seed)})
    rows.append(dict(rows[0], model_name="gpt2"))  # another model in the same result folder
    pandas.DataFrame(rows).to_csv(os.path.join(a.result_folder, "results_" + a.version + ".csv"))
''')


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "holmes-evaluation"
    (root / "src").mkdir(parents=True)
    (root / "src" / "investigate.py").write_text(FAKE_INVESTIGATE)
    for name in ("blimp-inchoative", "zorro-quantifiers"):
        (root / "data" / "flash-holmes" / name).mkdir(parents=True)
    return root


def test_build_command_uses_absolute_paths_and_upstream_flags(tmp_path: Path) -> None:
    cmd = build_command(Path("/envs/holmes/bin/python"), Path("/opt/holmes"), "/models/m1", "flash-holmes", 3,
                        True, Path("/w/dumps"), Path("/w/results"))
    assert cmd == [
        "/envs/holmes/bin/python", "investigate.py", "--model_name", "/models/m1", "--version", "flash-holmes",
        "--seeds", "0,1,2", "--control_task_types", "none,randomization", "--num_hidden_layers", "0",
        "--dump_folder", "/w/dumps", "--result_folder", "/w/results",
    ]
    plain = build_command(Path("/p"), Path("/opt/holmes"), "gpt2", "holmes", 1, False, Path("/d"), Path("/r"))
    assert plain[plain.index("--control_task_types") + 1] == "none"
    with pytest.raises(UpstreamError, match="must be an absolute path"):
        build_command(Path("/p"), Path("/opt/holmes"), "gpt2", "holmes", 1, False, Path("rel"), Path("/r"))


@pytest.mark.parametrize(
    ("path", "message"),
    [("/home/me/my models/x", "spaces or shell characters"), ("/data/done/x", "'done'"),
     ("/models/facebook__bart-base", "'bart'"), ("/x;rm -rf", "spaces or shell characters")],
)
def test_paths_upstream_cannot_handle_are_rejected(path: str, message: str) -> None:
    with pytest.raises(UpstreamError, match=message):
        check_path(path, "model")


def test_env_puts_holmes_python_first(tmp_path: Path) -> None:
    env = command_env(Path("/envs/holmes/bin/python"), {"PATH": "/usr/bin", "PYTHONPATH": "/x"})
    assert env["PATH"].startswith("/envs/holmes/bin:") and "PYTHONPATH" not in env
    assert env["VIRTUAL_ENV"] == "/envs/holmes"


def test_normalise_upstream_results(tmp_path: Path) -> None:
    csv = tmp_path / "results_holmes.csv"
    pd.DataFrame([
        {"probing_dataset": "flash-holmes-blimp-inchoative", "model_name": "org__m", "encoding": "full",
         "control_task_type": "NONE", "sample_size": 643, "seed": 1, "num_hidden_layers": 0, "score": 0.7},
        {"probing_dataset": "blimp-inchoative", "model_name": "org__m", "encoding": "full",
         "control_task_type": "none", "sample_size": 643, "seed": 0, "num_hidden_layers": 0, "score": 0.6},
        {"probing_dataset": "blimp-inchoative", "model_name": "other", "encoding": "full",
         "control_task_type": "NONE", "sample_size": 643, "seed": 0, "num_hidden_layers": 0, "score": 0.1},
    ]).to_csv(csv)  # with the index column, as upstream writes it
    frame = normalise_results(csv, "org/m", "org__m-id")
    assert list(frame.columns) == RESULT_COLUMNS
    assert frame["probing_dataset"].tolist() == ["blimp-inchoative", "blimp-inchoative"]
    assert frame["seed"].tolist() == [0, 1] and set(frame["model_name"]) == {"org__m-id"}
    assert set(frame["control_task_type"]) == {"NONE"}
    with pytest.raises(UpstreamError, match="no rows for model nobody"):
        normalise_results(csv, "nobody", "x")


def test_judge_trusts_files_not_exit_codes(checkout: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    with pytest.raises(UpstreamError, match=r"results_flash-holmes\.csv is missing"):
        judge(checkout, "/m/x", results, "flash-holmes")
    (results / "results_flash-holmes.csv").write_text("x\n")
    assert judge(checkout, "/m/x", results, "flash-holmes") == results / "results_flash-holmes.csv"
    (checkout / "src" / "_m_x_fails.txt").write_text("python3 encode.py ...")
    with pytest.raises(UpstreamError, match="reported failed steps"):
        judge(checkout, "/m/x", results, "flash-holmes")


def test_run_upstream_end_to_end(tiny_models, checkout: Path, tmp_path: Path) -> None:
    out = tmp_path / "holmes_results"
    res = run_upstream(str(tiny_models.base), checkout, out, seeds=2, python=Path(sys.executable),
                       role="expert")
    frame = pd.read_csv(res.results_csv)
    assert res.results_csv == out / res.model_id / "results_flash-holmes.csv"
    assert list(frame.columns) == RESULT_COLUMNS
    assert len(frame) == 2 * 2 * 2 and set(frame["model_name"]) == {res.model_id}
    assert set(frame["probing_dataset"]) == {"blimp-inchoative", "zorro-quantifiers"}
    argv, python3 = (out / res.model_id / "upstream_flash-holmes" / "results" / "argv.txt").read_text().splitlines()
    assert f"--model_name {tiny_models.base}" in argv and "--seeds 0,1" in argv
    assert Path(python3).parent == Path(sys.executable).parent  # the Holmes env's python3 comes first
    info = json.loads((out / res.model_id / "model_info.json").read_text())
    assert info["role"] == "expert"


def test_run_upstream_failure_is_an_error_despite_exit_0(tiny_models, checkout: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("FAIL", "1")
    out = tmp_path / "o"
    code = cli_main(["probe", str(tiny_models.base), "--engine", "upstream", "--holmes-dir", str(checkout),
                     "--holmes-python", sys.executable, "--out", str(out), "--seeds", "1"])
    assert code == 1
    assert "upstream Holmes reported failed steps" in capsys.readouterr().err
    assert not list(out.glob("*/results_*.csv"))


def test_run_upstream_checks_before_running(tiny_models, checkout: Path, tmp_path: Path) -> None:
    with pytest.raises(UpstreamError, match="not an upstream Holmes checkout"):
        run_upstream(str(tiny_models.base), tmp_path, tmp_path / "o", python=Path(sys.executable))
    with pytest.raises(UpstreamError, match="version 'holmes' is not downloaded"):
        run_upstream(str(tiny_models.base), checkout, tmp_path / "o", version="holmes", python=Path(sys.executable))
    with pytest.raises(UpstreamError, match="no Holmes environment"):
        run_upstream(str(tiny_models.base), checkout, tmp_path / "o", python=tmp_path / "nope" / "python")


def test_setup_script_rejects_bad_checkouts(tmp_path: Path) -> None:
    script = REPO / "scripts" / "setup_holmes_env.sh"
    bad = subprocess.run(["bash", str(script), str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Holmes checkout not found" in bad.stderr
    empty = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode == 2 and "no src/investigate.py" in empty.stderr
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
