"""A Redis master, its replica and a sentinel that watches them: real Valkey servers on
ports of this test process, for the tests of a gateway that finds Redis through Sentinel
and follows it through a failover."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.embedded.process import LOOPBACK
from gateway.embedded.valkey import ValkeyServer
from tests.ports import own_port
from tests.waiting import eventually

SERVICE = "catalogue"
# A master that does not answer for this long is down, for the one sentinel (its quorum).
DOWN_AFTER_MILLISECONDS = 1_000


class SentinelGroup:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.binary = ValkeyServer(directory).binary
        self.master_port = own_port()
        self.replica_port = own_port()
        self.sentinel_port = own_port()
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, database: int = 0) -> str:
        return f"redis+sentinel://{LOOPBACK}:{self.sentinel_port}/{SERVICE}/{database}"

    def client(self, port: int, database: int = 0) -> Redis:
        return Redis(host=LOOPBACK, port=port, db=database, decode_responses=True)

    async def start(self) -> None:
        """Until the replica copies the master and the sentinel knows it: only then can the
        sentinel promote it. The sentinel starts once the replica is in step: it reads a
        replica's state when it first meets it, then only every ten seconds."""
        self._server(self.master_port)
        self._server(self.replica_port, "--replicaof", LOOPBACK, str(self.master_port))
        replica = self.client(self.replica_port)
        try:
            await eventually(lambda: self._in_step(replica))
        finally:
            await replica.aclose()
        # The sentinel rewrites its file with what it learns (replicas, the new master).
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            f"bind {LOOPBACK}\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {SERVICE} {LOOPBACK} {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MILLISECONDS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        self._spawn(self.sentinel_port, [str(self.binary), str(config), "--sentinel"])
        sentinel = self.client(self.sentinel_port)
        try:
            await eventually(lambda: self._replica_known(sentinel))
        finally:
            await sentinel.aclose()

    async def master(self) -> int:
        """The port of the master the sentinel names now."""
        sentinel = self.client(self.sentinel_port)
        try:
            # redis-py's annotations of the sentinel commands are not what they return.
            address: Any = await sentinel.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            await sentinel.aclose()
        host, port = address
        assert host == LOOPBACK
        return int(port)

    async def promoted(self) -> None:
        """Until the sentinel names the replica as master and sees it well: just after a
        failover it may not have reached the new master yet, and would name no master."""
        sentinel = self.client(self.sentinel_port)

        async def replica_is_master() -> bool:
            masters: Any = await sentinel.sentinel_masters()
            state = masters[SERVICE]
            return bool(state["port"] == self.replica_port and state["flags"] == "master")

        try:
            await eventually(replica_is_master)
        finally:
            await sentinel.aclose()

    async def kill_master(self) -> None:
        """Kill the master once the replica has copied what it took: what it had not is
        lost with it, which no test means."""
        master = self.client(self.master_port)
        try:
            assert await master.wait(1, 5_000) == 1
        finally:
            await master.aclose()
        self.kill(self.master_port)

    def kill(self, port: int) -> None:
        process = self._processes.pop(port)
        process.kill()
        process.wait()

    def stop(self) -> None:
        for port in list(self._processes):
            self.kill(port)

    def _server(self, port: int, *arguments: str) -> None:
        store = self.directory / str(port)
        store.mkdir(parents=True)
        command = [
            str(self.binary),
            "--bind", LOOPBACK,
            "--port", str(port),
            "--dir", str(store),
            "--save", "",
            "--appendonly", "no",
            # A replica's first copy starts at once, not after waiting for other replicas.
            "--repl-diskless-sync-delay", "0",
            *arguments,
        ]  # fmt: skip
        self._spawn(port, command)

    def _spawn(self, port: int, command: list[str]) -> None:
        self._processes[port] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def _in_step(self, replica: Redis) -> bool:
        try:
            replication: Any = await replica.info("replication")
        except RedisConnectionError:
            return False
        return bool(replication.get("master_link_status") == "up")

    async def _replica_known(self, sentinel: Redis) -> bool:
        try:
            replicas: list[dict[str, Any]] = await sentinel.sentinel_slaves(SERVICE)
        except RedisConnectionError:
            return False
        return any(
            replica["port"] == self.replica_port
            and replica.get("master-link-status") == "ok"
            and not replica["is_disconnected"]
            for replica in replicas
        )


@asynccontextmanager
async def sentinel_group(directory: Path) -> AsyncIterator[SentinelGroup]:
    group = SentinelGroup(directory)
    try:
        await group.start()
        yield group
    finally:
        group.stop()
