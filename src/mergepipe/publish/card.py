"""Model cards for merged models, in the Hub's conventions.

YAML front matter (``base_model`` = the Hub inputs, ``base_model_relation: merge``, ``tags``
with ``merge`` and ``mergekit``, ``library_name: transformers``, ``license`` only when every input
agrees or the user set one), then the method and its parameters, the exact mergekit config and,
once the run is evaluated, the evaluation table. The card replaces mergekit's own README.md.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mergepipe.core.atomic import write_text
from mergepipe.core.plugins import registry
from mergepipe.core.records import MergeRecord
from mergepipe.results.tables import COMPETENCES_CSV, HARNESS_CSV

CARD_FILE = "README.md"
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# Where each method comes from, so readers can look it up.
METHOD_REFERENCES = {
    "linear": "[Model Soups](https://arxiv.org/abs/2203.05482)",
    "slerp": "[SLERP](https://en.wikipedia.org/wiki/Slerp)",
    "task_arithmetic": "[Task Arithmetic](https://arxiv.org/abs/2212.04089)",
    "ties": "[TIES-Merging](https://arxiv.org/abs/2306.01708)",
    "dare_ties": "[DARE](https://arxiv.org/abs/2311.03099) with TIES sign consensus",
    "dare_linear": "[DARE](https://arxiv.org/abs/2311.03099)",
    "breadcrumbs": "[Model Breadcrumbs](https://arxiv.org/abs/2312.06795)",
    "breadcrumbs_ties": "[Model Breadcrumbs](https://arxiv.org/abs/2312.06795) with TIES sign consensus",
    "della": "[DELLA](https://arxiv.org/abs/2406.11617)",
    "della_linear": "[DELLA](https://arxiv.org/abs/2406.11617)",
    "model_stock": "[Model Stock](https://arxiv.org/abs/2403.19522)",
    "nuslerp": "NuSLERP (mergekit)",
    "karcher": "[Karcher mean](https://en.wikipedia.org/wiki/Karcher_mean)",
    "sce": "[SCE](https://arxiv.org/abs/2408.07990)",
    "passthrough": "passthrough (mergekit)",
}


def _ref_text(ref: Any) -> str | None:
    if ref is None:
        return None
    if isinstance(ref, dict):
        path = ref.get("path") or ref.get("model")
        return f"{path}@{ref['revision']}" if path and ref.get("revision") else path
    return str(ref)


def input_refs(record: dict[str, Any]) -> list[str]:
    """The base (if any) then the experts, as written by the user, without duplicates; for a merge
    of merges, the models of every earlier stage too (never the intermediate merges themselves)."""
    refs: list[str | None] = []
    for item in [*(record.get("stages") or []), record]:
        inputs = item.get("inputs") or {}
        refs += [_ref_text(inputs.get("base"))] + [_ref_text(r) for r in inputs.get("experts") or []]
    out: list[str] = []
    for ref in refs:
        if ref and ref not in out and not ref.startswith(MERGE_INPUT):
            out.append(ref)
    return out


MERGE_INPUT = "merge:"  # how a record names an earlier merge of its run among its inputs


def _stage_line(number: int, stage: dict[str, Any], this: bool) -> str:
    inputs = stage.get("inputs") or {}
    experts = ", ".join(f"`{_ref_text(r)}`" for r in inputs.get("experts") or [])
    params = " · ".join(f"{k} {_markdown_value(v)}" for k, v in sorted((stage.get("parameters") or {}).items()))
    text = (f"{number}. `{stage.get('name')}`{' (this model)' if this else ''}: `{stage.get('method')}` of "
            f"{experts or 'its inputs'}")
    if inputs.get("base"):
        text += f" over `{_ref_text(inputs['base'])}`"
    if params:
        text += f" ({params})"
    if stage.get("config_hash"):
        text += f", config hash `{stage['config_hash']}`"
    return text


def lineage_lines(record: dict[str, Any]) -> list[str]:
    """The card's lineage section: every stage of a merge of merges, first stage first."""
    stages = list(record.get("stages") or [])
    if not stages:
        return []
    lines = ["", "## Lineage", "", f"This model was made in {len(stages) + 1} stages; `merge:NAME` is an "
             "earlier stage's output:", ""]
    lines += [_stage_line(i, stage, False) for i, stage in enumerate(stages, 1)]
    lines.append(_stage_line(len(stages) + 1, record, True))
    return lines


def hub_id_of(ref: str) -> str | None:
    """The Hub repository id of a reference, or None for local directories and plugin models (zoo://)."""
    path = ref.split("@", 1)[0]
    if registry().scheme_for(path) is not None or path.startswith((".", "/", "~")) or Path(path).expanduser().exists():
        return None
    return path if HUB_ID_RE.match(path) else None


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata block of a model card ({} when absent or invalid)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _card_text_of(ref: str) -> str | None:
    """README.md of an input if it is on disk (local dir, zoo model, Hub cache); no network."""
    hub_id = hub_id_of(ref)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            revision = ref.split("@", 1)[1] if "@" in ref else None
            cached = try_to_load_from_cache(hub_id, CARD_FILE, revision=revision)
        except Exception:  # a malformed id or cache: the license is just unknown
            return None
        return Path(cached).read_text(encoding="utf-8", errors="replace") if isinstance(cached, str) else None
    try:
        from mergepipe.core.models import resolve

        local = resolve(ref).local_dir
    except Exception:  # unresolvable here (moved, zoo not built): unknown license
        return None
    card = local / CARD_FILE
    return card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None


def license_of(ref: str) -> str | None:
    value = read_front_matter(_card_text_of(ref) or "").get("license")
    return str(value).strip().lower() if isinstance(value, str) and value.strip() else None


