"""A Redis Cluster of the test's own: six `redis-server --cluster-enabled yes` on free loopback ports.

    with local_cluster(tmp_path) as cluster:         # 3 primaries, 3 replicas; `cluster_state:ok` on all
        cluster.url                                   # redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...
        cluster.kill(port)                            # SIGKILL one node (its replica takes over)
        cluster.move_slot(slot, to_port)              # migrate a slot, keys included

Nothing is persisted; each node has its own directory, and every process is killed on exit, even when
starting failed half-way. A node is declared failed after `NODE_TIMEOUT_MS`, so a failover takes about a
second or two.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from ..hardening.faults import PrivateRedis, needs_redis
from ..processes import PORT_ATTEMPTS, free_port

NODES = 6
NODE_TIMEOUT_MS = 1000
START_TIMEOUT = 30.0
BUS_PORT_OFFSET = 10000


@contextlib.contextmanager
def local_cluster(directory: Path) -> Iterator[LocalCluster]:
    """A started `LocalCluster`; the test is skipped without `redis-server` and `redis-cli`, unless
    `REQUIRE_SERVICES=1`, where it fails."""
    with needs_redis():
        cluster = LocalCluster(directory)
    with cluster:
        yield cluster


class LocalCluster:
    """Three primaries with one replica each, on 127.0.0.1, in `directory`."""

    def __init__(self, directory: Path) -> None:
        cli = shutil.which("redis-cli")
        if shutil.which("redis-server") is None or cli is None:
            raise FileNotFoundError("redis-server and redis-cli are needed for a local cluster")
        self.cli = cli
        self.directory = directory
        self.ports: list[int] = []
        self.nodes: dict[int, PrivateRedis] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        attempts_left = PORT_ATTEMPTS
        while True:
            attempts_left -= 1
            self._launch_nodes()
            try:
                for node in self.nodes.values():
                    node.wait_answers()
            except RuntimeError:
                if attempts_left and any(node.port_taken() for node in self.nodes.values()):
                    self.stop()
                    continue
                raise
            break
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        self.wait_ok()

    def _launch_nodes(self) -> None:
        """Launch every node on new ports, each with its cluster bus port (port + 10000) free too."""
        self.ports = []
        while len(self.ports) < NODES:
            port = free_port(offsets=(0, BUS_PORT_OFFSET))
            if port not in self.ports:
                self.ports.append(port)
        for port in self.ports:
            self.nodes[port] = self._node(port)
            self.nodes[port].launch()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
        self.nodes.clear()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def cluster_info(self, port: int) -> dict[str, str]:
        with self.client(port) as node:
            raw: bytes = node.execute_command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)

    def running_ports(self) -> list[int]:
        return [port for port, node in self.nodes.items() if node.running]

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Return once every running node says `cluster_state:ok` and agrees on who owns each slot, and
        every replica is in sync with its primary (so that it can take over)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = {self.cluster_info(port)["cluster_state"] for port in self.running_ports()}
                owners = {self._slot_owners(port) for port in self.running_ports()}
                if states == {"ok"} and len(owners) == 1 and self._replicas_in_sync():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the local Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def primaries(self) -> list[int]:
        """The ports of the running primaries."""
        found = []
        for port in self.running_ports():
            with self.client(port) as node:
                if node.info("replication")["role"] == "master":
                    found.append(port)
        return found

    def owner(self, slot: int) -> int:
        """The port of the primary serving `slot`."""
        with self.client(self.running_ports()[0]) as node:
            for start, end, primary, *_ in node.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        raise LookupError(f"slot {slot} is not served")

    def keyslot(self, key: str) -> int:
        with self.client(self.running_ports()[0]) as node:
            slot: int = node.execute_command("CLUSTER", "KEYSLOT", key)
            return slot

    def node_id(self, port: int) -> str:
        with self.client(port) as node:
            node_id: bytes = node.execute_command("CLUSTER", "MYID")
            return node_id.decode()

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port`, as in a crash, and return once no slot is served by it any more."""
        self.nodes[port].kill()
        deadline = time.monotonic() + START_TIMEOUT
        while any(owner == port for *_, owner in self._slot_owners(self.running_ports()[0])):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica took over from the node on port {port}")
            time.sleep(0.05)
        self.wait_ok()

    def move_slot(self, slot: int, to_port: int) -> None:
        """Migrate `slot` and its keys to the primary on `to_port`, as `redis-cli --cluster reshard` does."""
        from_port = self.owner(slot)
        source, target = self.node_id(from_port), self.node_id(to_port)
        with self.client(to_port) as destination, self.client(from_port) as origin:
            destination.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source)
            origin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target)
            while keys := origin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                origin.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
            others = [port for port in self.primaries() if port not in (to_port, from_port)]
            for port in (to_port, from_port, *others):
                with self.client(port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)
        self.wait_ok()

    def _replicas_in_sync(self) -> bool:
        for port in self.running_ports():
            with self.client(port) as node:
                replication = node.info("replication")
            if replication["role"] != "slave" or int(replication["master_port"]) not in self.running_ports():
                continue
            if replication.get("master_link_status") != "up":
                return False
        return True

    def _slot_owners(self, port: int) -> tuple[tuple[int, int, int], ...]:
        with self.client(port) as node:
            slots = node.execute_command("CLUSTER", "SLOTS")
        return tuple(sorted((int(start), int(end), int(primary[1])) for start, end, primary, *_ in slots))

    def _node(self, port: int) -> PrivateRedis:
        node_dir = self.directory / f"node-{port}"
        options = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(node_dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
        ]
        return PrivateRedis(node_dir, port, options)
