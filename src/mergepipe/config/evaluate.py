"""The ``evaluate:`` section: which models, which suites, and the settings of every lm-eval job.

:class:`HarnessSettings` holds everything besides the model and the tasks that can change a
score (batch size, few-shot count, chat template, limit, backend, dtype, seed). It is defined
once: the section inherits it, ``mergepipe eval-harness`` and ``mergepipe evaluate`` generate
their flags from it (:mod:`mergepipe.config.options`), and a job spec carries it to the job
process. Every one of its fields is part of a job's settings hash, so changing one re-runs the
job instead of silently reusing results made with other settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HOLMES_SUITE = "holmes"
DEFAULT_SUITE = "zoo"
# The demo zoo's lm-eval group (every zoo skill task); the default suite when none is configured.
DEFAULT_SUITES: dict[str, list[str]] = {DEFAULT_SUITE: ["zoo"]}
ROLES = ("base", "experts", "merged")
BACKENDS = ("hf", "vllm")
LOAD_DTYPES = ("auto", "float32", "float16", "bfloat16")
# lm-eval's own defaults for (python, numpy, torch, fewshot) seeds when none is given.
LM_EVAL_DEFAULT_SEEDS = (0, 1234, 1234, 1234)
_SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class HarnessSettings(BaseModel):
    """Everything besides the model and the tasks that can change an lm-eval score."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    batch_size: int | Literal["auto"] = Field(
        default=1, description="lm-eval batch size (a positive integer, or 'auto'); recorded with every result"
    )
    num_fewshot: int | None = Field(
        default=None, ge=0, description="few-shot examples per prompt; null = each task's own default"
    )
    apply_chat_template: bool = Field(
        default=False, description="format prompts with the model's chat template; recorded with every result"
    )
    limit: float | None = Field(
        default=None,
        gt=0,
        description="evaluate only the first N documents per task (N >= 1) or a fraction (< 1); for smoke tests",
    )
    max_gen_toks: int | None = Field(
        default=None, ge=1,
        description="cap on the tokens a generate_until task generates per item; null = each task's own setting",
    )
    backend: Literal["hf", "vllm"] = Field(default="hf", description="lm-eval model backend")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="dtype the model is loaded in; auto = the dtype stored in its config"
    )
    seed: int | None = Field(
        default=None,
        description=(
            "one seed for lm-eval's random, numpy, torch and few-shot samplers; null = the pipeline "
            "seed in a pipeline, lm-eval's defaults (0, 1234, 1234, 1234) for a one-off job"
        ),
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size_ok(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be a positive integer or 'auto', got {value}")
        return value

    @property
    def seeds(self) -> tuple[int, int, int, int]:
        return LM_EVAL_DEFAULT_SEEDS if self.seed is None else (self.seed,) * 4

    def lm_eval_limit(self) -> int | float | None:
        # lm-eval reads a value >= 1 as a document count and < 1 as a fraction.
        if self.limit is None:
            return None
        return int(self.limit) if self.limit >= 1 else float(self.limit)

    @classmethod
    def subset(cls, settings: BaseModel) -> HarnessSettings:
        """The harness settings of a model that carries them (the ``evaluate`` section)."""
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})


HARNESS_FIELDS = tuple(HarnessSettings.model_fields)
# Settings added after results were first recorded: left out of the settings hash while unset, so
# results made before they existed keep their identity.
HASH_OPTIONAL_FIELDS = ("max_gen_toks",)


class EvaluateSection(HarnessSettings):
    """Settings of the evaluation stage (lm-eval harness suites; Holmes runs as the ``holmes`` suite)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    do_harness: bool = Field(default=True, description="run the lm-eval harness suites")
    do_holmes: bool = Field(
        default=False, description="run Holmes probing (the 'holmes' suite; settings under 'holmes:')"
    )
    roles: list[Literal["base", "experts", "merged"]] = Field(
        default_factory=lambda: list(ROLES),
        description="which models 'mergepipe evaluate' picks from the config: base, experts, merged",
    )
    suites: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_SUITES.items()},
        description=(
            "suite name -> lm-eval task, group or tag names; each (model, suite) pair is one job "
            "and its results go to harness_results/<model-id>/<suite>/"
        ),
    )
    include_paths: list[Path] = Field(
        default_factory=list,
        description=(
            "extra folders of lm-eval task YAMLs (searched before lm-eval's built-in tasks, which "
            "are indexed only when a requested task is not found here)"
        ),
    )
    datasets_dir: Path = Field(
        default=Path("datasets"),
        description=(
            "local dataset mirror: <datasets_dir>/<dataset_path>/ holds a Hub dataset repository's files "
            "(README.md with a configs: block, data files), as 'mergepipe datasets fetch' or "
            "snapshot_download(repo_type='dataset') writes it; a task reads its dataset from here whenever "
            "it is there (env MERGEPIPE_DATASETS_DIR)"
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="auto = one job per visible GPU when there is one, else CPU slots; cpu / cuda force it",
    )
    jobs: int = Field(default=1, ge=1, le=256, description="parallel jobs when running on CPU (CPU slots)")
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="local = subprocesses on this machine's GPUs / CPU slots; ray = jobs placed on a Ray "
        "cluster's nodes (settings under 'cluster:')",
    )
    gpus: list[int] | None = Field(
        default=None,
        description="GPU indices to use as slots (default: every visible GPU); one job per GPU at a time",
    )

    @field_validator("suites")
    @classmethod
    def _suites_ok(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, tasks in value.items():
            if not _SUITE_RE.match(name):
                raise ValueError(f"suite name {name!r} must be letters, digits, '.', '_' or '-'")
            if name == HOLMES_SUITE:
                raise ValueError("suite name 'holmes' is reserved for probing (set do_holmes instead)")
            if not tasks:
                raise ValueError(f"suite {name!r} lists no tasks")
            if any(not isinstance(t, str) or not t.strip() for t in tasks):
                raise ValueError(f"suite {name!r}: every task must be a non-empty name")
        return value

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_list(cls, value: Any) -> Any:
        # "0,1,3" (one flag value or a string in the file) is a list of indices too.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part for v in value for part in (str(v).replace(",", " ").split() if isinstance(v, str) else [v])]
        return value

    @model_validator(mode="before")
    @classmethod
    def _suite_shorthand(cls, value: Any) -> Any:
        # ``suites: [gsm8k, zoo]`` is accepted as one suite per task, named after it.
        if isinstance(value, dict) and isinstance(value.get("suites"), list):
            value = dict(value)
            value["suites"] = {str(t): [str(t)] for t in value["suites"]}
        return value

    def harness_settings(self, pipeline_seed: int) -> HarnessSettings:
        """The settings every harness job of this section runs with (seed: the pipeline's if unset)."""
        settings = HarnessSettings.subset(self)
        return settings if settings.seed is not None else settings.model_copy(update={"seed": pipeline_seed})
