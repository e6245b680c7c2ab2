"""report.html / report.md: content, self-containment, and a real headless browser load."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mergepipe.cli import main as cli_main
from mergepipe.results.plots import make_plots
from mergepipe.results.report import leaderboard, write_report
from mergepipe.results.tables import organize
from tests.helpers.paths import GOLDEN

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                             "/usr/bin/google-chrome") if Path(p).is_file()), None)
RUN_SUMMARY = {
    "run": "golden", "config_hash": "abc123",
    "config": {"run": "golden", "models": ["orgB/llama-tiny", "orgC/copy-expert"]},
    "stages": [{"name": "merge", "status": "ok", "seconds": 12.5, "jobs": 1, "failed_jobs": 0},
               {"name": "evaluate", "status": "partial", "wall_seconds": 61.0, "jobs": 8, "failed_jobs": 1,
                "peak_rss_bytes": 2 * 1024**3, "peak_gpu_bytes": 0}],
    "failures": [{"stage": "evaluate", "job": "holmes orgB__llama-tiny",
                  "message": "CUDA out of memory", "log": "logs/holmes-orgB.log"}],
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(GOLDEN, root, dirs_exist_ok=True)
    out = root / "organized"
    organize(root / "harness_results", root / "holmes_results", out,
             mapping_csv=root / "holmes_mapping.csv")
    make_plots(out)
    (out / "run_summary.json").write_text(json.dumps(RUN_SUMMARY))
    write_report(out)
    return out


def test_html_is_self_contained(report: Path) -> None:
    html = (report / "report.html").read_text()
    sources = re.findall(r"<img src='([^']*)'", html)
    assert len(sources) == len(list((report / "plots").glob("*.png"))) >= 4
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert "<script" not in html


def test_leaderboard_marks_best_per_column(report: Path) -> None:
    html = (report / "report.html").read_text()
    # orgB has the best tiny_mc_a (0.9); orgC the best tiny_copy (0.75)
    assert "<td class=\"best\">0.900 ★</td>" in html
    assert "<td class=\"best\">0.750 ★</td>" in html
    md = (report / "report.md").read_text()
    assert "**0.900**" in md and "**0.750**" in md
    assert "![task_performance](plots/task_performance.png)" in md
    assert "–" in md  # experts without Holmes results: not evaluated, not a string score


def test_lower_is_better_column_marks_minimum(report: Path) -> None:
    from mergepipe.results.tables import load_tables

    tables = load_tables(report)
    tables.summary_metrics.loc[tables.summary_metrics["column"] == "tiny_copy", "higher_is_better"] = False
    headers, _, cells, best = leaderboard(tables)
    j = headers.index("tiny_copy")
    marked = [row[0] for row, flags in zip(cells, best, strict=True) if flags[j]]
    assert marked == ["orgA__llama-tiny"]  # 0.0 is the lowest


def test_run_summary_timings_failures_and_config(report: Path) -> None:
    html = (report / "report.html").read_text()
    assert "CUDA out of memory" in html and "logs/holmes-orgB.log" in html
    assert "61.0" in html and "total 73.5 s" in html
    assert "abc123" in html and "orgC/copy-expert" in html
    assert "superseded" in html  # the older golden-ties run is listed
    md = (report / "report.md").read_text()
    assert "| evaluate | partial | 61.0 | 8 | 1 | 2.0 GiB |" in md


def test_report_cli_without_run_summary(tmp_path: Path) -> None:
    shutil.copytree(GOLDEN, tmp_path / "g")
    g = tmp_path / "g"
    code = cli_main(["report", "--harness-dir", str(g / "harness_results"), "--holmes-dir",
                     str(g / "holmes_results"), "--mapping-csv", str(g / "holmes_mapping.csv"),
                     "--out", str(g / "out")])
    assert code == 0
    html = (g / "out" / "report.html").read_text()
    assert "no run_summary.json" in html
    assert (g / "out" / "plots" / "task_performance.svg").is_file()


def test_report_on_missing_tables_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli_main(["report", "--no-organize", "--out", str(tmp_path / "none")])
    assert code != 0
    assert "run 'mergepipe organize' first" in capsys.readouterr().err


PROBE = """<script>window.__errors=[];window.addEventListener('error',function(e){
window.__errors.push(String(e.message||(e.target&&e.target.src||'').slice(0,40)||'error'))},true);
window.addEventListener('load',function(){var out=document.createElement('pre');out.id='probe';
out.textContent=JSON.stringify({images:[].map.call(document.images,function(i){
return {alt:i.alt,complete:i.complete,width:i.naturalWidth}}),errors:window.__errors});
document.body.appendChild(out);});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (test.sh installs it)")
def test_report_opens_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    # A copy with a probe script that records, after load, each image's decoded width and any
    # error event; --dump-dom prints the DOM including that record.
    page = tmp_path / "probe.html"
    page.write_text((report / "report.html").read_text().replace("<head>", "<head>" + PROBE, 1))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, "page did not finish loading"
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    n_png = len(list((report / "plots").glob("*.png")))
    assert len(probe["images"]) == n_png
    assert all(img["complete"] and img["width"] > 100 for img in probe["images"]), probe["images"]


