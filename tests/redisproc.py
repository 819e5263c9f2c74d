"""A real ``redis-server`` for tests: on a free loopback port, no persistence, restartable.

Debian's ``redis-server`` (CI installs it). Started in the foreground as a child, so a
test can stop it (SIGTERM), pause it (SIGSTOP/SIGCONT) or start it again on the same
port; ready once it answers PING.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port, P + 10000, is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def need_redis() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return path


def ping(port: int, timeout: float = 1.0, tls: ssl.SSLContext | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            s = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command over a fresh connection; the raw reply (enough for tests)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(parts))
        return s.recv(65536)


class RedisServer:
    """One ``redis-server`` child process."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        port: int | None = None,
        tls: tuple[Path, Path, ssl.SSLContext] | None = None,
        client_certs: bool = False,
    ) -> None:
        """``tls``: (certificate, key, a client context trusting it): TLS only, on
        :attr:`port` (``rediss://``); ``client_certs``: clients must show a certificate
        (give ``--tls-ca-cert-file`` in ``args``)."""
        self.binary = need_redis()
        self.port = port or free_port()
        self.workdir = workdir
        self.tls = tls
        if tls is not None:
            cert, key, _ = tls
            args = (
                *args,
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-auth-clients",
                "yes" if client_certs else "no",
            )
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"redis-{self.port}.log"
        self.start()

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                "0" if self.tls is not None else str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.log),
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port, 0.2, self.tls[2] if self.tls is not None else None):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.02)  # polling a child's port: there is nothing to read yet

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


class RedisCluster:
    """A Redis Cluster of ``masters`` masters (no replicas), made with ``redis-cli
    --cluster create`` (about a second), for the cluster-mode tests."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(workdir / f"node{i}" / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
                port=free_cluster_port(),
            )
            for i in range(masters)
        ]
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.skip("redis-cli is not installed (apt-get install redis-tools)")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not all(
            b"cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in self.nodes
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ready")
            time.sleep(0.05)  # the nodes gossip the new slots to each other

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def node_id(self, port: int) -> str:
        return command(port, "CLUSTER", "MYID").split(b"\r\n")[1].decode()

    def owner(self, slot: int) -> RedisServer:
        """The master that serves ``slot`` (as the first node's CLUSTER SLOTS says)."""
        import hiredis

        reader = hiredis.Reader()
        reader.feed(command(self.nodes[0].port, "CLUSTER", "SLOTS"))
        for first, last, master, *_ in reader.gets():
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no master serves slot {slot}")

    def move(self, slot: int, keys: list[str], to: RedisServer) -> None:
        """Migrate ``slot`` (holding ``keys``) to master ``to``, as ``redis-cli --cluster
        reshard`` does, step by step."""
        self.start_move(slot, keys, to)
        self.finish_move(slot, to)

    def start_move(self, slot: int, keys: list[str], to: RedisServer) -> None:
        """The first half of a migration: ``keys`` are on ``to``, the slot is not yet
        (its owner answers ``ASK`` for a key it no longer has)."""
        source = self.owner(slot)
        src_id, dst_id = self.node_id(source.port), self.node_id(to.port)
        command(to.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
        command(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
        for key in keys:
            command(source.port, "MIGRATE", "127.0.0.1", str(to.port), key, "0", "5000")

    def finish_move(self, slot: int, to: RedisServer) -> None:
        dst_id = self.node_id(to.port)
        for node in self.nodes:
            command(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
