"""``mergepipe predict``: the starter kit's queries in, its predictions file out; atomic, resumable."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mergepipe.cli import main
from mergepipe.config.predict import PredictSettings
from mergepipe.evaluate.queries import OUTPUT_COLUMNS, QueriesError, partial_path, read_queries, record_path
from tests.helpers.lm_eval_tasks import job_env
from tests.helpers.paths import VENV_BIN


def write_queries(path: Path, n: int, kinds: tuple[str, ...] = ("multiple_choice", "generation")) -> Path:
    """``n`` queries in the starter kit's columns (``id,input,eval_type,answer_choices``)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "input", "eval_type", "answer_choices"])
        for i in range(n):
            kind = kinds[i % len(kinds)]
            if kind == "multiple_choice":
                writer.writerow([i, f"Question: what comes after {i}?\nAnswer:", kind,
                                 str([str(i + 1), str(i + 2), "none, of these"])])
            else:
                writer.writerow([i, f'Write "{i}" again, then stop.\n', kind, ""])
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("text, message", [
    ("id,input\n0,x\n", r"missing column\(s\) eval_type"),
    ("id,input,eval_type,answer_choices\n0,x,multiple_choice,\n", "line 2: answer_choices must be a non-empty list"),
    ("id,input,eval_type,answer_choices\n0,x,generation,\n0,y,generation,\n", "line 3: duplicate id '0'"),
    ("id,input,eval_type,answer_choices\n0,x,essay,\n", "line 2: eval_type 'essay' is not one of"),
])
def test_bad_queries_file_is_one_line_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "q.csv"
    path.write_text(text)
    with pytest.raises(QueriesError, match=message) as info:
        read_queries(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_starter_kit_quoting_is_read(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('id,input,eval_type,answer_choices\n7,"line one\nline ""two""",multiple_choice,'
                    '"[\'a\', \'b, c\']"\n8,hello,generation,\n')
    first, second = read_queries(path)
    assert (first.id, first.input, first.choices) == ("7", 'line one\nline "two"', ("a", "b, c"))
    assert (second.eval_type, second.choices) == ("generation", ())


@pytest.mark.slow
def test_predict_writes_the_starter_kit_output_and_skips_when_done(zoo, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from mergepipe.evaluate.predict import predict

    queries = write_queries(tmp_path / "test.csv", 8)
    out = tmp_path / "output" / "test.csv"
    args = ["predict", "zoo://base", "--queries", str(queries), "--out", str(out), "--batch-size", "4",
            "--max-new-tokens", "6", "--device", "cpu"]
    assert main(args) == 0
    rows = _rows(out)
    assert list(rows[0]) == list(OUTPUT_COLUMNS)
    assert [r["id"] for r in rows] == [str(i) for i in range(8)]  # the queries' order
    assert {r["dummy_field"] for r in rows} == {"0"}
    assert all(r["prediction"] in {"0", "1", "2"} for r in rows[0::2])  # an answer choice's index
    assert not partial_path(out).exists()
    assert json.loads(record_path(out).read_text())["n_queries"] == 8
    capsys.readouterr()
    assert main(args) == 0
    assert "skip:" in capsys.readouterr().out
    # One query at a time gives the same answers (padding does not change them).
    single = predict("zoo://base", queries, tmp_path / "single.csv", device="cpu",
                     settings=PredictSettings(batch_size=1, max_new_tokens=6), say=lambda m: None)
    assert single.status == "done" and _rows(single.out) == rows


@pytest.mark.slow
def test_killed_predict_resumes_and_the_output_appears_only_when_complete(zoo, tmp_path: Path) -> None:
    queries = write_queries(tmp_path / "test.csv", 16, kinds=("generation",))
    out = tmp_path / "output" / "test.csv"
    cmd = [str(VENV_BIN / "mergepipe"), "predict", "zoo://base", "--queries", str(queries), "--out", str(out),
           "--batch-size", "1", "--max-new-tokens", "8", "--device", "cpu"]
    env = {**job_env(), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    progress = partial_path(out)
    deadline = time.monotonic() + 300
    answered = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.is_file():
            answered = len(progress.read_text().splitlines()) - 1  # minus the header line
            if answered >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "predict finished before it could be killed: " + (proc.stdout.read() or "")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert not out.exists()  # nothing that looks finished
    kept = len(progress.read_text().splitlines()) - 1
    assert 2 <= kept < 16

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming: {kept} of 16 queries already answered" in again.stdout
    assert f"on {16 - kept} of 16 queries" in again.stdout
    rows = _rows(out)
    assert [r["id"] for r in rows] == [str(i) for i in range(16)] and not progress.exists()

    # The same answers as an uninterrupted run (batched: padding does not change them).
    fresh = tmp_path / "fresh.csv"
    whole = subprocess.run([*cmd[:6], str(fresh), "--batch-size", "8", *cmd[9:]], env=env, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    assert _rows(fresh) == rows


def test_progress_of_another_model_or_settings_is_discarded(tmp_path: Path) -> None:
    from mergepipe.evaluate.queries import Progress

    out = tmp_path / "test.csv"
    first = Progress(out, "key-a")
    first.add([("0", "x"), ("1", "y")])
    first.close()
    with partial_path(out).open("a") as fh:
        fh.write('{"id": "2", "predic')  # a line cut off by a kill
    resumed = Progress(out, "key-a")
    assert resumed.answers == {"0": "x", "1": "y"} and not resumed.discarded
    resumed.add([("2", "z")])
    resumed.close()
    assert Progress(out, "key-a").answers == {"0": "x", "1": "y", "2": "z"}
    other = Progress(out, "key-b")
    assert other.answers == {} and other.discarded
    other.close()
