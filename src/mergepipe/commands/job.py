"""``mergepipe job SPEC.json``: run one planned evaluation job (what the scheduler starts).

The spec is the validated job description the plan wrote (:mod:`mergepipe.evaluate.jobs`);
nothing else is needed, so the same file can be run by hand to reproduce or debug one job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "job",
        help="run one planned evaluation job from its spec file (logs/<run>/evaluate/<key>.job.json)",
        description="Run the evaluation job a spec file describes, in this process. The scheduler "
        "starts one of these per job; running one by hand reproduces that job exactly.",
    )
    parser.add_argument("spec", metavar="SPEC.json",
                        help="the job spec written by the plan ('-': read it from standard input, as cluster "
                        "workers pass it)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.evaluate.jobs import parse_spec, read_spec, run_job

    spec = parse_spec(sys.stdin.read(), "job spec on stdin") if args.spec == "-" else read_spec(Path(args.spec))
    if spec.kind == "holmes":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see 'mergepipe probe')
    # Epoch stamps in the log: what the scheduler's own overhead is measured against.
    print(f"=== job {spec.key} started {time.time():.3f}", flush=True)
    run_job(spec)
    print(f"=== job {spec.key} ended {time.time():.3f}", flush=True)
    return 0
