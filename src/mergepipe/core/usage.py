"""Measure a stage's wall time and peak memory (CPU RSS incl. child processes, GPU when present).

Used for the run's budget report ("merge + evaluate in under 1 hour on one 48 GB GPU"):
evaluation jobs run in child processes, so their memory is sampled too. GPU memory is read
through NVML (device-wide, so child processes count) when ``pynvml`` is importable.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


def _gpu_handles() -> list[Any]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no NVML, no driver or no GPU: GPU memory is simply not reported
        return []


def _gpu_used(handles: list[Any]) -> int:
    import pynvml  # type: ignore[import-not-found]

    return sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles)


@dataclass
class StageUsage:
    name: str
    wall_seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_gpu_bytes: int | None = None
    status: str = "ok"  # ok | failed | skipped
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "wall_seconds": round(self.wall_seconds, 2),
                "peak_rss_bytes": self.peak_rss_bytes, "peak_gpu_bytes": self.peak_gpu_bytes,
                "status": self.status, "detail": self.detail, **self.extra}


class ResourceMonitor:
    """Context manager sampling RSS (this process + descendants) and GPU memory in a thread."""

    def __init__(self, usage: StageUsage, interval: float = 0.1) -> None:
        import psutil

        self.usage = usage
        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._gpus = _gpu_handles()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = 0.0

    def _rss(self) -> int:
        import psutil

        total = 0
        for proc in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _sample(self) -> None:
        self.usage.peak_rss_bytes = max(self.usage.peak_rss_bytes, self._rss())
        if self._gpus:
            used = _gpu_used(self._gpus)
            self.usage.peak_gpu_bytes = max(self.usage.peak_gpu_bytes or 0, used)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> StageUsage:
        self._start = time.perf_counter()
        self._sample()
        self._thread.start()
        return self.usage

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.usage.wall_seconds = time.perf_counter() - self._start


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)
