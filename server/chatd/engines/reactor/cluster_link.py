"""The reactor's two outbound connections to a cluster's Redis, and their reconnects.

A :class:`~chatd.cluster.node.ClusterNode` speaks RESP without I/O; this module gives
it sockets in the reactor's selector, like a client connection's but outbound:

* one **command** connection (publishes, leases, stream reads) and one **subscriber**
  connection (``SSUBSCRIBE``; under RESP2 a subscribed connection may send little else);
* a non-blocking ``connect`` (the address was resolved at start: a reactor never waits
  on DNS), then for ``rediss://`` a TLS handshake through the same sans-IO
  :class:`~chatd.net.tls.TLSStream` the TLS listeners use (client side); when every
  connection is ready the node greets, subscribes and bursts;
* **the subscriber is drained first**: each turn reads it until the kernel has nothing
  (bounded per turn), so Redis never cuts the node for its pub/sub output-buffer limit
  because client work kept the loop from reading;
* output is sent before the loop sleeps, like a connection's, and asks for write
  readiness only while bytes are pending; a queue past :data:`MAX_QUEUED` (Redis
  stopped answering) drops the link, which is then rebuilt: the node bursts again;
* either connection failing closes both, answers every waiting callback, and retries
  after a backoff (0.1 s doubling to 5 s), forever: the chat goes on locally meanwhile;
* **at shutdown the node drains** (:meth:`ClusterLink.drain`): its members' quits and
  lease releases are sent, and the reactor keeps reading until Redis has answered them
  all (:attr:`ClusterLink.settled`), within its shutdown bound, before :meth:`ClusterLink.stop`
  closes the sockets: a close with replies unread would reset the connection, and
  what the kernel had not sent yet would be lost with it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import ssl
from typing import TYPE_CHECKING

import hiredis

from chatd.cluster.node import ClusterNode
from chatd.cluster.resp import RedisProtocol
from chatd.cluster.slots import parse_slots, slot_map
from chatd.engines.reactor.handler import EVENT_READ, EVENT_WRITE, READ_SIZE, Handler
from chatd.net.tls import TLSStream

if TYPE_CHECKING:
    from chatd.engines.reactor.loop import Reactor

log = logging.getLogger("chatd.cluster")

#: Bytes one connection reads per turn at most (the subscriber's backlog drains over turns).
READ_PER_TURN = 8 << 20
#: Unsent bytes to Redis past which the link is dropped and rebuilt.
MAX_QUEUED = 64 << 20
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: Seconds a connect (TCP, TLS, topology, every shard) may take before it is retried.
CONNECT_SECONDS = 10.0
#: Seconds a rebuild after ``MOVED`` waits at most for the answers still due.
REBUILD_WAIT = 2.0


class RedisSocket(Handler):
    """One non-blocking connection to Redis, carrying one :class:`RedisProtocol`."""

    __slots__ = ("link", "proto", "sock", "connecting", "mask", "name", "tls", "raw", "ready")

    def __init__(self, link: ClusterLink, proto: RedisProtocol, name: str) -> None:
        """``name``: ``command``, ``subscriber`` or ``probe`` (in log lines)."""
        self.link = link
        self.proto = proto
        self.name = name
        self.sock: socket.socket | None = None
        self.connecting = False
        self.mask = 0
        #: ``rediss://``: the TLS layer between the socket and the protocol.
        self.tls: TLSStream | None = None
        #: Ciphertext (TLS) not sent yet.
        self.raw = bytearray()
        #: Connected (and, over TLS, the handshake done): the protocol's bytes may go.
        self.ready = False

    def open(self, family: int, address: tuple[str, int]) -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        context = self.link.tls
        if context is not None:
            self.tls = TLSStream(context, server_hostname=self.link.tls_host or address[0])
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, errno.errorcode.get(code, str(code)))
        self.connecting = True
        self._set_mask(EVENT_WRITE)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            if self.mask:
                self.link.reactor.selector.unregister(sock)
            self.mask = 0
            sock.close()
        self.connecting = False
        self.ready = False
        self.tls = None
        self.raw.clear()

    def _set_mask(self, mask: int) -> None:
        sock = self.sock
        assert sock is not None
        selector = self.link.reactor.selector
        if mask == self.mask:
            return
        if not self.mask:
            selector.register(sock, mask, self)
        else:
            selector.modify(sock, mask, self)
        self.mask = mask

    def on_ready(self, mask: int) -> None:
        try:
            if self.connecting:
                assert self.sock is not None
                code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, errno.errorcode.get(code, str(code)))
                self.connecting = False
                self._set_mask(EVENT_READ)
                if self.tls is None:
                    self._opened()
                else:
                    self._handshake()
                return
            if mask & EVENT_READ:
                self._read()
            if mask & EVENT_WRITE and self.sock is not None:
                self.flush()
        except (OSError, hiredis.ProtocolError) as exc:  # ssl.SSLError is an OSError
            self.link.failed(self, exc)

    def _opened(self) -> None:
        self.ready = True
        self.link.opened(self)

    def _handshake(self) -> None:
        tls = self.tls
        assert tls is not None
        done = tls.handshake()
        self.raw += tls.take()
        self._send_raw()
        if done:
            self._opened()

    def _read(self) -> None:
        sock = self.sock
        got = 0
        while sock is not None and got < READ_PER_TURN:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                raise ConnectionResetError(f"redis closed the {self.name} connection")
            got += len(data)
            tls = self.tls
            if tls is not None:
                tls.feed(data)
                if not self.ready:
                    self._handshake()
                    if not self.ready:
                        continue
                data, closed = tls.read()
                self.raw += tls.take()
                if closed:
                    raise ConnectionResetError(f"redis closed the {self.name} connection")
            if data:
                self.proto.receive_data(data)
            sock = self.sock  # a callback may have dropped the link

    def flush(self) -> None:
        """Send what the protocol queued until the kernel refuses; then ask for writes."""
        if self.sock is None or not self.ready:
            return
        out = self.proto.out
        tls = self.tls
        if tls is None:
            self._send(out)
        else:
            if out:
                tls.encrypt(out)
                out.clear()
                self.raw += tls.take()
            self._send_raw()

    def _send_raw(self) -> None:
        self._send(self.raw)

    def _send(self, out: bytearray) -> None:
        sock = self.sock
        assert sock is not None
        while out:
            try:
                sent = sock.send(out)
            except (BlockingIOError, InterruptedError):
                break
            del out[:sent]
        queued = len(out) + len(self.proto.out)
        if queued > MAX_QUEUED:
            raise ConnectionError(f"redis is not reading ({queued} bytes queued)")
        self._set_mask(EVENT_READ | EVENT_WRITE if out else EVENT_READ)

    def on_ready_at_shutdown(self, mask: int) -> None:
        self.on_ready(mask)


class ClusterLink:
    """Keeps a :class:`ClusterNode`'s connections up, and its heartbeat ticking.

    Each (re)connect first asks the given Redis for the cluster's topology
    (``CLUSTER SLOTS``, on a probe connection): a standalone Redis refuses it and is the
    one shard; a Redis Cluster names its masters, and the node gets a command and a
    subscriber connection to each. The node is told it is connected once all are open;
    any of them failing closes them all and starts over, as does a ``MOVED`` once the
    commands sent before it are all answered (or after :data:`REBUILD_WAIT` seconds).
    """

    def __init__(
        self,
        reactor: Reactor,
        node: ClusterNode,
        address: tuple[int, tuple[str, int]],
        *,
        password: str | None,
        user: str | None,
        db: int,
        tls: ssl.SSLContext | None = None,
        tls_host: str | None = None,
    ) -> None:
        """``tls``: the client context of a ``rediss://`` URL (None: plain TCP);
        ``tls_host``: the name Redis' certificate must carry (the URL's host: sent as
        SNI and checked, for the seed and, on a Redis Cluster, every master)."""
        self.reactor = reactor
        self.tls = tls
        self.tls_host = tls_host
        self.node = node
        self.address = address
        self.password = password
        self.user = user
        self.db = db
        self.probe: RedisSocket | None = None
        self.conns: list[RedisSocket] = []
        self.backoff = BACKOFF_FIRST
        self.stopped = False
        self._warned = False
        #: Connect attempts made (a deadline names the attempt it is for).
        self.attempt = 0
        #: When a rebuild after ``MOVED`` stops waiting for answers (None: none waits).
        self._rebuild_due: float | None = None
        node.on_change = self._check_broken

    def start(self) -> None:
        self._connect(None)
        self.reactor.call_at(self.reactor.now + self.tick_seconds, self._tick, None)

    @property
    def tick_seconds(self) -> float:
        return max(0.2, self.node.lease / 5)

    # ----------------------------------------------------------------- topology

    def _connect(self, _: object) -> None:
        """Ask the seed for the topology (a probe connection), then connect to it."""
        if self.stopped:
            return
        proto = RedisProtocol()
        if self.password is not None:
            args = (self.user, self.password) if self.user else (self.password,)
            proto.call(None, "AUTH", *args)
        proto.call(self._topology, "CLUSTER", "SLOTS")
        self.probe = RedisSocket(self, proto, "probe")
        family, address = self.address
        self.attempt += 1
        self.reactor.call_at(self.reactor.now + CONNECT_SECONDS, self._deadline, self.attempt)
        try:
            self.probe.open(family, address)
        except OSError as exc:
            self.failed(self.probe, exc)

    def _deadline(self, attempt: int) -> None:
        """A connect (TCP, TLS, the topology, every shard) that is not done in time fails."""
        if attempt == self.attempt and not self.node.up and not self.stopped:
            if self.probe is not None or self.conns:
                self.failed(None, TimeoutError(f"no answer within {CONNECT_SECONDS:.0f} s"))

    def _topology(self, reply: object) -> None:
        probe, self.probe = self.probe, None
        if probe is not None:
            probe.close()
        family, seed = self.address
        if isinstance(reply, ConnectionError):
            return  # failed() has scheduled the retry
        if isinstance(reply, hiredis.ReplyError):
            if "cluster support disabled" not in str(reply):
                self._retry(ConnectionError(f"redis refused CLUSTER SLOTS: {reply}"))
                return
            shards = self.node.use_topology(1, None)  # a standalone Redis
            addresses = [(family, seed)]
        else:
            try:
                masters, owner = slot_map(parse_slots(reply))
            except (ValueError, TypeError, IndexError) as exc:
                self._retry(ConnectionError(f"cannot use the cluster's slots: {exc}"))
                return
            shards = self.node.use_topology(
                len(masters), owner, [f"{host}:{port}" for host, port in masters]
            )
            addresses = [(_family(host), (host, port)) for host, port in masters]
        self.conns = []
        for shard, (fam, address) in zip(shards, addresses, strict=True):
            for proto, name in ((shard.cmd, "command"), (shard.sub, "subscriber")):
                conn = RedisSocket(self, proto, name)
                self.conns.append(conn)
                try:
                    conn.open(fam, address)
                except OSError as exc:
                    self.failed(conn, exc)
                    return

    # ----------------------------------------------------------------- events

    def opened(self, conn: RedisSocket) -> None:
        if conn is self.probe:
            return  # it sent its questions when it was made; the answer comes back
        if not self.conns or any(c.sock is None or not c.ready for c in self.conns):
            return
        log.info(
            "cluster: connected to redis at %s:%d (%d shard%s)",
            *self.address[1],
            len(self.node.shards),
            "" if len(self.node.shards) == 1 else "s",
        )
        self._warned = False
        self.node.broken = None
        self.node.connected(self.password, self.user, self.db)

    def failed(self, conn: RedisSocket | None, exc: BaseException) -> None:
        if self.probe is None and all(c.sock is None for c in self.conns):
            return  # failed already
        probe, self.probe = self.probe, None
        if probe is not None:
            probe.close()
            probe.proto.fail()
        for c in self.conns:
            c.close()
        self.conns = []
        self._retry(exc)

    def _retry(self, exc: BaseException) -> None:
        """Every connection is closed: tell the node, and try again after the backoff
        (which starts over only if Redis had answered a heartbeat on this link)."""
        if not self._warned:
            log.warning("cluster: redis connection lost (%s); retrying", exc)
            self._warned = True
        if self.node.answered:
            self.backoff = BACKOFF_FIRST
        self._rebuild_due = None
        self.node.lost()
        if not self.stopped:
            self.reactor.call_at(self.reactor.now + self.backoff, self._connect, None)
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _check_broken(self) -> None:
        """The node asked for a new link: at once after a protocol error (``broken``);
        after ``MOVED`` (``moved``) at the end of the first turn by which Redis has
        answered every command sent (:meth:`flush`), or after :data:`REBUILD_WAIT`
        seconds if it does not."""
        node = self.node
        if node.broken is not None:
            self.failed(None, ConnectionError(node.broken))
        elif node.moved is not None and self._rebuild_due is None:
            self._rebuild_due = self.reactor.now + REBUILD_WAIT
            self.reactor.call_at(self._rebuild_due, self._rebuild_now, self._rebuild_due)

    def _rebuild_now(self, due: float) -> None:
        if due == self._rebuild_due and self.node.moved is not None and not self.stopped:
            self.failed(None, ConnectionError(self.node.moved))

    def _tick(self, _: object) -> None:
        if self.stopped:
            return
        self.node.tick()
        self.reactor.call_at(self.reactor.now + self.tick_seconds, self._tick, None)

    def flush(self) -> None:
        """Before the loop sleeps: send what the node queued this turn (or rebuild the
        link, if it waited for answers that have all come)."""
        if self.node.moved is not None and self.node.settled and not self.stopped:
            self.failed(None, ConnectionError(self.node.moved))
            return
        for conn in [*self.conns, *((self.probe,) if self.probe else ())]:
            if (conn.proto.out or conn.raw) and conn.sock is not None and conn.ready:
                try:
                    conn.flush()
                except OSError as exc:
                    self.failed(conn, exc)
                    return

    def drain(self, reason: str) -> None:
        """At shutdown, once the clients were told: this node's members quit for the
        other nodes (:meth:`ClusterNode.drain <chatd.cluster.node.ClusterNode.drain>`),
        and the quits go out now. The reactor then waits, within its shutdown bound,
        until :attr:`settled`.

        A link that is down is not brought up again (a connect in progress is dropped):
        the other nodes reap this node once its alive key expires, as after a crash.
        """
        self.node.drain(reason)
        if not self.node.up:
            self.stop()
            return
        self.stopped = True  # no reconnect from here on
        self.flush()

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: Redis answered every command, or the link is gone."""
        return self.node.settled

    def stop(self) -> None:
        """At shutdown, after the last flush."""
        self.stopped = True
        self.flush()
        for conn in self.conns:
            conn.close()
        if self.probe is not None:
            self.probe.close()


def _family(host: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """Resolve the Redis host once, at start (``OSError`` if it cannot be)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    return family, (str(address[0]), int(address[1]))
