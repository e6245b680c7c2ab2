"""A static report of a run: ``organized_results/report.html`` (self-contained) and ``report.md``.

The HTML embeds its images as data URIs and its CSS inline, so it opens offline from anywhere
(mail it, attach it to a paper review). ``report.md`` links the PNGs in ``plots/`` instead.

Contents: the leaderboard (best value per column marked), merged-vs-experts outcomes, each
search's tune-vs-report comparison (``search_summary.json``), the figures, the run's config and
per-stage timings (from ``run_summary.json``, written by
``mergepipe run``), failures and skipped files.

``run_summary.json`` (:class:`mergepipe.core.records.RunSummary`, written by ``mergepipe run``)
is optional: without it the report says that stage timings are unknown.
"""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mergepipe import __version__
from mergepipe.core.atomic import write_text
from mergepipe.core.records import RunSummary
from mergepipe.results.search_table import StudySummary, comparison_rows, read_summary
from mergepipe.results.tables import HOLMES_PREFIX, LABEL_COLUMNS, Tables, display_name, load_tables

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
FIGURES = [  # (file stem in plots/, caption)
    ("task_performance", "Harness scores per task. Bars are coloured by role; the shaded band "
     "spans the experts' scores, so a merge above, inside or below it is visible at a glance."),
    ("merge_outcomes", "Per merged model: tasks where it beats both experts, lies between "
     "them, or is worse than both; only tasks that an expert does better than the base count."),
    ("holmes_competences", "Holmes probing: raw mean score per competence, and Holmes' "
     "leaderboard score relative to the models of this run."),
    ("holmes_datasets", "Holmes probing per dataset: probe score (dots), control-task score "
     "(x) and selectivity (their difference)."),
    ("correlation_holmes_harness", "Kendall tau between Holmes competence scores and harness "
     "task scores across the evaluated models."),
    ("parameter_sweeps", "Scores vs the merge parameters a set of merges varies: a one-parameter "
     "sweep (a line per score), each parameter of a grid (a line per value of the others), and the "
     "tune objective vs each parameter a search tried."),
    ("search_trajectory", "Search: the tune objective of each candidate in trial order with the best "
     "so far (dashed: the defaults), and the tune vs held-out report scores of the best candidate, "
     "the defaults and the experts."),
]
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}.sub{color:#666;margin-top:0}
.scroll{overflow-x:auto;max-width:100%;margin:1rem 0}
table{border-collapse:collapse;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .55rem;text-align:right}
th{max-width:8.5rem;overflow-wrap:anywhere;vertical-align:bottom}
td.l{max-width:16rem;overflow-wrap:anywhere}
.scroll td:first-child,.scroll th:first-child{position:sticky;left:0;background:#fff;z-index:1}
.scroll th:first-child{background:#f4f4f4}
.detail{color:#777;font-size:.78rem}
th{background:#f4f4f4}td.l,th.l{text-align:left}
td.best{font-weight:700;background:#e8f5e9}
.role-base{color:#555}.role-expert{color:#1f5fa0}.role-merged{color:#1b7a1b}
figure{margin:1.5rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}
pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.8rem}
.fail{color:#b00020}.muted{color:#777}
"""


# -- the leaderboard -------------------------------------------------------------------------

def _fmt(value: Any, rank: bool = False) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    if math.isnan(v):
        return "–"
    return f"{v:.1f}" if rank or abs(v) >= 10 else f"{v:.3f}"


def leaderboard(tables: Tables) -> tuple[list[str], list[str], list[list[str]], list[list[bool]]]:
    """(headers, column descriptions, cell texts, best-in-column flags) of the wide table."""
    summary = tables.summary
    meta = tables.summary_metrics.set_index("column") if not tables.summary_metrics.empty else None
    value_cols = [c for c in summary.columns if c not in LABEL_COLUMNS]
    headers = ["model", "role", "method", *[c.removeprefix(HOLMES_PREFIX) for c in value_cols]]
    described = ["", "", ""]
    for col in value_cols:
        if col.startswith(HOLMES_PREFIX):
            described.append("Holmes mean")
        elif meta is not None and col in meta.index:
            row = meta.loc[col]
            filt = row["filter"] if isinstance(row["filter"], str) and row["filter"] != "none" else ""
            agg = row.get("aggregation")
            agg = agg.split(":", 1)[0] if isinstance(agg, str) and agg else ""
            described.append(f"{row['metric']}{' ' + filt if filt else ''}"
                             + (" (group)" if str(row.get("is_group")).lower() == "true" else "")
                             + (f" · {agg}" if agg else ""))
        else:
            described.append("")
    best_flags: list[list[bool]] = [[False] * len(headers) for _ in range(len(summary))]
    for j, col in enumerate(value_cols):
        values = summary[col].astype(float)
        if values.notna().sum() < 2:
            continue
        higher = True
        if meta is not None and col in meta.index:
            higher = str(meta.loc[col, "higher_is_better"]).lower() != "false"
        if values.nunique() < 2:  # all equal: nothing stands out
            continue
        best = values.max() if higher else values.min()
        for i, v in enumerate(values):
            best_flags[i][3 + j] = bool(not math.isnan(v) and v == best)
    cells = []
    for _, row in summary.iterrows():
        method = row.get("merge_method")
        cells.append([display_name(str(row["model_id"])), str(row["role"]),
                      method if isinstance(method, str) else "", *[_fmt(row[c]) for c in value_cols]])
    return headers, described, cells, best_flags


def aggregation_notes(tables: Tables) -> list[str]:
    """How the scores of columns with a recorded aggregation were made (tinyBenchmarks: IRT
    estimates or plain means), one line per kind, naming the columns."""
    meta = tables.summary_metrics
    if meta.empty or "aggregation" not in meta:
        return []
    groups: dict[str, list[str]] = {}
    for _, row in meta.iterrows():
        label = row.get("aggregation")
        if isinstance(label, str) and label:
            groups.setdefault(label, []).append(str(row["column"]))
    return [f"{', '.join(columns)}: {label}" for label, columns in groups.items()]


def parameter_text(params: Any) -> str:
    """Merge parameters as a short line (``density 0.3 · weight 1``); lists per expert as ``a/b``."""
    if isinstance(params, str):
        try:
            params = json.loads(params) if params else None
        except ValueError:
            return params
    if not isinstance(params, dict) or not params:
        return ""

    def value(v: Any) -> str:
        if isinstance(v, list):
            return "/".join(value(x) for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    return " · ".join(f"{k} {value(v)}" for k, v in sorted(params.items()))


def model_details(tables: Tables) -> list[str]:
    """Per leaderboard row, the secondary line under the model's name: its merge parameters, and
    the full results id when the name hides a content hash."""
    out = []
    for _, row in tables.summary.iterrows():
        model_id = str(row["model_id"])
        parts = [parameter_text(row.get("merge_parameters"))]
        if display_name(model_id) != model_id:
            parts.append(model_id)
        out.append(" · ".join(p for p in parts if p))
    return out


# -- HTML ------------------------------------------------------------------------------------

def _html_table(headers: list[str], rows: list[list[str]], best: list[list[bool]] | None = None,
                sub: list[str] | None = None, left: int = 1, role_col: int | None = None,
                details: list[str] | None = None) -> str:
    """A table; ``details`` puts a small second line under each row's first cell."""
    e = html.escape
    out = ["<div class='scroll'><table><thead><tr>"]
    for j, h in enumerate(headers):
        cls = ' class="l"' if j < left else ""
        extra = f"<br><span class='muted'>{e(sub[j])}</span>" if sub and sub[j] else ""
        out.append(f"<th{cls}>{e(h)}{extra}</th>")
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        role = f' class="role-{e(row[role_col])}"' if role_col is not None else ""
        out.append(f"<tr{role}>")
        for j, cell in enumerate(row):
            classes = []
            if j < left:
                classes.append("l")
            if best and best[i][j]:
                classes.append("best")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            mark = " ★" if best and best[i][j] else ""
            extra = f"<br><span class='detail'>{e(details[i])}</span>" if details and j == 0 and details[i] else ""
            out.append(f"<td{cls}>{e(cell)}{mark}{extra}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


TIMING_HEADERS = ["stage", "status", "seconds", "jobs", "failed", "peak RSS", "peak GPU", "detail"]


def _bytes(value: Any) -> str:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return ""
    if not n:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _timing_rows(summary: RunSummary) -> list[list[str]]:
    rows = []
    for stage in summary.stages:
        secs = stage.duration
        rows.append([stage.name, stage.status, "" if secs is None else f"{secs:.1f}",
                     "" if stage.jobs is None else str(stage.jobs),
                     "" if stage.failed_jobs is None else str(stage.failed_jobs),
                     _bytes(stage.peak_rss_bytes), _bytes(stage.peak_gpu_bytes), stage.detail])
    return rows


def _failure_rows(summary: RunSummary, tables: Tables) -> list[list[str]]:
    rows = [[f.stage, f.job, f.message, f.log] for f in summary.failures]
    for issue in (tables.notes or {}).get("issues", []):
        if issue.get("kind") in ("unreadable", "layout", "no-mapping", "empty"):
            rows.append(["organize", issue.get("kind", ""), issue.get("message", ""), ""])
    return rows


def _config_text(summary: RunSummary, config_path: Path | None) -> str:
    if config_path is not None and Path(config_path).is_file():
        return Path(config_path).read_text(encoding="utf-8")
    if summary.config is not None:
        import yaml

        return yaml.safe_dump(summary.config, sort_keys=False)
    return ""


def _outcome_rows(tables: Tables) -> list[list[str]]:
    from mergepipe.results.plots import OUTCOMES, outcome_table

    table = outcome_table(tables)
    if table.empty:
        return []
    counts = table.groupby(["model_id", "outcome"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=OUTCOMES, fill_value=0)
    methods = table.drop_duplicates("model_id").set_index("model_id")["merge_method"]
    return [[display_name(m), str(methods.get(m) or ""), *[str(int(counts.loc[m, o])) for o in OUTCOMES]]
            for m in counts.index]


def _studies(tables: Tables) -> list[StudySummary]:
    summary = read_summary(tables.out_dir) if tables.out_dir is not None else None
    return list(summary.studies.values()) if summary else []


def _img_tag(path: Path, alt: str) -> str:
    """An embedded PNG shown at its nominal size (saved at 150 dpi; CSS pixels are 1/96 in)."""
    data = path.read_bytes()
    width = int.from_bytes(data[16:20], "big") if data[:8] == b"\x89PNG\r\n\x1a\n" else 0
    size = f" width='{round(width * 96 / 150)}'" if width else ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f"<img src='{uri}'{size} alt='{html.escape(alt)}'>"


def render_html(tables: Tables, plots_dir: Path, summary: RunSummary, config_text: str) -> str:
    from mergepipe.results.plots import OUTCOMES

    e = html.escape
    run = summary.run or ", ".join(sorted({str(r) for r in tables.summary.get("run", [])
                                           if isinstance(r, str)})) or "results"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>mergepipe report: {e(run)}</title><style>{_CSS}</style></head><body>",
             f"<h1>mergepipe report: {e(run)}</h1>",
             f"<p class='sub'>generated {e(now)} by mergepipe {e(__version__)} · "
             f"{len(tables.summary)} models · {len(tables.tasks)} score columns</p>"]
    headers, sub, cells, best = leaderboard(tables)
    parts.append("<h2>Leaderboard</h2><p>Best value per column marked ★ (direction from lm-eval's "
                 "<code>higher_is_better</code>); – = not evaluated.</p>")
    parts.append(_html_table(headers, cells, best, sub, left=3, role_col=1, details=model_details(tables)))
    notes = aggregation_notes(tables)
    if notes:
        parts.append("<p>How these scores were aggregated:</p><ul>"
                     + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    outcomes = _outcome_rows(tables)
    if outcomes:
        parts.append("<h2>Merged models vs experts</h2><p class='muted'>Counted over the tasks that at "
                     "least one expert does better than the base.</p>")
        parts.append(_html_table(["merged model", "method", *OUTCOMES], outcomes, left=2))
    for study in _studies(tables):
        heads, rows = comparison_rows(study)
        parts.append(f"<h2>Search {e(study.study)}</h2><p>{study.trials_done} candidates "
                     f"({study.trials_failed} failed), sampler {e(study.sampler)}, objective "
                     f"{e(study.objective)}; the report tasks were never seen by the search.</p>")
        parts.append(_html_table(heads, rows, left=2))
    parts.append("<h2>Figures</h2>")
    for stem, caption in FIGURES:
        png = plots_dir / f"{stem}.png"
        if png.is_file():
            parts.append(f"<figure>{_img_tag(png, stem)}"
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    timings = _timing_rows(summary)
    parts.append("<h2>Run</h2>")
    if timings:
        parts.append(_html_table(TIMING_HEADERS, timings, left=2))
        parts.append(f"<p>total {summary.total:.1f} s"
                     + (f" · started {e(summary.started_at)}" if summary.started_at else "")
                     + (f" · config hash <code>{e(summary.config_hash)}</code>" if summary.config_hash else "")
                     + "</p>")
    else:
        parts.append("<p class='muted'>no run_summary.json: stage timings unknown (stages run one "
                     "by one).</p>")
    failures = _failure_rows(summary, tables)
    parts.append("<h2>Failures</h2>")
    if failures:
        parts.append("<div class='fail'>"
                     + _html_table(["stage", "job / kind", "message", "log"], failures, left=4)
                     + "</div>")
    else:
        parts.append("<p>none</p>")
    superseded = [i for i in (tables.notes or {}).get("issues", []) if i.get("kind") == "superseded"]
    if superseded:
        items = "".join(f"<li>{e(i['message'])}</li>" for i in superseded)
        parts.append(f"<details><summary>{len(superseded)} older result(s) superseded by newer "
                     f"ones</summary><ul>{items}</ul></details>")
    if config_text:
        source = summary.config_file or "config"
        parts.append(f"<h2>Config</h2><p class='muted'>{e(str(source))}</p><pre>{e(config_text)}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# -- Markdown --------------------------------------------------------------------------------

def _md_table(headers: list[str], rows: list[list[str]], best: list[list[bool]] | None = None) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(
            f"**{cell(c)}**" if best and best[i][j] else cell(c) for j, c in enumerate(row)) + " |")
    return "\n".join(lines)


def render_markdown(tables: Tables, plots_dir: Path, results_dir: Path, summary: RunSummary,
                    config_text: str) -> str:
    from mergepipe.results.plots import OUTCOMES

    run = summary.run or "results"
    headers, sub, cells, best = leaderboard(tables)
    for row, detail in zip(cells, model_details(tables), strict=True):
        if detail:
            row[0] = f"{row[0]} ({detail})"
    heads = [f"{h} ({s})" if s else h for h, s in zip(headers, sub, strict=True)]
    out = [f"# mergepipe report: {run}", "",
           f"{len(tables.summary)} models, {len(tables.tasks)} score columns. Best value per column in bold.",
           "", "## Leaderboard", "", _md_table(heads, cells, best), ""]
    notes = aggregation_notes(tables)
    if notes:
        out += ["How these scores were aggregated:", "", *[f"- {n}" for n in notes], ""]
    outcomes = _outcome_rows(tables)
    if outcomes:
        out += ["## Merged models vs experts", "",
                _md_table(["merged model", "method", *OUTCOMES], outcomes), ""]
    for study in _studies(tables):
        heads, rows = comparison_rows(study)
        out += [f"## Search {study.study}", "",
                f"{study.trials_done} candidates ({study.trials_failed} failed), sampler {study.sampler}, "
                f"objective {study.objective}; the report tasks were never seen by the search.", "",
                _md_table(heads, rows), ""]
    out += ["## Figures", ""]
    for stem, caption in FIGURES:
        png = plots_dir / f"{stem}.png"
        if png.is_file():
            rel = png.relative_to(results_dir) if png.is_relative_to(results_dir) else png
            out += [f"![{stem}]({rel.as_posix()})", "", f"*{caption}*", ""]
    timings = _timing_rows(summary)
    if timings:
        out += ["## Run", "", _md_table(TIMING_HEADERS, timings), ""]
    failures = _failure_rows(summary, tables)
    out += ["## Failures", "", _md_table(["stage", "job / kind", "message", "log"], failures)
            if failures else "none", ""]
    if config_text:
        out += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    return "\n".join(out)


def write_report(results_dir: Path | str, config_path: Path | str | None = None,
                 plots_dir: Path | str | None = None, make_missing_plots: bool = True
                 ) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``results_dir`` (organized_results)."""
    from mergepipe.results.plots import PLOTS_DIR, make_plots

    results_dir = Path(results_dir)
    tables = load_tables(results_dir)
    plots = Path(plots_dir) if plots_dir else results_dir / PLOTS_DIR
    if make_missing_plots and not any(plots.glob("*.png")):
        make_plots(tables, plots)
    summary = RunSummary.read(results_dir) or RunSummary()
    config_text = _config_text(summary, Path(config_path) if config_path else None)
    html_path = results_dir / REPORT_HTML
    md_path = results_dir / REPORT_MD
    write_text(html_path, render_html(tables, plots, summary, config_text))
    write_text(md_path, render_markdown(tables, plots, results_dir, summary, config_text))
    return html_path, md_path
