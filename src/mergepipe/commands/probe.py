"""``mergepipe probe MODEL``: Holmes-style linguistic probing of one model.

Resumable per dataset: re-running it skips datasets whose results are already stored with the
same settings. The probing settings are the ``holmes:`` section's, as flags generated from it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mergepipe.config import HolmesSection
from mergepipe.config.options import add_model_options, given

# holmes-section fields offered as flags; two keep their historical flag names.
FIELDS = ("engine", "data_dir", "version", "seeds", "layer", "batch_size", "max_length", "device")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="Holmes linguistic probing of one model (built-in engine or upstream checkout)",
        description=(
            "Probe MODEL on every Holmes dataset folder in --data-dir and write "
            "<out>/<model-id>/results_<version>.csv in the upstream Holmes column schema. "
            "Finished datasets are kept and not recomputed on a re-run. A flag left out keeps the "
            "value of the config's 'holmes:' section (or its default)."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="local model directory, Hub id or zoo:// reference")
    p.add_argument("--config", type=Path, default=None,
                   help="pipeline.yaml whose 'holmes:' and 'outputs:' sections give defaults")
    p.add_argument("--out", type=Path, default=None,
                   help="results root, the holmes_results folder (default: outputs.holmes_results)")
    settings = p.add_argument_group("probing settings (holmes section)")
    add_model_options(settings, HolmesSection, FIELDS)
    control = settings.add_mutually_exclusive_group()
    control.add_argument("--control", dest="control_task", action="store_true", default=None,
                         help=HolmesSection.model_fields["control_task"].description + " (default)")
    control.add_argument("--no-control", dest="control_task", action="store_false", help="skip the control task")
    settings.add_argument("--holmes-dir", dest="dir", type=Path, default=None,
                          help=HolmesSection.model_fields["dir"].description)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="encoding cache (default: environments/cache/holmes_encodings or $MERGEPIPE_CACHE)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--holmes-python", type=Path, default=None,
                   help="python of the Holmes environment (default: environments/holmes/bin/python)")
    p.add_argument("--role", choices=["base", "expert", "merged"], default=None,
                   help="role recorded in model_info.json (default: merged if MODEL has a merge record)")
    p.add_argument("--run", default=None, help="run name recorded in model_info.json")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Before torch loads: idle OpenMP threads sleep instead of spinning. Probing runs many small
    # ops; on busy shared cores spinning threads made encoding 10-20x slower (measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mergepipe.config import PipelineConfig, load_config
    from mergepipe.config.options import validate_with_flags
    from mergepipe.evaluate.holmes.probe import probe_model
    from mergepipe.evaluate.jobs import JobModel, ProbeJobSpec
    from mergepipe.evaluate.models import prepare_model
    from mergepipe.evaluate.plan import probing_data_dir

    config = load_config(args.config) if args.config is not None else PipelineConfig().resolve_paths(Path.cwd())
    source = str(args.config or "probe")
    flags = given(args, (*FIELDS, "control_task", "dir"))
    section = validate_with_flags(HolmesSection, config.holmes.model_dump(mode="json"), flags, source, "holmes.")
    config = config.model_copy(update={"holmes": section}).resolve_paths(Path.cwd())
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    prepared = prepare_model(args.model)
    spec = ProbeJobSpec(
        model=JobModel(reference=args.model, model_id=prepared.model_id, role=args.role, run=args.run),
        holmes=config.holmes, data_dir=probing_data_dir(config),
        results_dir=(args.out or config.outputs.holmes_results).expanduser().resolve(),
        device=config.holmes.device,
    )
    probe_model(spec, cache_dir=args.cache_dir, holmes_python=args.holmes_python)
    return 0
