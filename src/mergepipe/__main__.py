"""``python -m mergepipe``: the command line (how the scheduler and cluster workers start jobs)."""

import logging
import os
import sys

from mergepipe.cli import main

code = main()
if sys.argv[1:2] == ["job"]:
    # A job process has every result on disk and closed: skip the interpreter's teardown of
    # torch, lm-eval and datasets, which took about 6 s per job and held the job's slot meanwhile
    # (benchmarks/ray_executor.py measures it).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
