"""The ``evaluate:`` section of ``pipeline.yaml``: which models, which suites, which settings.

``PipelineConfig.evaluate`` is a plain dict so the merge stage does not import this module; the
evaluation stage validates it here, strictly (unknown keys are errors with a did-you-mean hint).

Every setting that can change a score (tasks, batch size, few-shot count, chat template, limit,
backend, dtype, seed) is part of a job's settings hash, so changing one re-runs the job instead of
silently reusing results made with other settings.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mergepipe.config import validate_section

HOLMES_SUITE = "holmes"
DEFAULT_SUITE = "zoo"
# The demo zoo's lm-eval group (every zoo skill task); the default suite when none is configured.
DEFAULT_SUITES: dict[str, list[str]] = {DEFAULT_SUITE: ["zoo"]}
ROLES = ("base", "experts", "merged")
_SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class EvaluateSection(BaseModel):
    """Settings of the evaluation stage (lm-eval harness suites; Holmes runs as the ``holmes`` suite)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

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
    include_paths: list[str] = Field(
        default_factory=list,
        description=(
            "extra folders of lm-eval task YAMLs (searched before lm-eval's built-in tasks, which "
            "are indexed only when a requested task is not found here)"
        ),
    )
    batch_size: int | Literal["auto"] = Field(
        default=1, description="lm-eval batch size (an integer, or 'auto'); recorded with every result"
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
    backend: Literal["hf", "vllm"] = Field(default="hf", description="lm-eval model backend")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="dtype the model is loaded in; auto = the dtype stored in its config"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="auto = one job per visible GPU when there is one, else CPU slots; cpu / cuda force it",
    )
    jobs: int = Field(default=1, ge=1, le=256, description="parallel jobs when running on CPU (CPU slots)")
    gpus: list[int] | None = Field(
        default=None,
        description="GPU indices to use as slots (default: every visible GPU); one job per GPU at a time",
    )
    seed: int | None = Field(
        default=None,
        description="seed for lm-eval's random, numpy, torch and few-shot samplers; null = the pipeline seed",
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

    @model_validator(mode="before")
    @classmethod
    def _suite_shorthand(cls, value: Any) -> Any:
        # ``suites: [gsm8k, zoo]`` is accepted as one suite per task, named after it.
        if isinstance(value, dict) and isinstance(value.get("suites"), list):
            value = dict(value)
            value["suites"] = {str(t): [str(t)] for t in value["suites"]}
        return value


def parse_evaluate_section(data: dict[str, Any] | None, source: str = "evaluate") -> EvaluateSection:
    """Validate the raw ``evaluate:`` dict into an :class:`EvaluateSection` (one-line errors)."""
    return validate_section(EvaluateSection, data, "evaluate", source)
