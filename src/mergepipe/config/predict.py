"""The ``predict:`` section: the models' answers to a CSV of queries (the competition's output file).

With ``queries`` set, ``mergepipe run`` writes, for each model of ``roles``, the answers to every
query of that CSV (the LLM-merging starter kit's format: ``id,input,eval_type,answer_choices``)
into ``<outputs.predictions>/<run>/<model>/<queries file name>`` (columns ``id,prediction,dummy_field``).
``mergepipe predict`` does the same for one model with the same settings as flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PredictSettings(BaseModel):
    """How answers are generated; part of a predictions file's identity."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    batch_size: int = Field(default=8, ge=1, le=4096,
                            description="queries per forward pass (multiple choice: choices per pass)")
    max_new_tokens: int = Field(default=64, ge=1,
                                description="tokens generated per 'generation' query (the starter kit uses 64)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="dtype the model is loaded in; auto = the dtype stored in its config"
    )


PREDICT_FIELDS = tuple(PredictSettings.model_fields)


class PredictSection(PredictSettings):
    """The predict stage of ``mergepipe run`` (off while ``queries`` is unset)."""

    queries: Path | None = Field(
        default=None,
        description=(
            "CSV of queries in the LLM-merging starter kit's format (id, input, eval_type = multiple_choice "
            "| generation, answer_choices as a list literal); unset = no predict stage"
        ),
    )
    roles: list[Literal["base", "experts", "merged"]] = Field(
        default_factory=lambda: ["merged"], description="which models answer: base, experts, merged"
    )
