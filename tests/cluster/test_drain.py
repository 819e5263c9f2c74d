"""Issue 21: a node of a cluster being stopped drains.

SIGTERM on a node: it stops accepting, tells its clients to reconnect, and its members
quit on the other nodes at once (``server shutting down``), their nicknames' leases
released, so that a client reconnecting through another node gets its nickname back at
once; the quits are in Redis before the process exits, and the shutdown stays bounded
when Redis cannot be reached. Real ``redis-server`` processes (:mod:`redisproc`), real
nodes, real line and IRC clients on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from redisproc import RedisServer
from test_nodes import irc, sees

from chatwire import Client, Server

#: Seconds a nickname lease and a node's alive key last in these tests: long, so that a
#: test passes only if the drain, not the lease's expiry, is what the others see.
LONG_LEASE = 60
#: What the stopping node's clients are told, and the others see its members quit with.
RECONNECT = "* server shutting down: please reconnect"
QUIT_REASON = "server shutting down"
#: How long a node's shutdown may take, Redis down or not: the 2 s flush bound, the
#: interpreter's exit, and a margin for the 2 shared CPUs.
SHUTDOWN_LIMIT = 5.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lease() -> float:
    return LONG_LEASE


def test_a_stopped_node_s_members_quit_at_once_and_come_back_through_another(
    node: Callable[..., Server],
) -> None:
    """A line member on A and an IRC member on B share #lobby. SIGTERM on A: A's member
    is told to reconnect; B's sees it quit at once (the lease is 60 s: waiting for its
    expiry would fail the test); A exits 0 (the fixture checks it wrote no traceback).
    The client comes back through B under the same nickname, and the chat goes on."""
    a, b = node(), node()
    alice = a.client("alice")
    bob = irc(b, "bob")
    sees(bob, "alice")
    bob.send("JOIN #lobby")
    bob.expect(r" 366 bob #lobby ")
    alice.expect(r"^\* bob joined #lobby")

    started = time.monotonic()
    a.terminate()
    assert alice.wait_closed()[-1] == RECONNECT
    bob.expect(rf"^:alice!\S+ QUIT :{QUIT_REASON}$", timeout=LONG_LEASE / 4)
    took = time.monotonic() - started
    assert took < SHUTDOWN_LIMIT, f"the quit took {took:.1f} s"
    assert a.proc.wait(SHUTDOWN_LIMIT) == 0

    # Reconnecting through B: the nickname's lease was released with the quit.
    again = Client(b.host, b.port)
    again.send("alice")
    assert again.read_line().startswith("* you are alice, in #lobby"), "alice is free on B"
    bob.expect(r"^:alice!\S+ JOIN #lobby")
    again.send("back through b")
    bob.expect(r"^:alice!\S+ PRIVMSG #lobby :back through b$")
    bob.send("PRIVMSG #lobby :welcome back")
    again.expect(r"^bob: welcome back$")


def test_every_member_of_a_stopped_node_quits_and_frees_its_nickname(
    node: Callable[..., Server],
) -> None:
    """Many members (more than a loop turn frees, 256): every quit and every lease
    release reaches Redis before the node exits, not only the first turns' worth."""
    a, b = node(), node()
    members = [a.client(f"m{i}") for i in range(300)]
    watcher = irc(b, "watcher")
    sees(watcher, "m0", "m299")
    a.terminate()
    for client in members:
        assert client.wait_closed()[-1] == RECONNECT
    assert a.proc.wait(SHUTDOWN_LIMIT) == 0
    # The last members' nicknames are free on B at once (they would wait 60 s for the
    # lease otherwise), and B lists none of A's members any more.
    for nick in ("m299", "m298", "m0"):
        taker = Client(b.host, b.port)
        taker.send(nick)
        assert taker.read_line().startswith(f"* you are {nick},"), f"{nick} is free on B"
        taker.close()
    watcher.send("ISON m1 m150 m297")
    assert watcher.expect(r" 303 ")[-1].endswith(" 303 watcher :")


@pytest.mark.parametrize("fault", ["stopped", "paused"])
def test_a_node_stops_in_bounded_time_when_redis_is_out_of_reach(
    node: Callable[..., Server], redis: RedisServer, fault: str
) -> None:
    """Redis gone (stopped: the link is down at the signal) or silent (paused: the link
    is up, the quits are sent and never answered): the node still tells its clients,
    and exits 0 within the shutdown bound."""
    a = node()
    alice = a.client("alice")
    alice.send("/stats")
    assert "cluster_up=1" in alice.expect(r"cluster_up")[-1]
    if fault == "stopped":
        redis.stop()
    else:
        redis.pause()
    try:
        started = time.monotonic()
        a.terminate()
        assert alice.wait_closed()[-1] == RECONNECT
        assert a.proc.wait(SHUTDOWN_LIMIT + 5) == 0
        took = time.monotonic() - started
    finally:
        if fault == "paused":
            redis.resume()
    assert took < SHUTDOWN_LIMIT, f"the shutdown took {took:.1f} s with redis {fault}"
