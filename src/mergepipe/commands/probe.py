"""``mergepipe probe MODEL``: Holmes-style linguistic probing of one model.

This is the command the evaluation scheduler runs for each Holmes job. It is resumable per
dataset: re-running it skips datasets whose results are already stored with the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mergepipe.errors import ConfigError, MergepipeError, StageFailed


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="Holmes linguistic probing of one model (built-in engine or upstream checkout)",
        description=(
            "Probe MODEL on every Holmes dataset folder in --data-dir and write "
            "<out>/<model-id>/results_<version>.csv in the upstream Holmes column schema. "
            "Finished datasets are kept and not recomputed on a re-run."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="local model directory, Hub id or zoo:// reference")
    p.add_argument("--config", type=Path, default=None,
                   help="pipeline.yaml whose 'holmes:' section gives defaults for the options below")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder of Holmes dataset folders (default: holmes.data_dir, else the zoo's probing sets)")
    p.add_argument("--out", type=Path, default=None,
                   help="results root, the holmes_results folder (default: outputs.holmes_results or ./holmes_results)")
    p.add_argument("--seeds", type=int, default=None, help="probe seeds per dataset, 0..N-1 (default 5)")
    p.add_argument("--version", default=None,
                   help="name in results_<version>.csv (default: the data folder's name)")
    p.add_argument("--layer", type=int, default=None, help="hidden-state layer to probe (default -1 = last)")
    control = p.add_mutually_exclusive_group()
    control.add_argument("--control", dest="control", action="store_true", default=None,
                         help="also run the control task: permuted labels (default)")
    control.add_argument("--no-control", dest="control", action="store_false",
                         help="skip the control task")
    p.add_argument("--batch-size", type=int, default=None, help="encoding batch size (default 32)")
    p.add_argument("--max-length", type=int, default=None, help="longest input in tokens (default 512)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="where the model encodes (default auto); probes train on CPU")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="encoding cache (default: environments/cache/holmes_encodings or $MERGEPIPE_CACHE)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--engine", choices=["builtin", "upstream"], default=None,
                   help="builtin (default) or upstream: run investigate.py of --holmes-dir")
    p.add_argument("--holmes-dir", type=Path, default=None, help="upstream Holmes checkout (engine upstream)")
    p.add_argument("--holmes-python", type=Path, default=None,
                   help="python of the Holmes environment (default: environments/holmes/bin/python)")
    info = p.add_argument_group("model info (written to <out>/<model-id>/model_info.json when --role is given)")
    info.add_argument("--role", choices=["base", "expert", "merged"], default=None, help="the model's role")
    info.add_argument("--reference", default=None, help="the reference as the user wrote it (default: MODEL)")
    info.add_argument("--merge-method", default=None, help="merge method of a merged model")
    info.add_argument("--merge-parameters", default=None, help="merge parameters as a JSON object")
    info.add_argument("--run", default=None, help="run name")
    p.set_defaults(func=main)


def _settings(args: argparse.Namespace) -> tuple[Any, Path]:
    from mergepipe.evaluate.holmes_settings import parse_holmes_section

    out_default = Path("holmes_results")
    if args.config is not None:
        from mergepipe.config import load_config, read_yaml

        cfg = load_config(args.config)
        raw = read_yaml(args.config).get("holmes") or {}
        section = parse_holmes_section(raw, args.config.resolve().parent, str(args.config))
        out_default = cfg.outputs.holmes_results
    else:
        section = parse_holmes_section({})
    updates = {
        name: value
        for name, value in {
            "engine": args.engine, "data_dir": args.data_dir, "version": args.version,
            "dir": args.holmes_dir, "seeds": args.seeds, "control_task": args.control,
            "layer": args.layer, "batch_size": args.batch_size, "max_length": args.max_length,
            "device": args.device,
        }.items()
        if value is not None
    }
    merged = section.model_dump() | updates
    section = parse_holmes_section(merged, Path.cwd(), "probe")
    return section, (args.out or out_default)


def _model_info(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.role is None:
        return None
    params = None
    if args.merge_parameters:
        try:
            params = json.loads(args.merge_parameters)
        except json.JSONDecodeError:
            raise ConfigError("--merge-parameters is not valid JSON") from None
        if not isinstance(params, dict):
            raise ConfigError("--merge-parameters must be a JSON object")
    return {"role": args.role, "reference": args.reference or args.model, "merge_method": args.merge_method,
            "merge_parameters": params, "run": args.run}


def default_data_dir() -> Path:
    try:
        from mergepipe import zoo

        return Path(zoo.probing_data_dir())
    except (ImportError, AttributeError):
        raise ConfigError("no --data-dir given and the demo zoo's probing sets are not available") from None


def main(args: argparse.Namespace) -> int:
    # Before torch loads: idle OpenMP threads sleep instead of spinning. Probing runs many small
    # ops; on busy shared cores spinning threads made encoding 10-20x slower (measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    section, out = _settings(args)
    info = _model_info(args)
    if section.engine == "upstream":
        return _run_upstream(args, section, out, info)
    data_dir = section.data_dir or default_data_dir()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from mergepipe.evaluate.probing import run_probing

    t0 = time.perf_counter()
    run = run_probing(
        args.model, data_dir, out, section.seeds, control_task=section.control_task, layer=section.layer,
        batch_size=section.batch_size, max_length=section.max_length, device=section.device,
        version=section.version, cache_dir=args.cache_dir, model_info=info,
        report=lambda line: print(line, flush=True),
    )
    done = sum(o.status in ("done", "reused") for o in run.outcomes)
    print(f"{run.model_id}: {done} dataset(s) probed, {len(run.failed)} failed, "
          f"{sum(o.status == 'skipped' for o in run.outcomes)} skipped in {time.perf_counter() - t0:.1f}s "
          f"-> {run.results_csv}")
    if run.failed:
        for o in run.failed:
            print(f"error: {o.message}", file=sys.stderr)
        raise StageFailed(f"{len(run.failed)} probing dataset(s) failed for {run.model_id}")
    return 0


def _run_upstream(args: argparse.Namespace, section: Any, out: Path, info: dict[str, Any] | None) -> int:
    from mergepipe.evaluate.holmes_upstream import run_upstream

    if section.dir is None:
        raise MergepipeError("--engine upstream needs --holmes-dir (the upstream Holmes checkout)")
    result = run_upstream(
        args.model, section.dir, out, seeds=section.seeds, version=section.version,
        control_task=section.control_task, python=args.holmes_python, data_dir=section.data_dir,
        model_info=info, report=lambda line: print(line, flush=True),
    )
    print(f"{result.model_id}: upstream Holmes results -> {result.results_csv}")
    return 0
