"""The ``holmes:`` section of ``pipeline.yaml``: how Holmes-style linguistic probing runs.

Relative paths (``data_dir``, ``mapping_csv``, ``dir``) follow the config's one rule for
paths (:meth:`mergepipe.config.schema.PipelineConfig.resolve_paths`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class HolmesSection(BaseModel):
    """Settings of the Holmes probing suite (built-in engine or the upstream checkout)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    engine: Literal["builtin", "upstream"] = Field(
        default="builtin",
        description=(
            "'builtin': mergepipe's own Holmes-compatible engine (no extra install); 'upstream': "
            "run investigate.py of a Holmes checkout given by 'dir' in environments/holmes"
        ),
    )
    data_dir: Path | None = Field(
        default=None,
        description=(
            "folder of Holmes dataset folders (each with config-none.yaml + samples.csv); "
            "default: the demo zoo's probing sets (builtin) or <dir>/data/<version> (upstream)"
        ),
    )
    version: str | None = Field(
        default=None,
        description=(
            "benchmark version written into results_<version>.csv; default: the name of data_dir "
            "(e.g. 'flash-holmes'); for the upstream engine, the folder under <dir>/data/"
        ),
    )
    mapping_csv: Path | None = Field(
        default=None,
        description=(
            "CSV mapping each probing dataset to its competence, in the upstream leaderboard "
            "columns ('probing dataset', 'linguistic subfield', 'linguistic phenomena', 'probe "
            "type'); default: a mapping CSV found in data_dir"
        ),
    )
    dir: Path | None = Field(
        default=None, description="the upstream Holmes checkout (engine: upstream only), data downloaded"
    )
    seeds: int = Field(default=5, ge=1, le=100, description="probe seeds per dataset (0..seeds-1)")
    control_task: bool = Field(
        default=True,
        description="also train on permuted labels (control task) so selectivity can be reported",
    )
    layer: int = Field(
        default=-1, description="hidden-state layer to probe: -1 = last, 0 = embeddings, k = after block k"
    )
    batch_size: int = Field(default=32, ge=1, description="encoding batch size (sentences per forward pass)")
    max_length: int = Field(default=512, ge=8, description="longest input in tokens; longer inputs are cut")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where the frozen model encodes; probes always train on CPU"
    )

    @field_validator("version")
    @classmethod
    def _version_ok(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError(f"version {value!r} must be a plain folder-like name")
        return value

    @model_validator(mode="after")
    def _upstream_needs_checkout(self) -> HolmesSection:
        if self.engine == "upstream" and self.dir is None:
            raise ValueError("holmes.dir must name the upstream Holmes checkout when holmes.engine is 'upstream'")
        return self
