"""The ``search:`` section: an optimiser proposes merge parameters, candidates are merged and scored.

The search tunes on the ``tune`` tasks only; the ``report`` tasks are evaluated once, after the
search, for the best candidate, each method at its default parameters and the experts. The two
lists must not share a task (checked here by name and, before any work, through task groups by
the search stage), so the reported score is never one the optimiser saw.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SAMPLERS = ("tpe", "cmaes", "random", "nsga2")
SECOND_OBJECTIVES = ("none", "merge_seconds", "output_bytes")
AGGREGATES = ("mean", "min", "geometric_mean")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SearchParameter(_Strict):
    """One searched parameter: a range (``low``, ``high``, optional ``step`` / ``log``) or ``choices``."""

    low: float | None = Field(default=None, description="lowest value of a range")
    high: float | None = Field(default=None, description="highest value of a range")
    step: float | None = Field(default=None, gt=0, description="grid step of a range (default: continuous)")
    log: bool = Field(default=False, description="sample the range on a log scale")
    choices: list[Any] | None = Field(default=None, description="the values to choose from (instead of a range)")
    per_expert: bool = Field(
        default=False,
        description="one value per expert (a per-model parameter such as weight); default: one value for all",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # ``density: [0.3, 0.5, 0.7]`` is a choice among those values.
        if isinstance(value, list):
            return {"choices": value}
        return value

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchParameter:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.step is not None or self.log:
                raise ValueError("give either choices or a range (low, high), not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.high <= self.low:
            raise ValueError(f"high {self.high:g} must be above low {self.low:g}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self


class SearchMethod(_Strict):
    """A method the search tries, with the parameters it searches and those it keeps fixed."""

    name: str = Field(description="merge method name (see 'mergepipe methods')")
    space: dict[str, SearchParameter] = Field(
        description="parameter name -> its range or choices, e.g. {density: {low: 0.1, high: 0.9}}"
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="fixed parameters of every candidate of this method"
    )

    @field_validator("space")
    @classmethod
    def _space_ok(cls, value: dict[str, SearchParameter]) -> dict[str, SearchParameter]:
        if not value:
            raise ValueError("space is empty; name at least one parameter to search")
        return value

    @model_validator(mode="after")
    def _not_fixed_and_searched(self) -> SearchMethod:
        both = sorted(set(self.space) & set(self.parameters))
        if both:
            raise ValueError(f"{both[0]!r} is both searched (space) and fixed (parameters)")
        return self


class SearchSection(_Strict):
    """Settings of ``mergepipe search`` (no effect on ``mergepipe run``)."""

    methods: list[SearchMethod] = Field(
        default_factory=list, description="the methods the search tries and their parameter spaces"
    )
    tune: list[str] = Field(
        default_factory=list, description="lm-eval tasks the optimiser maximises (the only scores it sees)"
    )
    report: list[str] = Field(
        default_factory=list,
        description="lm-eval tasks the result is reported on; never seen by the optimiser, disjoint from tune",
    )
    metric: str | None = Field(
        default=None,
        description="lm-eval metric,filter key to score each task (e.g. 'exact_match,strip'); default: "
                    "each task's leaderboard metric",
    )
    aggregate: Literal["mean", "min", "geometric_mean"] = Field(
        default="mean", description="how the tune tasks' scores combine into the objective"
    )
    weights: dict[str, float] | None = Field(
        default=None, description="weight per tune task for the mean (default: equal weights)"
    )
    second_objective: Literal["none", "merge_seconds", "output_bytes"] = Field(
        default="none", description="a second objective to minimise (the study becomes multi-objective)"
    )
    sampler: Literal["tpe", "cmaes", "random", "nsga2"] = Field(
        default="tpe", description="Optuna sampler: tpe (default), cmaes, random, nsga2 (multi-objective)"
    )
    trials: int = Field(default=16, ge=1, le=10000, description="candidates to evaluate in all (resumes count)")
    parallel: int | None = Field(
        default=None, ge=1, le=256,
        description="candidates proposed per round, evaluated in parallel (default: the evaluation slots)",
    )
    seed: int | None = Field(default=None, description="sampler seed (default: the pipeline seed)")
    name: str | None = Field(
        default=None,
        description="study name; candidates are merged under merged_models/<name>/ (default: <run>-search)",
    )
    keep_models: Literal["best", "all"] = Field(
        default="best",
        description=("best = delete a candidate's weights once it is scored and not the best so far; "
                     "all = keep every one"),
    )
    baseline: bool = Field(
        default=True, description="merge and evaluate each method at its default parameters for comparison"
    )

    @field_validator("tune", "report")
    @classmethod
    def _tasks_ok(cls, value: list[str]) -> list[str]:
        if any(not isinstance(t, str) or not t.strip() for t in value):
            raise ValueError("every task must be a non-empty name")
        if len(set(value)) != len(value):
            dup = next(t for t in value if value.count(t) > 1)
            raise ValueError(f"task {dup!r} is listed twice")
        return [t.strip() for t in value]

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(f"name {value!r} must be letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _honest_split(self) -> SearchSection:
        if not self.methods:
            return self
        if not self.tune:
            raise ValueError("tune: no tasks to tune on; list the tasks the optimiser may see")
        if not self.report:
            raise ValueError("report: no tasks to report on; list held-out tasks, disjoint from tune "
                             "(a score on the tuned tasks is not a result)")
        shared = [t for t in self.report if t in self.tune]
        if shared:
            raise ValueError(f"{shared[0]} is in both tune and report; report only on tasks the search "
                             "does not tune on")
        unknown = sorted(set(self.weights or {}) - set(self.tune))
        if unknown:
            raise ValueError(f"weights names {unknown[0]!r}, which is not a tune task")
        if self.sampler == "cmaes" and self.second_objective != "none":
            raise ValueError("sampler cmaes optimises one objective; use tpe or nsga2 with second_objective")
        return self

    @property
    def multi_objective(self) -> bool:
        return self.second_objective != "none"
