"""A real local Ray cluster for tests: several nodes on this machine, all on 127.0.0.1.

Nodes are started with Ray's own ``ray start`` (in a wrapper that keeps the loopback address:
Ray otherwise swaps 127.0.0.1 for this machine's network address), each node with fake GPUs
(``--num-gpus``; Ray hands out GPU ids without a real GPU). A node may run in a private mount
namespace where a folder is hidden by an empty tmpfs: a worker whose view of the outputs differs.
Every process started here is stopped by :meth:`LocalCluster.stop`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Runs `ray ...` keeping --node-ip-address 127.0.0.1 and a 127.0.0.1 --address as given.
_RAY_CLI = (
    "import sys\n"
    "import ray._private.services as services\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv = ['ray', *sys.argv[1:]]\n"
    "main()\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env(single_machine: bool = True) -> dict[str, str]:
    """Ray's environment: no usage reports; a driver keeps loopback addresses (``single_machine``)."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0" if single_machine else "1"}


@dataclass
class LocalCluster:
    temp_dir: Path
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str], log: Path, hide: Path | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-c", _RAY_CLI, "start", "--node-ip-address", "127.0.0.1", "--block", *args]
        if hide is not None:
            # A private mount namespace in which `hide` is an empty tmpfs: that node sees another folder.
            script = 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"'
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(hide), *cmd]
        # Nodes join a multi-node cluster; the wrapper keeps their addresses on loopback.
        proc = subprocess.Popen(cmd, env=ray_env(single_machine=False), stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_head(self, num_gpus: int = 2, num_cpus: int = 2) -> None:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._start(["--head", "--port", str(self.port), "--num-cpus", str(num_cpus), "--num-gpus",
                     str(num_gpus), "--include-dashboard", "false", "--disable-usage-stats",
                     "--temp-dir", str(self.temp_dir)], self.temp_dir / "head.log")

    def add_node(self, num_gpus: int = 2, num_cpus: int = 2, hide: Path | None = None,
                 name: str = "node") -> subprocess.Popen:
        return self._start(["--address", self.address, "--num-cpus", str(num_cpus), "--num-gpus",
                            str(num_gpus)], self.temp_dir / f"{name}.log", hide)

    def wait_for_nodes(self, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` nodes are alive (asked in a short-lived process, not this one)."""
        probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, logging_level='error'); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-c", probe, self.address], env=ray_env(), capture_output=True,
                                 text=True, timeout=60)
            if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= count:
                return
            time.sleep(2)
        logs = "\n".join(p.read_text()[-2000:] for p in self.temp_dir.glob("*.log"))
        raise RuntimeError(f"the test Ray cluster did not come up with {count} node(s):\n{logs}")

    def stop_node(self, proc: subprocess.Popen) -> None:
        """Stop one node (its `ray start --block` stops the node's processes on SIGTERM)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self.stop_node(proc)
        self.procs.clear()
