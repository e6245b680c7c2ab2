"""Evaluation jobs as data: one validated spec per (model, suite), complete on its own.

The plan writes a spec; whoever runs it (a local subprocess via ``mergepipe job SPEC.json``, a
cluster worker that receives the spec object) needs nothing else: the model reference and its
results id, the tasks or probing settings, and the output folder. A spec knows when its results
are complete (:meth:`is_finished`), so the scheduler can skip finished jobs and judge a job that
exited 0 by what it left on disk.

- :class:`HarnessJobSpec` -- one lm-eval run; finished when a results file with its settings hash
  exists in ``<results>/<model-id>/<suite>/``.
- :class:`ProbeJobSpec` -- Holmes probing (the ``holmes`` suite); the prober resumes per dataset
  itself, and writes a marker with its settings hash when every dataset succeeded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergepipe.config import HarnessSettings, HolmesSection
from mergepipe.config.evaluate import HOLMES_SUITE
from mergepipe.config.load import format_validation_error
from mergepipe.core.atomic import write_text
from mergepipe.core.locks import FileLock
from mergepipe.errors import ConfigError


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobModel(_Spec):
    """The model a job evaluates, as planned."""

    reference: str = Field(description="as the user wrote it: a folder, a Hub id, zoo://NAME")
    revision: str | None = Field(default=None, description="the requested Hub revision")
    model_id: str = Field(description="the results id (folder name under the results root)")
    role: Literal["base", "expert", "merged"] | None = None
    run: str | None = None


class HarnessJobSpec(_Spec):
    kind: Literal["harness"] = "harness"
    model: JobModel
    suite: str
    tasks: list[str]
    settings: HarnessSettings
    include_paths: list[Path] = Field(default_factory=list)
    results_dir: Path
    device: str = "auto"
    datasets_dir: Path | None = Field(default=None, description="the local dataset mirror (read when it has a "
                                                                 "task's dataset)")

    @property
    def key(self) -> str:
        """Unique within a run; also the log file's name."""
        return f"{self.model.model_id}__{self.suite}"

    @property
    def settings_hash(self) -> str:
        from mergepipe.evaluate.harness.results import settings_hash

        return settings_hash(self.model.model_id, self.tasks, self.settings)

    def is_finished(self) -> bool:
        from mergepipe.evaluate.harness.results import find_finished

        return find_finished(self.results_dir / self.model.model_id / self.suite, self.settings_hash) is not None

    def lock(self) -> FileLock:
        from mergepipe.evaluate.harness.results import results_lock_file

        return FileLock(results_lock_file(self.results_dir / self.model.model_id, self.suite),
                        f"evaluating {self.model.model_id} on {self.suite}")

    def run(self) -> None:
        from mergepipe.evaluate.harness.run import run_harness

        run_harness(self.model.reference, self.tasks, results_dir=self.results_dir, suite=self.suite,
                    settings=self.settings, include_paths=self.include_paths, device=self.device,
                    role=self.model.role, run=self.model.run, revision=self.model.revision,
                    datasets_dir=self.datasets_dir)


class ProbeJobSpec(_Spec):
    kind: Literal["holmes"] = "holmes"
    model: JobModel
    holmes: HolmesSection
    data_dir: Path | None = None  # None only for the upstream engine (its own data)
    results_dir: Path
    device: str = "auto"

    @property
    def suite(self) -> str:
        return HOLMES_SUITE

    @property
    def key(self) -> str:
        return f"{self.model.model_id}__{self.suite}"

    @property
    def settings_hash(self) -> str:
        blob = json.dumps({"model_id": self.model.model_id, "data_dir": str(self.data_dir),
                           **self.holmes.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def marker(self) -> Path:
        return self.results_dir / self.model.model_id / f".mergepipe-probe-{self.settings_hash}.done"

    def is_finished(self) -> bool:
        folder = self.results_dir / self.model.model_id
        return self.marker.is_file() and any(folder.glob("results_*.csv"))

    def lock(self) -> FileLock:
        return FileLock(self.results_dir / self.model.model_id / ".holmes.lock",
                        f"probing {self.model.model_id}")

    def run(self) -> None:
        from mergepipe.evaluate.harness.results import waiting_for
        from mergepipe.evaluate.holmes.probe import probe_model

        # One writer per model's Holmes results, across runs and hosts: a second run waits, then reuses.
        with waiting_for(self.lock(), f"Holmes results of {self.model.model_id}"):
            if self.is_finished():
                print(f"skip: {self.model.model_id}/holmes already probed with these settings", flush=True)
                return
            probe_model(self)
            # Written only after every dataset succeeded: it is what makes the job skippable.
            write_text(self.marker, self.settings_hash + "\n")


JobSpec = Annotated[HarnessJobSpec | ProbeJobSpec, Field(discriminator="kind")]


def write_spec(spec: HarnessJobSpec | ProbeJobSpec, path: Path) -> Path:
    write_text(path, spec.model_dump_json(indent=2) + "\n")
    return path


def read_spec(path: Path) -> HarnessJobSpec | ProbeJobSpec:
    """A job spec from its JSON file; one line naming the file on anything malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"job spec {path}: cannot read ({exc.strerror or exc})") from None
    return parse_spec(text, str(path))


def parse_spec(text: str | dict[str, Any], where: str = "job spec") -> HarnessJobSpec | ProbeJobSpec:
    """A job spec from JSON text or a dict; errors in the config's one-line format, naming ``where``."""
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    kinds = {"harness": HarnessJobSpec, "holmes": ProbeJobSpec}
    model = kinds.get(data.get("kind")) if isinstance(data, dict) else None
    if model is None:
        raise ConfigError(f"{where}: kind: expected one of {', '.join(kinds)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, where, f"{data['kind']}.")) from None


def run_job(spec: HarnessJobSpec | ProbeJobSpec) -> None:
    """Run one job in this process; raises MergepipeError (StageFailed for a partial probe)."""
    spec.run()


__all__ = ["HarnessJobSpec", "JobModel", "JobSpec", "ProbeJobSpec", "parse_spec", "read_spec", "run_job",
           "write_spec"]