def _glance_tables():
    import pandas as pd

    from mergepipe.results.tables import Tables

    summary = pd.DataFrame([
        {"model_id": "base-0a1b2c3d", "role": "base", "merge_method": None, "merge_parameters": None,
         "run": "r", "t_gain": 0.2, "t_flat": 0.9},
        {"model_id": "expA-11111111", "role": "expert", "merge_method": None, "merge_parameters": None,
         "run": "r", "t_gain": 0.8, "t_flat": 0.5},
        {"model_id": "expB-22222222", "role": "expert", "merge_method": None, "merge_parameters": None,
         "run": "r", "t_gain": 0.6, "t_flat": 0.4},
        {"model_id": "ties-density0.3-1a2b3c4d", "role": "merged", "merge_method": "ties",
         "merge_parameters": json.dumps({"density": 0.3, "weight": [1.0, 0.5]}), "run": "r",
         "t_gain": 0.9, "t_flat": 0.95},
    ])
    meta = pd.DataFrame([{"column": c, "task": c, "group": None, "metric": "acc", "filter": "none",
                          "higher_is_better": True, "is_group": False} for c in ("t_gain", "t_flat")])
    return Tables(harness=pd.DataFrame(columns=["task", "metric", "filter", "model_id", "stderr", "evaluated_at"]),
                  holmes=pd.DataFrame(), competences=pd.DataFrame(), summary=summary, summary_metrics=meta)


def test_merged_models_read_at_a_glance() -> None:
    from mergepipe.results.plots import outcome_table
    from mergepipe.results.report import model_details, render_html

    tables = _glance_tables()
    _, _, cells, _ = leaderboard(tables)
    merged = cells[3]
    # The readable name, the method alone; the parameters go to a short second line, not a JSON blob.
    assert merged[0] == "ties-density0.3" and merged[2] == "ties"
    assert model_details(tables)[3] == "density 0.3 · weight 1/0.5 · ties-density0.3-1a2b3c4d"
    # Only tasks some expert does better than the base count for merged-vs-experts.
    outcomes = outcome_table(tables)
    assert outcomes["task"].tolist() == ["t_gain"] and outcomes["outcome"].tolist() == ["better than both"]
    from mergepipe.core.records import RunSummary

    html = render_html(tables, Path("/nonexistent"), RunSummary(), "")
    assert "<div class='scroll'><table>" in html and "overflow-x:auto" in html
    assert "<span class='detail'>density 0.3 · weight 1/0.5 · ties-density0.3-1a2b3c4d</span>" in html
    assert '{"density"' not in html and "&quot;density&quot;" not in html
