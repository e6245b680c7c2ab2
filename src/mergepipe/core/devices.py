"""Which device work runs on: the one chooser, and the GPUs a job may be given.

Merges, lm-eval jobs and probing all ask :func:`choose_device`; the scheduler asks
:func:`visible_gpus` for its slots. GPU ids are discovered, never assumed.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from mergepipe.errors import MergepipeError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_device(setting: str, what: str = "device") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error
    naming ``what`` (the field or flag). Explicit devices (``cuda:1``, ``mps``) pass through."""
    if setting == "cpu":
        return "cpu"
    if setting not in ("auto", "cuda"):
        return setting
    if cuda_available():
        return "cuda"
    if setting == "cuda":
        raise MergepipeError(f"{what} is 'cuda' but no CUDA GPU is visible")
    return "cpu"


def visible_gpus() -> list[str]:
    """GPU ids a job may be given: ``CUDA_VISIBLE_DEVICES`` if set, else what nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def check_gpu_indices(indices: list[int | str]) -> list[str]:
    """Raise a one-line error for a GPU index that does not exist; return them as strings."""
    visible = visible_gpus()
    for index in indices:
        if str(index) not in visible:
            seen = f"visible GPUs: {', '.join(visible)}" if visible else "no GPU is visible"
            raise MergepipeError(f"GPU {index} does not exist ({seen})")
    return [str(i) for i in indices]
