"""Built-in lm-eval tasks offline: the cached index, pre-flight, the dataset mirror, tinyBenchmarks.

The datasets are small local copies in the Hub's repository layout (``tests/helpers/hub_datasets``):
BoolQ (``aps/super_glue``, multiple choice), the six tinyBenchmarks repositories and GSM8K
(``openai/gsm8k``, generate_until).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mergepipe.cli import main
from mergepipe.errors import MergepipeError
from mergepipe.evaluate.harness import tinybench
from mergepipe.evaluate.harness.catalog import builtin_index, lm_eval_tasks_dir, load_task_yaml, resolve
from mergepipe.evaluate.harness.dataset_mirror import locate, reading_from_mirror
from mergepipe.evaluate.harness.preflight import check_tasks
from mergepipe.evaluate.harness.tasks import select_tasks
from tests.helpers.hub_datasets import TINYBENCHMARKS_REPOS, write_all, write_repo
from tests.helpers.hub_server import FakeHub
from tests.helpers.lm_eval_tasks import job_env
from tests.helpers.paths import REPO, VENV_BIN

TINY_PATHS = sorted(TINYBENCHMARKS_REPOS)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("mirror") / "datasets", n=4)


@pytest.fixture(autouse=True)
def _no_tinybenchmarks_package(monkeypatch: pytest.MonkeyPatch) -> None:
    if tinybench.package_installed():  # these tests are about machines without it
        monkeypatch.setattr(tinybench, "package_installed", lambda: False)


def _fake_package(root: Path, value: float = 0.25) -> Path:
    """A stand-in ``tinyBenchmarks`` package whose ``evaluate`` reads ``tinyBenchmarks.pkl`` from the
    working directory, as the real one does; its parameters file lies beside it."""
    package = root / "tinyBenchmarks"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import pickle\n"
        "def evaluate(items, bench):\n"
        "    with open('tinyBenchmarks.pkl', 'rb') as fh:\n"
        "        value = pickle.load(fh)\n"
        "    return {bench: {'irt': value, 'pirt': value, 'gpirt': value}}\n")
    (package / "tinyBenchmarks.pkl").write_bytes(pickle.dumps(value))
    return root


# -- the index and resolution --------------------------------------------------------------------

def test_groups_resolve_to_their_datasets_and_folders() -> None:
    index = builtin_index()
    assert index["tinyBenchmarks"]["kind"] == "group" and index["boolq"]["kind"] == "task"
    res = resolve(["tinyBenchmarks", "boolq", "gsm8k"], index.get)
    by_task = {leaf.task: leaf for leaf in res.leaves}
    assert set(by_task) == {*tinybench.IRT_TASKS, "boolq", "gsm8k"}
    assert sorted(leaf.dataset.path for t, leaf in by_task.items() if t.startswith("tiny")) == TINY_PATHS
    assert (by_task["boolq"].dataset.path, by_task["boolq"].dataset.name) == ("aps/super_glue", "boolq")
    assert by_task["tinyArc"].requested == "tinyBenchmarks"
    root = lm_eval_tasks_dir()
    assert {f.relative_to(root).as_posix() for f in res.builtin_folders} == {
        "tinyBenchmarks", "super_glue/boolq", "gsm8k"}


def test_a_job_indexes_only_the_folders_of_its_builtin_tasks() -> None:
    selection = select_tasks(["boolq", "tinyArc"], [])
    assert selection.uses_builtin
    assert {"boolq", "tinyArc"} <= set(selection.task_manager.all_tasks)
    assert len(selection.task_manager.all_tasks) < 100  # not lm-eval's ~15 000 names


def test_unknown_builtin_name_gets_close_matches() -> None:
    with pytest.raises(MergepipeError, match=r"unknown lm-eval task 'tinyArcc' \(did you mean tinyArc"):
        check_tasks(["tinyArcc"], [], datasets_dir=None, online=False)


# -- pre-flight -------------------------------------------------------------------------------------

def test_preflight_with_the_mirror_finds_every_dataset(mirror: Path) -> None:
    check = check_tasks(["boolq", "tinyBenchmarks", "gsm8k"], [], datasets_dir=mirror, online=False)
    assert check.problems == []
    assert {d.ref.path: d.where for d in check.datasets} == {
        p: "mirror" for p in ["aps/super_glue", "openai/gsm8k", *TINY_PATHS]}
    # Without the tinyBenchmarks package the group runs as its labelled plain-mean variant.
    assert check.tasks == ["boolq", "tinyBenchmarks_mean", "gsm8k"]
    assert "tinyBenchmarks package is not installed" in check.substitution
    assert "./setup.sh --tinybenchmarks" in check.fallback_lines()[0]


def test_missing_dataset_is_one_line_naming_it_and_the_fetch_command(tmp_path: Path) -> None:
    check = check_tasks(["boolq", "gsm8k"], [], datasets_dir=tmp_path / "datasets", online=False)
    line = check.error_line()
    assert "\n" not in line
    assert "aps/super_glue" in line and "openai/gsm8k" in line
    assert f"mergepipe datasets fetch boolq gsm8k --to {tmp_path / 'datasets'}" in line
    with pytest.raises(MergepipeError, match="the Hub cannot be reached"):
        check.raise_for_problems()


def test_mirror_copy_without_the_tasks_config_is_reported(tmp_path: Path) -> None:
    write_repo(tmp_path, "aps/super_glue", {"rte": {"validation": [{"x": 1}]}})
    check = check_tasks(["boolq"], [], datasets_dir=tmp_path, online=False)
    assert "has no config 'boolq' (it has: rte)" in check.error_line()
    assert "datasets fetch --force boolq" in check.error_line()


def test_missing_python_package_is_named_with_its_pip_command(mirror: Path) -> None:
    # lm-eval's ifeval task imports langdetect (not part of the default environment).
    pytest.importorskip("lm_eval")
    import importlib.util

    if importlib.util.find_spec("langdetect") is not None:
        pytest.skip("langdetect is installed here")
    check = check_tasks(["ifeval"], [], datasets_dir=mirror, online=False)
    packages = [p for p in check.problems if p.kind == "package"]
    assert [p.what for p in packages] == ["package langdetect"]
    assert f"{sys.executable} -m pip install langdetect" in packages[0].fix


def test_local_builder_data_files_are_checked(tmp_path: Path) -> None:
    from mergepipe.evaluate.harness.catalog import DatasetRef

    there = tmp_path / "d.jsonl"
    there.write_text("{}\n")
    ok = DatasetRef("json", None, json.dumps({"data_files": {"test": str(there)}}))
    gone = DatasetRef("json", None, json.dumps({"data_files": [str(tmp_path / "missing.jsonl")]}))
    url = DatasetRef("json", None, json.dumps({"data_files": "https://example.org/x.jsonl"}))
    assert locate(ok, None, online=False).where == "local"
    assert "data file not found" in locate(gone, None, online=False).detail
    assert locate(url, None, online=False).where == "missing"


# -- reading from the mirror ------------------------------------------------------------------------

def test_load_dataset_reads_the_mirror_only_while_redirected(mirror: Path) -> None:
    import datasets

    with reading_from_mirror(mirror) as used:
        data = datasets.load_dataset(path="aps/super_glue", name="boolq")
    assert data["validation"].num_rows == 4 and data["train"][0]["question"] == "is 0 even"
    assert used == {"aps/super_glue": str(mirror / "aps" / "super_glue")}
    assert datasets.load_dataset.__name__ == "load_dataset" and "mirror" not in repr(datasets.load_dataset)
    with pytest.raises(Exception):  # noqa: B017 - offline and not cached: whatever datasets raises
        datasets.load_dataset(path="tinyBenchmarks/tinyMMLU", name="all")


# -- tinyBenchmarks ---------------------------------------------------------------------------------

def test_mean_variants_are_lm_evals_tasks_with_the_plain_mean() -> None:
    from lm_eval.tasks._yaml_loader import load_yaml

    folder = tinybench.mean_tasks_folder()
    source = lm_eval_tasks_dir() / "tinyBenchmarks"
    originals = {}
    for path in source.glob("*.yaml"):
        cfg = load_task_yaml(path)
        if cfg.get("task") in tinybench.IRT_TASKS:
            originals[cfg["task"]] = path
    assert set(originals) == set(tinybench.IRT_TASKS)
    for task, path in originals.items():
        mine = load_yaml(folder / f"{task}_mean.yaml")  # functions resolved, as lm-eval loads it
        theirs = load_task_yaml(path)
        assert mine["task"] == f"{task}_mean"
        assert [m["aggregation"] for m in mine["metric_list"]] == ["mean"] * len(mine["metric_list"])
        assert [m["metric"] for m in mine["metric_list"]] == [m["metric"] for m in theirs["metric_list"]]
        for key in ("dataset_path", "dataset_name", "doc_to_text", "doc_to_choice", "doc_to_target",
                    "test_split", "validation_split", "num_fewshot", "generation_kwargs", "filter_list"):
            value = theirs.get(key)
            if hasattr(value, "spec"):  # a !function: the copy points at the same function
                assert mine[key].__module__.endswith(value.module) and mine[key].__name__ == value.function
            else:
                assert mine.get(key) == value, (task, key)
    group = load_yaml(folder / "tinyBenchmarks_mean.yaml")
    assert [c["task"] for c in group["task"]] == [f"{t}_mean" for t in
                                                  ["tinyArc", "tinyGSM8k", "tinyMMLU", "tinyWinogrande",
                                                   "tinyHellaswag", "tinyTruthfulQA"]]


def test_irt_only_with_package_parameters_and_all_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # this test decides about the package itself
    monkeypatch.chdir(tmp_path)
    if not tinybench.package_installed():
        tasks, reason = tinybench.substitute(["tinyArc", "boolq"], None)
        assert tasks == ["tinyArc_mean", "boolq"] and "not installed" in reason
        monkeypatch.syspath_prepend(str(_fake_package(tmp_path / "pkg")))
        import importlib

        importlib.invalidate_caches()
    assert tinybench.substitute(["tinyBenchmarks"], None) == (["tinyBenchmarks"], None)
    tasks, reason = tinybench.substitute(["tinyBenchmarks"], 10)
    assert tasks == ["tinyBenchmarks_mean"] and reason.startswith("limit 10 < 100")
    labels = tinybench.aggregation_labels(["tinyArc", "tinyArc_mean", "boolq"], reason)
    assert labels["tinyArc"] == tinybench.IRT_LABEL and labels["tinyArc_mean"].startswith(tinybench.MEAN_LABEL)
    assert "boolq" not in labels


def test_irt_parameters_are_found_beside_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    if tinybench.package_installed():
        pytest.skip("a real tinyBenchmarks package is installed here")
    monkeypatch.syspath_prepend(str(_fake_package(tmp_path / "pkg", value=0.625)))
    import importlib

    importlib.invalidate_caches()
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)  # no tinyBenchmarks.pkl here
    import tinyBenchmarks as tb

    with pytest.raises(FileNotFoundError):
        tb.evaluate([1, 0], "arc")
    with tinybench.irt_parameters_in_place():
        assert tb.evaluate([1, 0], "arc") == {"arc": {"irt": 0.625, "pirt": 0.625, "gpirt": 0.625}}
    assert Path.cwd() == work and not (work / "tinyBenchmarks.pkl").exists()
    sys.modules.pop("tinyBenchmarks", None)


# -- end to end -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_harness_runs_builtin_tasks_from_the_mirror(zoo, mirror: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "harness_results"
    proc = subprocess.run(
        [str(REPO / "eval-harness.sh"), "zoo://base", "boolq", "tinyBenchmarks", "gsm8k", "--limit", "3",
         "--num-fewshot", "0", "--max-gen-toks", "8", "--datasets-dir", str(mirror), "--results-dir",
         str(results), "--role", "base"],
        env={**job_env(), "TQDM_DISABLE": "1"}, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "scored as plain means of the items (tinyBenchmarks_mean)" in proc.stdout
    files = list(results.glob("*/*/results_*.json"))
    assert len(files) == 1 and files[0].parent.name == "boolq+tinyBenchmarks_mean+gsm8k"
    data = json.loads(files[0].read_text())
    means = {f"{t}_mean" for t in tinybench.IRT_TASKS}
    assert set(data["results"]) == {"boolq", "gsm8k", "tinyBenchmarks_mean", *means}
    assert all(data["n-samples"][t]["effective"] == 3 for t in ("boolq", "gsm8k", "tinyArc_mean"))
    record = data["mergepipe"]
    assert record["requested_tasks"] == ["boolq", "tinyBenchmarks", "gsm8k"]
    assert record["aggregation"]["tinyArc_mean"].startswith("mean of items (not IRT)")
    assert "boolq" not in record["aggregation"]
    assert {k: v["source"] for k, v in record["datasets"].items()} == {
        p: "mirror" for p in ["aps/super_glue", "openai/gsm8k", *TINY_PATHS]}
    assert record["max_gen_toks"] == 8

    # Organized and reported: the mean is labelled in the table, the leaderboard and the report.
    out = tmp_path / "organized_results"
    monkeypatch.chdir(tmp_path)  # no pipeline.yaml here: the folders below are the results
    assert main(["report", "--harness-dir", str(results),
                 "--holmes-dir", str(tmp_path / "none"), "--out", str(out)]) == 0
    import pandas as pd

    harness = pd.read_csv(out / "harness.csv")
    tiny = harness[harness["task"] == "tinyArc_mean"]
    assert len(tiny) == 1 and tiny["aggregation"].iloc[0].startswith("mean of items (not IRT)")
    assert harness[harness["task"] == "boolq"]["aggregation"].isna().all()
    report = (out / "report.md").read_text()
    assert "acc_norm · mean of items (not IRT)" in report
    assert "tinyArc_mean, " in report and "the IRT estimate needs all 100 items" in report


@pytest.mark.slow
def test_missing_dataset_fails_before_the_model_loads(zoo, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(REPO / "eval-harness.sh"), "zoo://base", "tinyArc", "--datasets-dir", str(tmp_path / "empty"),
         "--results-dir", str(tmp_path / "r")],
        env=job_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: dataset tinyBenchmarks/tinyAI2_arc (task tinyArc): not in the mirror")
    assert f"mergepipe datasets fetch tinyArc --to {tmp_path / 'empty'}" in lines[0]
    assert "evaluating" not in proc.stdout  # no model was loaded
    assert not (tmp_path / "r").exists()


# -- datasets fetch / check ---------------------------------------------------------------------------

@pytest.mark.slow
def test_datasets_fetch_downloads_exactly_the_repos_of_the_tasks(mirror: Path, tmp_path: Path) -> None:
    with FakeHub("token") as hub:
        for repo in ["aps/super_glue", "openai/gsm8k", *TINY_PATHS]:
            hub.add_dataset(repo, mirror / repo)
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1", TQDM_DISABLE="1")
        target = tmp_path / "fetched"
        cmd = [str(VENV_BIN / "mergepipe"), "datasets", "fetch", "tinyBenchmarks", "boolq", "--to", str(target)]
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert hub.errors == []
    fetched = sorted(str(p.parent.relative_to(target)) for p in target.glob("*/*/README.md"))
    assert fetched == sorted(["aps/super_glue", *TINY_PATHS])  # not openai/gsm8k: no task asked for it
    for repo in fetched:
        assert (target / repo / "README.md").read_bytes() == (mirror / repo / "README.md").read_bytes()
        record = json.loads((target / repo / ".mergepipe-dataset.json").read_text())
        assert record["repo_id"] == repo and len(record["sha"]) == 40
        assert not (target / repo / ".cache").exists()
    assert not list(target.glob("*/.*.fetching"))
    assert again.returncode == 0 and again.stdout.count("present  ") == 7
    # The fetched folder is a mirror the pre-flight accepts.
    check = check_tasks(["tinyBenchmarks", "boolq"], [], datasets_dir=target, online=False)
    assert check.problems == [] and {d.where for d in check.datasets} == {"mirror"}


def test_datasets_fetch_refuses_offline_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert main(["datasets", "fetch", "boolq", "--to", str(tmp_path)]) == 2
    assert "offline mode is set" in capsys.readouterr().err


def test_datasets_check_says_what_is_present_and_missing(mirror: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "check", "boolq", "gsm8k", "--datasets-dir", str(mirror)]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 dataset(s) present" in out and "present  aps/super_glue (boolq)" in out
    assert main(["datasets", "check", "boolq", "--datasets-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "MISSING  aps/super_glue (boolq)" in out
    assert f"mergepipe datasets fetch boolq --to {tmp_path}" in out
