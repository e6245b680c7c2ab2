"""A Ray cluster as the pipeline sees it: connecting, its resources, and the shared-storage check.

Merges and evaluation jobs run as Ray tasks but read and write the same output folders as a
local run, so every node must see those folders at the same path (NFS, Lustre, a cloud file
system mounted everywhere). :func:`check_shared_storage` proves it before any job starts: the
driver writes a token file into each folder, one task pinned to every node reads it back and
answers with a file of its own, and the driver reads the answers. A node that sees another
folder (a local disk mounted at the same path, a missing mount) fails the run in one line.

Ray is imported only here and only when a ``ray`` executor is configured.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergepipe.config import ClusterSection
from mergepipe.errors import MergepipeError

PROBE_PREFIX = ".mergepipe-shared-"
# The driver's settings that jobs on other nodes must see (caches, offline mode), passed through
# Ray's runtime environment. Anything that looks like a secret is never forwarded.
FORWARDED_PREFIXES = ("MERGEPIPE_", "HF_", "TRANSFORMERS_", "TQDM_", "TOKENIZERS_PARALLELISM")
_SECRET = ("TOKEN", "SECRET", "PASSWORD", "KEY")


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = dict(os.environ if environ is None else environ)
    return {k: v for k, v in environ.items()
            if k.startswith(FORWARDED_PREFIXES) and not any(s in k.upper() for s in _SECRET)}


class ClusterError(MergepipeError):
    """The Ray cluster cannot be reached, or it cannot run the pipeline's jobs."""


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    cpus: float
    gpus: float
    memory: float

    @property
    def label(self) -> str:
        """How progress lines and summaries name the node: its address and a short id."""
        return f"{self.address}:{self.node_id[:8]}"


@dataclass(frozen=True)
class Resources:
    address: str
    nodes: tuple[Node, ...]

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    def describe(self) -> str:
        per_node = ", ".join(f"{n.label} {n.cpus:g} CPU {n.gpus:g} GPU" for n in self.nodes)
        return (f"Ray cluster {self.address}: {len(self.nodes)} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs "
                f"({per_node})")


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(section: ClusterSection) -> Resources:
    """Connect this process to the cluster (once); a local Ray instance when no address is known.

    A loopback address (``127.0.0.1:6379``), or no address at all, keeps Ray on loopback: Ray
    otherwise replaces a loopback address by this machine's network address. This is Ray's own
    switch for single-machine use (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), set before Ray is
    first imported; it only changes how this process resolves addresses.
    """
    address = section.address or os.environ.get("RAY_ADDRESS") or None
    if address is None or _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                                  "log_to_driver": False, "logging_level": "warning",
                                  "runtime_env": {"env_vars": forwarded_env()}}
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterError(f"cluster.address: cannot connect to the Ray cluster at "
                               f"{address or 'a new local instance'}: {first[:200]}") from None
    return resources(address or "local")


def resources(address: str = "") -> Resources:
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources") or {}
        nodes.append(Node(node_id=node["NodeID"], address=str(node.get("NodeManagerAddress", "?")),
                          cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)),
                          memory=float(res.get("memory", 0))))
    if not nodes:
        raise ClusterError(f"the Ray cluster {address} has no live node")
    return Resources(address, tuple(sorted(nodes, key=lambda n: n.node_id)))


def _answer_probe(folders: list[str], token: str) -> dict[str, Any]:
    """On one node: which folders show the driver's token, and leave an answer in each."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    seen = {}
    for folder in folders:
        probe = Path(folder) / f"{PROBE_PREFIX}{token}"
        try:
            ok = probe.read_text(encoding="utf-8") == token
        except OSError:
            ok = False
        seen[folder] = ok
        if ok:
            try:
                (Path(folder) / f"{PROBE_PREFIX}{token}.{node_id}").write_text(node_id, encoding="utf-8")
            except OSError:
                seen[folder] = False
    return {"node_id": node_id, "seen": seen}


def check_shared_storage(folders: list[Path], nodes: tuple[Node, ...]) -> None:
    """Fail in one line, before any job, when a node does not see ``folders`` as this machine does."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    folders = [Path(f).resolve() for f in dict.fromkeys(folders)]
    written: list[Path] = []
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f"{PROBE_PREFIX}{token}"
            probe.write_text(token, encoding="utf-8")
            written.append(probe)
        task = ray.remote(num_cpus=0, max_retries=0)(_answer_probe)
        refs = {node.node_id: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node.node_id, soft=False)).remote([str(f) for f in folders], token) for node in nodes}
        by_id = {n.node_id: n for n in nodes}
        for node_id, ref in refs.items():
            try:
                answer = ray.get(ref, timeout=120)
            except Exception as exc:  # a node that cannot run the probe cannot run jobs either
                raise ClusterError(f"node {by_id[node_id].label} could not run the shared-storage check: "
                                   f"{type(exc).__name__}") from None
            for folder in folders:
                reply = folder / f"{PROBE_PREFIX}{token}.{node_id}"
                if not answer["seen"].get(str(folder)) or not reply.is_file():
                    raise ClusterError(
                        f"{folder} is not shared with node {by_id[node_id].label}: it sees another folder at "
                        "that path; put the outputs on storage every node mounts at the same path "
                        "(see docs/distributed.md) or set cluster.check_shared_storage: false")
                written.append(reply)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
        for folder in folders:
            for leftover in folder.glob(f"{PROBE_PREFIX}{token}*"):
                leftover.unlink(missing_ok=True)
