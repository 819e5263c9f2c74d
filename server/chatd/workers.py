"""``--workers N``: N reactor processes on the same ports, joined through Redis.

One reactor is one core. To use every core of one machine, ``chatd --redis URL
--workers N`` runs N reactor processes that are N nodes of the cluster behind that Redis
(:mod:`chatd.cluster`), each with its own node id, listening on the **same ports** with
``SO_REUSEPORT``: the kernel spreads new connections over them, and Redis makes them one
chat.

How the ports are shared without losing a connection:

1. the supervisor (this process) *reserves* each port: a socket with ``SO_REUSEPORT``,
   bound but never listening, so a port 0 becomes a real port and stays ours, and no
   connection can ever queue on a socket nobody accepts from;
2. it forks the workers; each builds its own service and binds its own listening sockets
   to those ports (``SO_REUSEPORT``), then says so through a pipe;
3. only when every worker listens does the supervisor print the ``listening on`` lines
   (PROTOCOL.md's), so whoever reads them can connect at once, and tell systemd
   ``READY=1`` (:mod:`chatd.net.sdnotify`; the supervisor is the unit's main process,
   the only one whose notifications count, so the workers get no ``$NOTIFY_SOCKET``).

The supervisor serves nothing. It waits for signals: SIGHUP is passed to every worker
(each reloads its TLS certificate); SIGTERM or SIGINT is passed to every worker (each
says goodbye to its clients, and its members quit on the other nodes), and it exits when
they have; a worker that dies unexpectedly is started again after a second (a new node:
its members were shown quitting by the others, as for any dead node).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from chatd.config import Config, ListenerSpec
from chatd.net import sdnotify, signals

log = logging.getLogger("chatd.workers")

#: Seconds a worker may take to start listening.
START_SECONDS = 30.0
#: Seconds the workers get to stop after SIGTERM before they are killed.
STOP_SECONDS = 15.0
#: Seconds before a worker that died is started again.
RESTART_SECONDS = 1.0

_WAIT_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP}

#: ``serve(config, ready)``: build a service from ``config``, bind with SO_REUSEPORT,
#: call ``ready()`` once listening, then serve until stopped (the reactor's).
ServeOne = Callable[[Config, Callable[[], None]], None]


def reserve(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def with_ports(config: Config, ports: list[int]) -> Config:
    """``config`` with its listeners' ports (in :attr:`Config.all_listeners` order) set."""
    specs = config.all_listeners
    plain = [p for s, p in zip(specs, ports, strict=True) if not s.tls and s.dialect != "http"]
    http = next(
        (p for s, p in zip(specs, ports, strict=True) if s.dialect == "http" and not s.tls), None
    )
    tls = {s.dialect: p for s, p in zip(specs, ports, strict=True) if s.tls}
    extra = tuple(
        dataclasses.replace(s, port=p) for s, p in zip(config.listeners, plain[1:], strict=True)
    )
    return dataclasses.replace(
        config,
        port=plain[0],
        listeners=extra,
        tls_port=tls.get("line", config.tls_port),
        irc_tls_port=tls.get("irc", config.irc_tls_port),
        http_port=http if http is not None else config.http_port,
        https_port=tls.get("http", config.https_port),
    )


def announcement(spec: ListenerSpec, engine: str) -> str:
    shown = f"[{spec.host}]" if ":" in spec.host else spec.host
    tls = " tls" if spec.tls else ""
    return f"chatd {engine} {spec.dialect}{tls}: listening on {shown}:{spec.port}"


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, config: Config, count: int, serve_one: ServeOne) -> None:
        self.config = config
        self.count = count
        self.serve_one = serve_one
        self.children: dict[int, int] = {}  # pid -> worker number
        self.reserved: list[socket.socket] = []

    def run(self) -> int:
        """Reserve the ports, start the workers, announce, supervise; the exit status."""
        specs = self.config.all_listeners
        try:
            for spec in specs:
                self.reserved.append(reserve(spec.host, spec.port))
        except OSError as exc:
            print(f"chatd: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 1
        self.config = with_ports(self.config, [s.getsockname()[1] for s in self.reserved])
        # SIGINT/SIGTERM are held (cli); hold SIGCHLD too, and wait for all three below.
        signal.pthread_sigmask(signal.SIG_BLOCK, _WAIT_SIGNALS)
        for number in range(self.count):
            if not self._start(number, announce=False):
                self._stop_all()
                return 1
        for spec in self.config.all_listeners:
            print(announcement(spec, "reactor"), flush=True)
        sdnotify.ready(f"{self.count} workers listening")
        return self._supervise()

    def _start(self, number: int, *, announce: bool) -> bool:
        """Fork worker ``number``; True once it listens."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_end)
            status = 1
            try:
                for sock in self.reserved:
                    sock.close()
                # Only the supervisor speaks for the unit (READY=1, STOPPING=1).
                os.environ.pop(sdnotify.NOTIFY_SOCKET, None)
                # SIGINT, SIGTERM and SIGHUP stay blocked until the reactor's handlers
                # are in (chatd.net.signals): a reload right after the start is no stop.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)

                def listening() -> None:
                    os.write(write_end, b"1")
                    os.close(write_end)

                self.serve_one(self.config, listening)
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        os.close(write_end)
        self.children[pid] = number
        try:
            os.set_blocking(read_end, True)
            started = _read_with_deadline(read_end, START_SECONDS)
        finally:
            os.close(read_end)
        if not started:
            log.error("worker %d did not start", number)
        elif announce:
            log.info("worker %d started again (pid %d)", number, pid)
        return started

    def _supervise(self) -> int:
        while True:
            info = signal.sigtimedwait(_WAIT_SIGNALS, 1.0)
            if info is None:
                continue
            if info.si_signo == signal.SIGCHLD:
                for pid, status in _reap():
                    number = self.children.pop(pid, None)
                    if number is None:
                        continue
                    log.error(
                        "worker %d (pid %d) ended unexpectedly (%s); starting it again",
                        number,
                        pid,
                        _status_text(status),
                    )
                    time.sleep(RESTART_SECONDS)  # the supervisor serves nobody: it may wait
                    self._start(number, announce=True)
                continue
            if info.si_signo == signal.SIGHUP:  # reload (TLS): each worker does its own
                for pid in self.children:
                    _kill(pid, signal.SIGHUP)
                continue
            log.info(
                "received %s, stopping %d workers", signal.Signals(info.si_signo).name, self.count
            )
            sdnotify.stopping()
            return self._stop_all()

    def _stop_all(self) -> int:
        for pid in self.children:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        failed = False
        while self.children and time.monotonic() < deadline:
            info = signal.sigtimedwait({signal.SIGCHLD}, 0.2)
            if info is None:
                continue
            for pid, status in _reap():
                if self.children.pop(pid, None) is not None and status != 0:
                    failed = True
                    log.error("worker pid %d stopped with %s", pid, _status_text(status))
        for pid in list(self.children):
            _kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            failed = True
        for sock in self.reserved:
            sock.close()
        return 1 if failed else 0


def _read_with_deadline(fd: int, seconds: float) -> bool:
    ready, _, _ = select.select([fd], [], [], seconds)
    return bool(ready) and os.read(fd, 1) == b"1"


def _reap() -> list[tuple[int, int]]:
    done: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.waitstatus_to_exitcode(status)}"


def run(config: Config, count: int, serve_one: ServeOne) -> int:
    signals.hold()
    return Supervisor(config, count, serve_one).run()
