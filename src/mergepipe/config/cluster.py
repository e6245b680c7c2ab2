"""The ``cluster:`` section: how to reach a Ray cluster and what each job asks it for.

Used when ``merge.executor`` or ``evaluate.executor`` is ``ray`` (docs/distributed.md). The
address may also come from ``--ray-address`` or the ``RAY_ADDRESS`` variable; without one, a
Ray instance local to this machine is started (bound to 127.0.0.1).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

EXECUTORS = ("local", "ray")


class ClusterSection(BaseModel):
    """Ray cluster settings (only read when an executor is ``ray``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    address: str | None = Field(
        default=None,
        description="Ray cluster address (host:port of the head, or 'auto'); default: RAY_ADDRESS, else a "
        "local Ray instance on this machine",
    )
    gpus_per_job: float = Field(
        default=1.0, ge=0, description="GPUs an evaluation job asks for on a cluster with GPUs (one job per GPU)"
    )
    cpus_per_job: float = Field(
        default=1.0, gt=0, description="CPUs an evaluation job asks for on a cluster without GPUs"
    )
    gpus_per_merge: float = Field(
        default=1.0, ge=0, description="GPUs a merge asks for on a cluster with GPUs (0: merge on CPU)"
    )
    check_shared_storage: bool = Field(
        default=True,
        description="before any job, check that every node sees the output folders as this machine does",
    )
