"""A real Ray cluster of separate ``ray start --block`` processes on this machine, for the cluster tests.

Each node is one ``ray start ... --block`` subprocess in its own process group, with its own ports, a
small object store and one CPU; it is stopped by its own process id (never ``ray stop``, which would stop
every Ray on the machine, the test session's embedded one included). :meth:`Cluster.processes` lists every
process a node started (its process tree), so a test can kill a node the hard way and the teardown can
prove nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TOKEN = "0123456789abcdef0123456789abcdef"  # the test cluster's authentication token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), depth first."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Node:
    def __init__(self, proc: subprocess.Popen, log: Path, name: str) -> None:
        self.proc, self.log, self.name = proc, log, name
        self.seen: set[int] = set()  # every process of this node ever listed

    def processes(self) -> list[int]:
        pids = [self.proc.pid, *children(self.proc.pid)]
        self.seen.update(pids)
        return [p for p in pids if alive(p)]

    def titles(self) -> list[str]:
        """Command lines of the node's processes (a Ray worker's is ``ray::Class.method`` while it runs one)."""
        out = []
        for p in self.processes():
            with contextlib.suppress(OSError):
                out.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        return out

    def kill(self) -> list[int]:
        """SIGKILL every process of the node (a machine that dies); returns their ids."""
        pids = self.processes()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return pids

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the ``ray start --block`` process (it stops its node), then SIGKILL what is left."""
        self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in self.seen:
            if alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)

    def left_behind(self) -> list[str]:
        """``pid cmdline`` of this node's processes still running."""
        out = []
        for p in sorted(self.seen):
            if alive(p):
                try:
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
                except OSError:
                    cmd = "?"
                out.append(f"{p} {cmd}")
        return out


class Cluster:
    """A head node and worker nodes, token-authenticated unless ``token=None``."""

    def __init__(self, token: str | None = TOKEN, health_check_ms: int = 500) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mah-ray-", dir="/tmp"))  # short: unix socket paths
        self.home = self.tmp / "home"  # an empty HOME: never read or write the user's ~/.ray/auth_token
        self.home.mkdir()
        self.token = token
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[Node] = []
        self.env = dict(os.environ, HOME=str(self.home), RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
            self.env.pop(key, None)
        # the head notices a dead node within ~2 s instead of the default ~30 s
        self.env["RAY_health_check_period_ms"] = str(health_check_ms)
        self.env["RAY_health_check_timeout_ms"] = str(health_check_ms)
        self.env["RAY_health_check_failure_threshold"] = "3"
        self.env["RAY_health_check_initial_delay_ms"] = "0"
        self.worker_ports = random.randrange(20000, 30000, 1000)  # below the ephemeral ports free_port gets

    def node_env(self) -> dict[str, str]:
        env = dict(self.env)
        if self.token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        else:
            env["RAY_AUTH_MODE"] = "disabled"
        return env

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment of a driver: the token where Ray keeps it (RAY_AUTH_TOKEN), no RAY_AUTH_MODE."""
        env = dict(self.env)
        if self.token:
            env["RAY_AUTH_TOKEN"] = self.token
        env.update(extra)
        return env

    def _start(self, name: str, args: list[str], resources: dict[str, float]) -> Node:
        base = self.worker_ports + 100 * len(self.nodes)
        cmd = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--num-cpus=1",
            "--num-gpus=0",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={200 * 1024 * 1024}",
            f"--min-worker-port={base}",
            f"--max-worker-port={base + 99}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
            *args,
        ]
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=self.node_env(), start_new_session=True
            )
        node = Node(proc, log, name)
        self.nodes.append(node)
        return node

    def start_head(self, resources: dict[str, float]) -> Node:
        return self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.tmp / 'ray'}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
            ],
            resources,
        )

    def start_worker(self, resources: dict[str, float]) -> Node:
        return self._start(f"worker{len(self.nodes)}", [f"--address={self.address}"], resources)

    def alive_nodes(self) -> list[dict]:
        """The cluster's alive nodes, ``{"NodeID", "Resources", "head"}``, asked from the GCS over gRPC."""
        import grpc
        from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

        metadata = [("authorization", f"Bearer {self.token}")] if self.token else []
        with grpc.insecure_channel(self.address) as channel:
            stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
            reply = stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=5, metadata=metadata)
        return [
            {"NodeID": n.node_id.hex(), "Resources": dict(n.resources_total), "head": n.is_head_node}
            for n in reply.node_info_list
            if n.state == gcs_pb2.GcsNodeInfo.ALIVE
        ]

    def wait_nodes(self, n: int, timeout: float = 120.0) -> list[dict]:
        """Block until ``n`` nodes are alive; returns them."""
        import grpc

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"ray node {node.name} exited: {node.log.read_text()[-2000:]}")
            try:
                nodes = self.alive_nodes()
            except grpc.RpcError as e:
                last = str(e)
            else:
                if len(nodes) >= n:
                    return nodes
                last = f"{len(nodes)} alive"
            time.sleep(0.3)
        raise RuntimeError(f"the test cluster did not reach {n} nodes in {timeout} s: {last}")

    def stop(self) -> list[str]:
        """Stop every node (workers first); returns what was left behind (should be nothing)."""
        for node in reversed(self.nodes):
            node.stop()
        left = [line for node in self.nodes for line in node.left_behind()]
        shutil.rmtree(self.tmp, ignore_errors=True)
        return left
