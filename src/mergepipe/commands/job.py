"""``mergepipe job SPEC.json``: run one planned evaluation job (what the scheduler starts).

The spec is the validated job description the plan wrote (:mod:`mergepipe.evaluate.jobs`);
nothing else is needed, so the same file can be run by hand to reproduce or debug one job.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "job",
        help="run one planned evaluation job from its spec file (logs/<run>/evaluate/<key>.job.json)",
        description="Run the evaluation job a spec file describes, in this process. The scheduler "
        "starts one of these per job; running one by hand reproduces that job exactly.",
    )
    parser.add_argument("spec", type=Path, metavar="SPEC.json", help="the job spec written by the plan")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.evaluate.jobs import read_spec, run_job

    spec = read_spec(args.spec)
    if spec.kind == "holmes":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see 'mergepipe probe')
    run_job(spec)
    return 0
