"""Render the configuration reference (docs/configuration.md) from the pydantic models.

The reference is generated, so it cannot drift from what the loader accepts; a test checks
that the committed file is current. Regenerate with::

    environments/main/bin/python -m mergepipe.config.docs > docs/configuration.md
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list[{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{value!r}`" if value not in ({}, []) else f"`{value}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{field.default}`" if field.default is not None else "`null`"


def table(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        rows.append(f"| `{prefix}{name}` | {_type_name(field.annotation)} | {_default(field)} | "
                    f"{(field.description or '').replace('|', '/')} |")
    return rows


_VALUE_ROWS = [  # (written, means, reaches mergekit as)
    ("parameters: {t: 0.5}", "one value", "`parameters: {t: 0.5}`"),
    ("parameters: {t: [0.0, 0.5, 1.0]}", "a shared parameter: mergekit's per-layer gradient, interpolated "
     "across the layers", "unchanged"),
    ("parameters: {t: [{filter: self_attn, value: [0, 1]}, {value: 0.5}]}", "values per tensor-name filter",
     "unchanged"),
    ("parameters: {weight: [1.0, 0.5]}", "a per-model parameter: one value per expert", "each model's `parameters`"),
    ("parameters: {weight: [[1.0, 0.5], 0.7]}", "a per-layer gradient for the first expert, 0.7 for the second",
     "each model's `parameters`"),
    ("sweep: {density: [0.3, 0.5, 0.7], weight: {start: 0.5, stop: 1.0, step: 0.5}}",
     "the grid: one merge per point (6 here), named `ties-density0.3-weight0.5`, ...", "one config per point"),
]
VALUES_TEXT = "\n".join([
    "Parameter values, side by side (`parameters` keeps mergekit's meaning; a sweep is its own key):", "",
    "| written | means | reaches mergekit as |", "| --- | --- | --- |",
    *[f"| `{w}` | {m} | {k} |" for w, m, k in _VALUE_ROWS], "",
    "`inputs: [first-stage, zoo://sort]` makes a merge of merges: a name of another merge of the run is that "
    "merge's output (merged first; its hash is part of this merge's hash), anything else a model reference.",
])


def render() -> str:
    from mergepipe.config import (
        ClusterSection,
        EvaluateSection,
        HolmesSection,
        HubSection,
        MergeSection,
        MethodSpec,
        ModelRef,
        OutputsSection,
        PipelineConfig,
        SearchMethod,
        SearchParameter,
        SearchSection,
        SweepRange,
    )
    from mergepipe.config.predict import PredictSection

    sections: list[tuple[str, type[BaseModel], str, str]] = [
        ("Top level", PipelineConfig, "", "The keys of `pipeline.yaml`. Unknown keys are errors."),
        ("A model (`base_model`, each entry of `models`)", ModelRef, "",
         "A string is shorthand for `{path: ...}`: a local directory, a Hub id (`org/name`), a PEFT "
         "adapter directory (merged over `base_model`), or `zoo://base`, `zoo://<skill>`, `zoo://<skill>-lora`."),
        ("`merge`", MergeSection, "merge.", "How merges run."),
        ("An entry of `merge.methods`", MethodSpec, "",
         "A string is shorthand for `{name: ...}` with default parameters; see `mergepipe methods`.\n\n"
         + VALUES_TEXT),
        ("A range in `sweep`", SweepRange, "", "`{start, stop, step}`: every value from start to stop by step."),
        ("`outputs`", OutputsSection, "outputs.", "Where outputs go (see the rule for relative paths above)."),
        ("`evaluate`", EvaluateSection, "evaluate.", "The evaluation stage (lm-eval harness and Holmes jobs)."),
        ("`holmes`", HolmesSection, "holmes.", "Holmes-style linguistic probing."),
        ("`cluster`", ClusterSection, "cluster.",
         "A Ray cluster, used when `merge.executor` or `evaluate.executor` is `ray` (docs/distributed.md)."),
        ("`search`", SearchSection, "search.",
         "Parameter search for `mergepipe search` (see docs/search.md). `tune` and `report` must not share "
         "a task (also through groups and tags): a config that reports on tuned tasks is refused."),
        ("An entry of `search.methods`", SearchMethod, "", "A method the search tries."),
        ("A parameter in `search.methods[].space`", SearchParameter, "",
         "A list is shorthand for `{choices: [...]}`."),
        ("`hub`", HubSection, "hub.",
         "Publishing to the Hugging Face Hub. The token comes only from `HF_TOKEN` or the login cache; "
         "a config containing a token is refused."),
        ("`predict`", PredictSection, "predict.",
         "Answers to a queries CSV in the LLM-merging starter kit's format (the competition's output file)."),
    ]
    out = ["# Configuration reference", "",
           "Generated from the config models by `python -m mergepipe.config.docs`; do not edit by hand.", "",
           "Precedence: command-line flags > environment variables of the original scripts "
           "(`MODEL_1`, `MODEL_2`, ..., `BASE_MODEL`, `METHODS`, `DTYPE`, `SEED`, `RUN_NAME`) > the config file "
           "> defaults. A raw mergekit YAML (a file with `merge_method`) is also accepted and merged unchanged.",
           "",
           "Relative paths: every path in the config (outputs, `evaluate.include_paths`, `holmes.data_dir`, "
           "`holmes.mapping_csv`, `holmes.dir`) and every path given as a flag resolves against the directory "
           "the command runs in, as mergekit's and lm-eval's command lines do. The one exception is the project's "
           "own demo `pipeline.yaml` run from elsewhere without `--config`: its paths resolve against the project.",
           ""]
    for title, model, prefix, intro in sections:
        out += [f"## {title}", "", intro, "", *table(model, prefix), ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
