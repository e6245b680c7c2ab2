"""Options shared by every config-reading subcommand: ``--config`` and its overrides.

Precedence: command-line flags > the original pipeline's environment variables (MODEL_1,
MODEL_2, BASE_MODEL, METHODS, DTYPE, SEED, RUN_NAME) > the config file > defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mergepipe.config import DEFAULT_CONFIG, PipelineConfig, apply_overrides, build_config, env_overrides
from mergepipe.config import load_config as _load
from mergepipe.core.paths import project_root

# Overrides that do not describe a pipeline on their own (the demo still runs with them set).
SETTINGS_ONLY = {"evaluate.datasets_dir"}


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, metavar="FILE",
        help="pipeline config (pipeline.yaml) or a raw mergekit YAML (default: %(default)s)",
    )


def add_model_overrides(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overrides (take precedence over the config file)")
    for i in range(1, 4):
        group.add_argument(f"--model-{i}", metavar="MODEL", help=f"expert model {i} (path, Hub id or zoo://)")
    group.add_argument("--models", nargs="+", metavar="MODEL", help="all expert models, in order")
    group.add_argument("--base-model", metavar="MODEL", help="the base model the experts were tuned from")
    group.add_argument(
        "--methods", metavar="'M1 M2 ...'",
        help="merge methods, space separated, each with its default parameters (see 'mergepipe methods')",
    )
    group.add_argument("--dtype", help="dtype of the merged weights (float32, float16, bfloat16)")
    group.add_argument("--seed", type=int, help="seed for randomized methods and evaluation")
    group.add_argument("--run", help="run name (outputs go under <dir>/<run>/)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out = env_overrides()
    numbered = [getattr(args, f"model_{i}", None) for i in range(1, 4)]
    if getattr(args, "models", None):
        out["models"] = list(args.models)
    elif any(numbered):
        out["models"] = [m for m in numbered if m]
    if getattr(args, "base_model", None):
        out["base_model"] = args.base_model
    if getattr(args, "methods", None):
        out["merge.methods"] = args.methods.replace(",", " ").split()
    for key in ("dtype", "seed", "run"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    return out


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> PipelineConfig:
    """Load ``--config`` with overrides (``extra``: more dotted keys, None values ignored); a missing
    default file is fine when flags say enough."""
    path = Path(args.config)
    overrides = {**overrides_from_args(args), **{k: v for k, v in (extra or {}).items() if v is not None}}
    if not path.exists() and args.config == DEFAULT_CONFIG:
        if set(overrides) - SETTINGS_ONLY:
            return build_config(apply_overrides({}, overrides), "flags").resolve_paths(Path.cwd())
        # Run from anywhere: the project's own pipeline.yaml (the demo), with its outputs in
        # the project, is the default.
        if (project_root() / DEFAULT_CONFIG).is_file():
            args.config = str(project_root() / DEFAULT_CONFIG)
            return _load(project_root() / DEFAULT_CONFIG, overrides, root=project_root())
    return _load(path, overrides)


def add_cluster_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--executor`` and ``--ray-address`` (docs/distributed.md)."""
    group = parser.add_argument_group("cluster")
    group.add_argument("--executor", choices=["local", "ray"], default=None,
                       help=f"where {what} run: local (this machine) or ray (a Ray cluster; default: the config's)")
    group.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                       help="Ray cluster address (overrides cluster.address; default: RAY_ADDRESS, else a local "
                       "Ray instance)")