def agreed_license(refs: Iterable[str]) -> str | None:
    """The license every input declares, or None if any is unknown or they differ."""
    licenses = {license_of(ref) for ref in refs}
    if len(licenses) == 1:
        (only,) = licenses
        return only
    return None


def _markdown_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else str(value)
    return text.replace("|", "\\|")


def build_model_card(
    record: MergeRecord | dict[str, Any],
    mergekit_yaml: str,
    eval_table_md: str | None = None,
    *,
    license: str | None = None,
) -> str:
    """The card text (front matter + body) for one merged model."""
    if isinstance(record, MergeRecord):
        record = record.model_dump(mode="json")
    refs = input_refs(record)
    mergekit_method = (record.get("mergekit_config") or {}).get("merge_method")
    method = str(record.get("method") or mergekit_method or "unknown")
    name = str(record.get("name") or method)
    hub_inputs = [h for h in (hub_id_of(r) for r in refs) if h]
    license = license or agreed_license(refs)

    meta: dict[str, Any] = {}
    if hub_inputs:
        meta["base_model"] = hub_inputs
        meta["base_model_relation"] = "merge"
    meta["library_name"] = "transformers"
    if license:
        meta["license"] = license
    meta["tags"] = ["merge", "mergekit", "mergepipe", method]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()

    inputs = record.get("inputs") or {}
    base = _ref_text(inputs.get("base"))
    lines = [
        "---",
        front,
        "---",
        "",
        f"# {name}",
        "",
        "This is a merge of pre-trained language models made with "
        "[mergekit](https://github.com/arcee-ai/mergekit) through mergepipe.",
        "",
        "## Merge details",
        "",
        f"- **Method:** `{method}`"
        + (f" ({METHOD_REFERENCES[method]})" if method in METHOD_REFERENCES else ""),
        f"- **Base model:** `{base}`" if base else "- **Base model:** none",
        "- **Merged models:**",
    ]
    lines += [f"  - `{_ref_text(r)}`" for r in inputs.get("experts") or []]
    params = record.get("parameters") or {}
    if params:
        lines += ["", "### Parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| `{k}` | {_markdown_value(v)} |" for k, v in sorted(params.items())]
    lines += lineage_lines(record)
    facts = [
        ("dtype", record.get("dtype")),
        ("seed", record.get("seed")),
        ("mergekit version", record.get("mergekit_version")),
        ("config hash", record.get("config_hash")),
        ("created", record.get("created_at")),
    ]
    facts = [(k, v) for k, v in facts if v not in (None, "")]
    if facts:
        lines += ["", "### Provenance", ""] + [f"- **{k}:** `{v}`" for k, v in facts]
    lines += [
        "",
        "## Configuration",
        "",
        "The exact mergekit configuration used to produce this model:",
        "",
        "```yaml",
        mergekit_yaml.rstrip("\n"),
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if eval_table_md and eval_table_md.strip():
        lines += [eval_table_md.strip()]
    else:
        lines += ["Not evaluated yet; this card is updated when the run's evaluation finishes."]
    return "\n".join(lines) + "\n"


def write_model_card(
    model_dir: Path,
    record: MergeRecord | dict[str, Any],
    mergekit_yaml: str,
    eval_table_md: str | None = None,
    *,
    license: str | None = None,
) -> str:
    """Write the card as ``model_dir/README.md`` (atomically, replacing mergekit's) and return it."""
    text = build_model_card(record, mergekit_yaml, eval_table_md, license=license)
    write_text(Path(model_dir) / CARD_FILE, text)
    return text


# -- evaluation table from organized_results/ ------------------------------------------------

def _rows_of(path: Path, run: str, name: str) -> list[dict[str, str]]:
    """Rows of one organized CSV that belong to this merged model (results id ``<name>-<hash>``)."""
    if not path.is_file():
        return []
    id_re = re.compile(rf"^{re.escape(name)}(-[0-9a-f]{{8}})?$")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return [
                row for row in csv.DictReader(fh)
                if id_re.match(row.get("model_id") or "") and (row.get("run") or run) == run
            ]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def eval_table_from_organized(organized_dir: Path, run: str, name: str) -> str | None:
    """A markdown table of this model's scores from ``organized_results/`` (None if none yet).

    Reads the organize stage's tidy ``harness.csv`` (one row per task, metric and filter) and
    ``holmes_competences.csv`` (mean probing score per competence).
    """
    root = Path(organized_dir)
    rows: dict[tuple[str, str], str] = {}
    for row in _rows_of(root / HARNESS_CSV, run, name):
        metric = row.get("metric") or ""
        if (row.get("filter") or "none") not in ("none", ""):
            metric = f"{metric} ({row['filter']})"
        aggregation = (row.get("aggregation") or "").split(":", 1)[0]
        if aggregation:  # a tinyBenchmarks IRT estimate or a plain mean: never unlabelled
            metric = f"{metric}, {aggregation}"
        value = _format_score(row.get("value"))
        if (row.get("stderr") or "") not in ("", "nan", "N/A"):
            value += f" ± {_format_score(row['stderr'])}"
        rows[(row.get("task") or "?", metric)] = value
    for row in _rows_of(root / COMPETENCES_CSV, run, name):
        rows[(f"holmes: {row.get('competence') or '?'}", "mean probing score")] = _format_score(
            row.get("mean_score")
        )
    if not rows:
        return None
    out = ["| task | metric | value |", "|---|---|---|"]
    out += [f"| {t} | {m} | {v} |" for (t, m), v in sorted(rows.items())]
    return "\n".join(out)


def _format_score(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)
