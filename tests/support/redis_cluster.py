"""A throwaway Redis Cluster: three masters on free loopback ports, no replicas, no persistence.

Each master is a :class:`~devtools.services.RedisServer` in cluster mode, so one can be
killed (SIGKILL) and started again on the same ports and ``nodes.conf``, and
then rejoins the cluster with the slots it had. With no replicas nothing fails
over: while a master is down its slots are unserved, which is the outage the
tests want.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import redis
from redis.crc import key_slot

from devtools.services import RedisServer, free_port

# Seconds a master may be unreachable before the others call it failed. Short,
# so a killed master is noticed (and forgiven when back: Redis waits twice
# this long before it clears a master's FAIL flag) within a test's patience;
# long enough that a loaded machine does not fail a healthy node.
NODE_TIMEOUT_MS = 2000
READY_TIMEOUT = 30.0


class RedisClusterNode(RedisServer):
    """One master: a throwaway redis-server in cluster mode, its bus on a free port of its own (not port + 10000)."""

    name = "redis-server (cluster node)"

    def __init__(self, binary: str, data_dir: Path) -> None:
        super().__init__(binary, data_dir)
        self.bus_port = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-config-file",
            str(self.data_dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
        ]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def cluster_ok(self) -> bool:
        try:
            with self.client() as client:
                return "cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO"))
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the cluster, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


class RedisClusterGroup:
    """Three masters (by default) made into one cluster with ``redis-cli --cluster create``."""

    def __init__(self, server_binary: str, cli_binary: str, data_dir: Path, masters: int = 3) -> None:
        self.cli = cli_binary
        self.data_dir = data_dir
        self.nodes = [RedisClusterNode(server_binary, data_dir / f"node-{i}") for i in range(masters)]

    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            created = subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(node.address for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_ok(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every master says ``cluster_state:ok`` (all slots served, nobody failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(node.cluster_ok() for node in self.nodes):
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {node.address}\n{node.logs()[-3000:]}" for node in self.nodes)
        raise TimeoutError(f"Redis Cluster not ok after {timeout}s:\n{logs}")

    def owner(self, key: str) -> RedisClusterNode:
        """The master that serves ``key``'s hash slot (a channel's, for sharded pub/sub)."""
        return self.owner_of_slot(key_slot(key.encode()))

    def owner_of_slot(self, slot: int, asking: RedisClusterNode | None = None) -> RedisClusterNode:
        """Who serves ``slot``, in the view of ``asking`` (by default the first live master)."""
        asking = asking or next(node for node in self.nodes if node.process is not None)
        with asking.client() as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        for first, last, master, *_ in ranges:
            if first <= slot <= last:
                port = int(master[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"slot {slot} is not served")

    @contextmanager
    def crash(self, node: RedisClusterNode) -> Iterator[None]:
        """``node`` killed with SIGKILL for the body, then started again and the cluster ok.

        It comes back even when the body raises, so later tests find the cluster whole.
        """
        node.kill()
        try:
            yield
        finally:
            node.start()
            self.wait_ok()

    def move_slot(self, slot: int, target: RedisClusterNode) -> None:
        """Hand ``slot`` (holding no keys) to ``target``, as resharding does, and tell every master."""
        source = self.owner_of_slot(slot)
        if source is target:
            return
        with target.client() as to, source.client() as since:
            target_id, source_id = to.execute_command("CLUSTER", "MYID"), since.execute_command("CLUSTER", "MYID")
            # IMPORTING first, so that target bumps its epoch when it takes the
            # slot and its claim wins over source's older one.
            to.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            since.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for node in [target, source, *(node for node in self.nodes if node not in (target, source))]:
            with node.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        deadline = time.monotonic() + READY_TIMEOUT
        while any(self.owner_of_slot(slot, asking=node) is not target for node in self.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {slot} not moved to {target.address}")
            time.sleep(0.05)

    @contextmanager
    def slot_moved(self, slot: int, target: RedisClusterNode) -> Iterator[None]:
        """``slot`` served by ``target`` for the body, then by its owner again (even if the body raises)."""
        source = self.owner_of_slot(slot)
        self.move_slot(slot, target)
        try:
            yield
        finally:
            self.move_slot(slot, source)
            self.wait_ok()

    def logs(self) -> str:
        return "\n".join(f"--- {node.address}\n{node.logs()}" for node in self.nodes)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
