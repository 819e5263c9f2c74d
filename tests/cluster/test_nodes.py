"""Several chatd nodes through a real Redis: one chat across processes, and its faults.

Every test starts ``redis-server`` (Debian's; :mod:`redisproc`) and reactor nodes with
``--redis``, and drives them with real line and IRC clients on loopback. Waiting for the
cluster to settle is done by reading: a question is asked again (an ``ISON``, a line
sent) until the answer shows what the test waits for, within a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redisproc import RedisServer, command
from test_chathistory import _tag

from chatwire import Client, IrcClient, Server, TLSFiles

#: Seconds a lease lasts in these tests (the ``lease`` fixture's default, in conftest):
#: a dead node's members quit within about this.
LEASE = 3
#: How long the tests wait for the cluster to settle (reconnects back off up to 5 s).
SETTLE = 20.0

pytestmark = pytest.mark.timeout(120)


def irc(server: Server, nick: str, caps: str = "") -> IrcClient:
    assert server.irc_port is not None
    client = IrcClient(server.host, server.irc_port)
    client.register(nick, caps)
    return client


def eventually(check: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    """Ask ``check`` (a round trip to a server) until it says yes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")


def ison(client: IrcClient, *nicks: str) -> set[str]:
    client.send(f"ISON {' '.join(nicks)}")
    line = client.expect(r" 303 ")[-1]
    return set(line.split(":", 2)[-1].split())


def sees(client: IrcClient, *nicks: str) -> None:
    eventually(lambda: ison(client, *nicks) == set(nicks), f"{client.nick} sees {nicks}")


def names(client: IrcClient, room: str) -> set[str]:
    client.send(f"NAMES {room}")
    lines = client.expect(r" 366 ")
    found: set[str] = set()
    for line in lines:
        if " 353 " in line:
            found |= {n.lstrip("@+") for n in line.split(":", 2)[-1].split()}
    return found


def lobby_across(
    node: Callable[..., Server], *line_nicks: str
) -> tuple[Server, Server, list[Client], IrcClient]:
    """Two nodes: line users on the first (in #lobby), ``bob`` (IRC) on the second, who
    joins #lobby once he sees them; returns when the first line user has seen him join
    (a line sent before that may miss him, on one node as on several)."""
    a, b = node(), node()
    users = [a.client(nick) for nick in line_nicks]
    bob = irc(b, "bob")
    sees(bob, *line_nicks)
    bob.send("JOIN #lobby")
    bob.expect(r" 366 bob #lobby ")
    users[0].expect(r"^\* bob joined #lobby")
    return a, b, users, bob


def test_a_line_user_and_an_irc_user_on_two_nodes_share_one_chat(
    node: Callable[..., Server],
) -> None:
    a, b, (alice,), bob = lobby_across(node, "alice")
    assert names(bob, "#lobby") == {"alice", "bob"}

    alice.send("hello from the line node")
    bob.expect(r"^:alice!\S+ PRIVMSG #lobby :hello from the line node$")
    bob.send("PRIVMSG #lobby :hello from the irc node")
    alice.expect(r"^bob: hello from the irc node$")

    # Private messages both ways.
    bob.send("PRIVMSG alice :just you")
    alice.expect(r"^bob \(private\): just you$")
    alice.send("/msg bob and you")
    bob.expect(r"^:alice!\S+ PRIVMSG bob :and you$")

    # Lists: WHOIS, WHO, LIST on IRC; /who on the line.
    bob.send("WHOIS alice")
    whois = bob.expect(r" 318 ")
    assert any(" 311 bob alice " in line for line in whois)
    assert any(re.search(r" 319 bob alice :@?#lobby", line) for line in whois)
    bob.send("WHO #lobby")
    who = bob.expect(r" 315 ")
    assert {line.split()[7] for line in who if " 352 " in line} == {"alice", "bob"}
    bob.send("LIST")
    listed = bob.expect(r" 323 ")
    assert any(re.search(r" 322 bob #lobby 2 ", line) for line in listed)
    alice.send("/who")
    alice.expect(r"^\* #lobby \(2\): alice bob$")

    # Topic and modes cross too.
    alice.send("/topic cross-node topic")
    bob.expect(r" TOPIC #lobby :cross-node topic$")
    bob.send("PART #lobby :bye")
    alice.expect(r"^\* bob left #lobby")


def test_each_node_refuses_the_nicknames_held_on_the_other(node: Callable[..., Server]) -> None:
    a, b = node(), node()
    alice = a.client("alice")
    watcher = irc(b, "watcher")
    sees(watcher, "alice")
    other = IrcClient(b.host, b.irc_port or 0)
    other.send("NICK alice\r\nUSER x 0 * :x")
    other.expect(r" 433 \* alice ")
    line_b = b.client()
    line_b.send("alice")
    line_b.expect(r"^! nickname is taken: alice")
    # A nickname let go on one node can be taken on the other.
    alice.send("/nick alicia")
    alice.expect(r"alicia")
    eventually(lambda: ison(watcher, "alice", "alicia") == {"alicia"}, "the rename reached b")
    other.send("NICK alice")
    other.expect(r" 001 alice ")


def test_two_clients_racing_for_one_nick_on_two_nodes_exactly_one_wins(
    node: Callable[..., Server],
) -> None:
    a, b = node(), node()
    watcher = irc(a, "watcher")
    probe = irc(b, "probe")
    sees(watcher, "probe")
    for round_ in range(10):
        nick = f"racer{round_}"
        left = IrcClient(a.host, a.irc_port or 0)
        right = IrcClient(b.host, b.irc_port or 0)
        left.send("USER l 0 * :l")
        right.send("USER r 0 * :r")
        left.send(f"NICK {nick}")  # back to back: neither node can know of the other's
        right.send(f"NICK {nick}")
        won = []
        for client in (left, right):
            reply = client.expect(r" (001|433) \S+ ")[-1]
            won.append(" 001 " in reply)
        assert won.count(True) == 1, f"round {round_}: {won}"
        left.close()
        right.close()
    probe.close()


def chat_resumes(alice: Client, bob: IrcClient, room: str, after: str, count: int) -> None:
    """Wait until a line from ``alice`` reaches ``bob`` in ``room`` again (the nodes
    reconnected and resubscribed), then check that ``count`` more all arrive, in order."""
    n = 0

    def crossed() -> bool:
        nonlocal n
        n += 1
        alice.send(f"probe {n}")
        try:
            bob.expect(rf"PRIVMSG {room} :probe {n}$", timeout=0.5)
            return True
        except TimeoutError:
            return False

    eventually(crossed, f"a line crosses {after}")
    for i in range(count):
        alice.send(f"after {i}")
    got = [
        line.rsplit(":", 1)[-1]
        for line in bob.expect(rf"PRIVMSG {room} :after {count - 1}$")
        if f"PRIVMSG {room} :after" in line
    ]
    assert got == [f"after {i}" for i in range(count)]


def test_a_killed_node_s_members_quit_on_the_others(node: Callable[..., Server]) -> None:
    a = node(expect_exit=None)
    b = node()
    alice = irc(a, "alice")
    alice.send("JOIN #room")
    alice.expect(r" 366 ")
    bob = irc(b, "bob")
    sees(bob, "alice")
    bob.send("JOIN #room")
    bob.expect(r" 366 ")
    alice.expect(r":bob!\S+ JOIN #room")
    started = time.monotonic()
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    bob.expect(r"^:alice!\S+ QUIT :\*\.net \*\.split$", timeout=LEASE * 4)
    took = time.monotonic() - started
    assert took < LEASE * 3, took
    assert ison(bob, "alice") == set()
    # Its nickname is free again once its lease has expired.
    eventually(lambda: _can_take(b, "alice"), "alice's lease expired")


def _can_take(server: Server, nick: str) -> bool:
    client = IrcClient(server.host, server.irc_port or 0)
    try:
        client.send(f"NICK {nick}\r\nUSER x 0 * :x")
        return " 001 " in client.expect(r" (001|433) ")[-1]
    finally:
        client.close()


def test_chat_resumes_after_redis_restarts_and_nothing_sent_after_is_lost(
    node: Callable[..., Server], redis: RedisServer
) -> None:
    a, b, (alice,), bob = lobby_across(node, "alice")
    alice.send("before")
    bob.expect(r"PRIVMSG #lobby :before$")

    redis.restart()  # empty: no leases, no streams, no subscriptions

    chat_resumes(alice, bob, "#lobby", "after the restart", count=50)
    # The nodes knew each other's members again (bursts), and the leases were taken again.
    assert names(bob, "#lobby") == {"alice", "bob"}
    other = IrcClient(b.host, b.irc_port or 0)
    other.send("NICK alice\r\nUSER x 0 * :x")
    other.expect(r" 433 \* alice ")


def test_redis_paused_for_ten_seconds_costs_no_node_and_chat_resyncs(
    node: Callable[..., Server], redis: RedisServer
) -> None:
    a, b, (alice, carol), bob = lobby_across(node, "alice", "carol")
    redis.pause()
    try:
        # Members of one node keep chatting while Redis is stopped.
        alice.send("while paused")
        carol.expect(r"^alice: while paused$")
        time.sleep(10)  # the fault itself: Redis stopped for 10 s
    finally:
        redis.resume()
    # What was queued meanwhile arrives; then chat goes on both ways.
    bob.expect(r"PRIVMSG #lobby :while paused$", timeout=SETTLE)
    bob.send("PRIVMSG #lobby :after the pause")
    alice.expect(r"^bob: after the pause$", timeout=SETTLE)
    assert names(bob, "#lobby") == {"alice", "bob", "carol"}
    assert a.proc.poll() is None and b.proc.poll() is None


def test_a_node_that_joins_later_learns_the_rooms_topics_and_modes(
    node: Callable[..., Server],
) -> None:
    a = node()
    alice = irc(a, "alice")
    alice.send("JOIN #guarded\r\nTOPIC #guarded :kept topic\r\nMODE #guarded +m")
    alice.expect(r" MODE #guarded \+m")
    b = node()
    bob = irc(b, "bob")
    sees(bob, "alice")
    bob.send("JOIN #guarded")
    lines = bob.expect(r" 366 ")
    assert any(" 332 bob #guarded :kept topic" in line for line in lines)
    bob.send("MODE #guarded")
    assert re.search(r" 324 bob #guarded :?\+\S*m", bob.expect(r" 324 ")[-1])
    bob.send("PRIVMSG #guarded :not voiced")
    bob.expect(r" 404 bob #guarded ")


def test_a_kill_on_one_node_closes_the_victim_on_the_other(node: Callable[..., Server]) -> None:
    a = node("--oper", "root:secret")
    b = node()
    root = irc(a, "root")
    root.send("OPER root secret")
    root.expect(r" 381 ")
    victim = irc(b, "victim")
    sees(root, "victim")
    root.send("KILL victim :go away")
    victim.expect(r"Killed \(root \(go away\)\)")
    eventually(lambda: ison(root, "victim") == set(), "the victim is gone")


def test_line_history_and_stats_show_the_cluster(node: Callable[..., Server]) -> None:
    a = node()
    alice = a.client("alice")
    alice.send("/stats")
    stats = " ".join(alice.expect(r"cluster_up"))
    assert "cluster_up=1" in stats or "cluster_up 1" in stats, stats


@pytest.fixture
def tight_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that cuts a subscriber holding 256 KiB of unread messages for 2 s."""
    server = RedisServer(tmp_path / "tight", "--client-output-buffer-limit", "pubsub 256kb 128kb 2")
    yield server
    server.stop()


def test_a_node_with_a_stalled_client_keeps_up_with_redis(
    start_server: Callable[..., Server], tight_redis: RedisServer
) -> None:
    """A member that reads nothing costs its node nothing with Redis: the node drains its
    subscriber before it writes to clients, so Redis never cuts it for its output-buffer
    limit, and the node's other members get every line."""

    def start() -> Server:
        # Output limits high enough for the reader, which reads only after the flood.
        return start_server(
            "reactor",
            "--ephemeral",
            "--redis",
            tight_redis.url,
            "--flood-rate",
            "0",
            "--max-sendq",
            str(32 << 20),
            "--sendq-soft",
            "0",
        )

    a, b = start(), start()
    sender = a.client("sender")
    reader = b.client("reader")
    stalled = b.connect()  # joins #lobby, then never reads again
    stalled.sendall(b"stalled\n")
    reader.expect(r"^\* stalled joined #lobby")

    def three_here() -> bool:
        sender.send("/who")
        return sender.expect(r"^\* #lobby \(\d+\)")[-1].startswith("* #lobby (3)")

    eventually(three_here, "the sender's node knows the other node's two members")
    line = "x" * 400
    count = 20000  # 8 MB through Redis: past what loopback's socket buffers absorb
    if os.environ.get("CHATD_TEST_STALL_NODE"):  # proves the test can fail: a stopped
        os.kill(b.proc.pid, signal.SIGSTOP)  # node is cut by Redis
    for start_at in range(0, count, 500):
        sender.send("".join(f"{i} {line}\n" for i in range(start_at, start_at + 500)).rstrip())
    if os.environ.get("CHATD_TEST_STALL_NODE"):
        time.sleep(4)
        os.kill(b.proc.pid, signal.SIGCONT)
    got = reader.expect(rf"^sender: {count - 1} ", timeout=60)
    numbers = [int(g.split()[1]) for g in got if g.startswith("sender: ")]
    assert numbers == list(range(count))
    reader.send("/stats")
    stats = " ".join(reader.expect(r"cluster_up"))
    assert "cluster_disconnects=0" in stats or "cluster_disconnects" not in stats, stats
    assert "output buffer limits" not in tight_redis.log.read_text()
    stalled.close()


def test_workers_share_the_ports_and_are_one_chat(
    start_server: Callable[..., Server], redis: RedisServer
) -> None:
    """``--workers 2``: two reactor processes on the same ports; the kernel spreads the
    connections over them and every member hears every other."""
    server = start_server(
        "reactor", "--ephemeral", "--redis", redis.url, "--workers", "2", "--irc-port", "0"
    )
    clients = [server.client(f"user{i}") for i in range(16)]
    # A message id ends with the id of the node that minted it: ask each connection's.
    nodes = set()
    for i in range(16):
        probe = irc(server, f"probe{i}", "echo-message message-tags")
        probe.send(f"PRIVMSG probe{i} :which node")
        nodes.add(_tag(probe.expect(r"PRIVMSG probe\d+ :which node$")[-1], "msgid")[-5:])
        probe.close()
    # Sixteen connections all on one of two workers would be a 1 in 32768 chance.
    assert len(nodes) == 2, f"the connections went to {nodes}"
    clients[0].send("hello, every worker")
    for client in clients[1:]:
        client.expect(r"^user0: hello, every worker$")
    bob = irc(server, "bob")
    bob.send("JOIN #lobby")
    assert names(bob, "#lobby") >= {f"user{i}" for i in range(16)}
    # SIGHUP (reload) is passed on to the workers; nobody stops.
    server.proc.send_signal(signal.SIGHUP)
    clients[1].send("after the reload")
    clients[2].expect(r"^user1: after the reload$")
    assert server.proc.poll() is None


CAPS = "batch server-time message-tags echo-message draft/chathistory"


def _history(client: IrcClient, command: str) -> list[str]:
    """The PRIVMSG lines of the chathistory batch answering ``command`` (batch tag gone)."""
    client.send(command)
    opened = client.expect(r" BATCH \+")[-1]
    ref = opened.split()[2][1:]
    lines = client.expect(rf" BATCH -{re.escape(ref)}$")[:-1]
    return [re.sub(rf"^@batch={re.escape(ref)};", "@", line) for line in lines]


def test_every_node_answers_history_from_redis(node: Callable[..., Server]) -> None:
    a, b = node(), node()
    amy = irc(a, "amy", CAPS)
    amy.send("JOIN #talk")
    amy.expect(" 366 ")
    echoes = []
    for i in range(6):
        amy.send(f"PRIVMSG #talk :message {i}")
        echoes.append(amy.expect(f":message {i}$")[-1])
    # bob was never in #talk and is on another node: he reads what amy said there.
    bob = irc(b, "bob", CAPS)
    sees(bob, "amy")
    bob.send("JOIN #talk")
    bob.expect(" 366 ")
    strip = lambda lines: [re.sub(r"@\S+ ", "", line) for line in lines]  # noqa: E731
    got = _history(bob, "CHATHISTORY LATEST #talk * 10")
    assert [_tag(line, "msgid") for line in got] == [_tag(line, "msgid") for line in echoes]
    assert strip(got) == strip(echoes)
    before = f"msgid={_tag(echoes[4], 'msgid')}"
    assert strip(_history(bob, f"CHATHISTORY BEFORE #talk {before} 2")) == strip(echoes[2:4])
    after = f"msgid={_tag(echoes[1], 'msgid')}"
    assert strip(_history(bob, f"CHATHISTORY AFTER #talk {after} 3")) == strip(echoes[2:5])
    # TARGETS reads each room's stream too: #talk, with its last line's time.
    bob.send(
        "CHATHISTORY TARGETS timestamp=2020-01-01T00:00:00.000Z "
        "timestamp=2262-01-01T00:00:00.000Z 10"
    )
    opened = bob.expect(r" BATCH \+")[-1]
    assert opened.endswith(" draft/chathistory-targets"), opened
    listed = bob.read_line()
    assert listed.endswith(f" CHATHISTORY TARGETS #talk {_tag(echoes[-1], 'time')}"), listed
    # A line user on the second node reads the same.
    carol = b.client("carol")
    carol.send("/join #talk")
    carol.expect(r"^\* you joined #talk")
    carol.send("/history 3")
    lines = carol.expect(r"^\* end of history of #talk")
    assert [line.split("amy: ", 1)[-1] for line in lines[1:-1]] == [
        f"message {i}" for i in (3, 4, 5)
    ]


def test_history_reads_past_one_page_of_the_stream(node: Callable[..., Server]) -> None:
    a = node("--flood-rate", "0")
    amy = irc(a, "amy", CAPS)
    amy.send("JOIN #long")
    amy.expect(" 366 ")
    total = 700  # several pages of the stream (200 entries each)
    amy.send("\r\n".join(f"PRIVMSG #long :line {i}" for i in range(total)))
    echoes = [line for line in amy.expect(rf":line {total - 1}$") if " PRIVMSG #long :" in line]
    assert len(echoes) == total
    ids = [_tag(line, "msgid") for line in echoes]

    def texts(command: str) -> list[str]:
        return [line.rsplit(":", 1)[-1] for line in _history(amy, command)]

    assert texts(f"CHATHISTORY BEFORE #long msgid={ids[10]} 5") == [
        f"line {i}" for i in range(5, 10)
    ]
    assert texts(f"CHATHISTORY AFTER #long msgid={ids[10]} 3") == ["line 11", "line 12", "line 13"]
    assert texts(f"CHATHISTORY AROUND #long msgid={ids[300]} 3") == [
        "line 299",
        "line 300",
        "line 301",
    ]
    assert texts("CHATHISTORY LATEST #long * 2") == [f"line {total - 2}", f"line {total - 1}"]
    assert texts(f"CHATHISTORY BETWEEN #long msgid={ids[3]} msgid={ids[7]} 10") == [
        "line 4",
        "line 5",
        "line 6",
    ]


def test_nodes_reach_redis_over_tls(
    start_server: Callable[..., Server], tmp_path: Path, tls_files: TLSFiles
) -> None:
    """``rediss://``: the node checks Redis' certificate against ``--redis-ca``."""
    context = tls_files.client_context()
    secure = RedisServer(tmp_path / "tls", tls=(tls_files.cert, tls_files.key, context))
    try:

        def start() -> Server:
            return start_server(
                "reactor",
                "--irc-port",
                "0",
                "--ephemeral",
                "--redis",
                secure.url,
                "--redis-ca",
                str(tls_files.ca_file),
            )

        a, b = start(), start()
        alice = a.client("alice")
        bob = irc(b, "bob")
        sees(bob, "alice")
        bob.send("JOIN #lobby")
        bob.expect(r" 366 ")
        alice.expect(r"^\* bob joined #lobby")
        alice.send("over tls")
        bob.expect(r"PRIVMSG #lobby :over tls$")
    finally:
        secure.stop()


def test_a_node_refuses_a_redis_whose_certificate_it_cannot_check(
    start_server: Callable[..., Server], tmp_path: Path, tls_files: TLSFiles
) -> None:
    """Without the CA, the handshake fails: the node logs it, keeps retrying, and gives
    out no nickname (it cannot take the lease)."""
    context = tls_files.client_context()
    secure = RedisServer(tmp_path / "tls", tls=(tls_files.cert, tls_files.key, context))
    try:
        a = start_server("reactor", "--irc-port", "0", "--ephemeral", "--redis", secure.url)
        a.wait_for_stderr(r"CERTIFICATE_VERIFY_FAILED")
        client = IrcClient(a.host, a.irc_port or 0)
        client.send("NICK alice\r\nUSER a 0 * :a")
        client.expect(r"FAIL NICK TEMPORARILY_UNAVAILABLE alice ", timeout=10)
    finally:
        secure.stop()


def test_a_cluster_started_again_finds_its_rooms_and_their_history(
    node: Callable[..., Server],
) -> None:
    """Room state lives in a Redis hash, lines in the room's stream: when every node has
    stopped and one starts again, the rooms come back (empty, with their state), and
    their history is there.

    amy is still in the room when the node stops: a room emptied by a shutdown keeps its
    state, whereas one whose last member leaves while the node runs ends, and loses it.
    (Closing amy first made the test a race between her end of file and the SIGTERM,
    which a loaded machine lost.)"""
    a = node()
    amy = irc(a, "amy", CAPS)
    amy.send("JOIN #kept\r\nTOPIC #kept :still here\r\nMODE #kept +m\r\nPRIVMSG #kept :said")
    amy.expect(r"PRIVMSG #kept :said$")
    a.stop()
    amy.expect(r"^ERROR :Server shutting down")
    amy.close()
    b = node()
    bob = irc(b, "bob", CAPS)
    bob.send("LIST #kept")
    assert any(" 322 bob #kept 0 :" in line for line in bob.expect(r" 323 "))
    bob.send("JOIN #kept")
    joined = bob.expect(r" 366 ")
    assert any(" 332 bob #kept :still here" in line for line in joined)
    bob.send("MODE #kept")
    assert re.search(r" 324 bob #kept :?\+\S*m", bob.expect(r" 324 ")[-1])
    got = _history(bob, "CHATHISTORY LATEST #kept * 5")
    assert [line.rsplit(":", 1)[-1] for line in got] == ["said"]


def test_kicks_invitations_and_monitor_cross_nodes(node: Callable[..., Server]) -> None:
    a, b = node(), node()
    op = irc(a, "op", "invite-notify")
    op.send("JOIN #club\r\nMODE #club +i")
    op.expect(r" MODE #club \+i")
    guest = irc(b, "guest")
    watcher = irc(b, "watcher")
    watcher.send("MONITOR + late")
    watcher.expect(r" 731 watcher :late")
    sees(op, "guest")
    guest.send("JOIN #club")
    guest.expect(r" 473 guest #club ")  # invite-only, as the other node set it
    op.send("INVITE guest #club")
    op.expect(r" 341 op guest #club")
    guest.expect(r":op!\S+ INVITE guest :?#club")
    guest.send("JOIN #club")
    guest.expect(r" 366 guest #club ")
    op.expect(r":guest!\S+ JOIN #club")
    op.send("KICK #club guest :out")
    guest.expect(r":op!\S+ KICK #club guest :out")
    eventually(lambda: names(op, "#club") == {"op"}, "the kick reached the other node")
    late = irc(a, "late")
    watcher.expect(r" 730 watcher :late!")
    late.send("QUIT :bye")
    watcher.expect(r" 731 watcher :late")


def test_a_guarded_room_whose_members_died_with_their_node_takes_its_lines_along(
    node: Callable[..., Server],
) -> None:
    """The node that declares a dead node gone forgets, in Redis, the rooms it leaves
    empty: whoever creates a guarded one again (and becomes its operator) cannot read
    what its key kept from them."""
    a = node(expect_exit=None)
    b = node()
    amy = irc(a, "amy", CAPS)
    amy.send("JOIN #secret\r\nMODE #secret +k sesame\r\nPRIVMSG #secret :hidden")
    amy.expect(r"PRIVMSG #secret :hidden$")
    bob = irc(b, "bob", CAPS)
    sees(bob, "amy")
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    eventually(lambda: ison(bob, "amy") == set(), "amy's node is declared gone")
    bob.send("JOIN #secret")
    bob.expect(r" 366 bob #secret ")
    assert _history(bob, "CHATHISTORY LATEST #secret * 10") == []


def test_a_node_shows_redis_its_client_certificate(
    start_server: Callable[..., Server], tmp_path: Path, tls_files: TLSFiles
) -> None:
    """A Redis that asks for client certificates (``tls-auth-clients yes``) lets in the
    node that has ``--redis-cert``, and refuses the one that has none."""
    leaf = tls_files.ca.issue_cert("chatd-node")
    client_pem = tmp_path / "node.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    context = tls_files.client_context()
    leaf.configure_cert(context)  # for the fixture's own PING
    secure = RedisServer(
        tmp_path / "mtls",
        "--tls-ca-cert-file",
        str(tls_files.ca_file),
        tls=(tls_files.cert, tls_files.key, context),
        client_certs=True,
    )
    try:
        ca = ("--redis-ca", str(tls_files.ca_file))
        base = ("--irc-port", "0", "--ephemeral", "--redis", secure.url, *ca)
        good = start_server("reactor", *base, "--redis-cert", str(client_pem))
        irc(good, "alice")  # registered: the nick's lease was taken in Redis
        bare = start_server("reactor", *base)
        client = IrcClient(bare.host, bare.irc_port or 0)
        client.send("NICK bob\r\nUSER b 0 * :b")
        client.expect(r"FAIL NICK TEMPORARILY_UNAVAILABLE bob ", timeout=10)
    finally:
        secure.stop()


def test_a_room_that_ends_is_forgotten_in_redis_and_its_lines_expire(
    node: Callable[..., Server], redis: RedisServer
) -> None:
    a = node("--history-days", "1")
    amy = irc(a, "amy", CAPS)
    amy.send("JOIN #open\r\nTOPIC #open :t\r\nPRIVMSG #open :kept")
    amy.expect(r"PRIVMSG #open :kept$")
    amy.send("JOIN #closed\r\nMODE #closed +k key\r\nPRIVMSG #closed :gone")
    amy.expect(r"PRIVMSG #closed :gone$")
    rooms = "{chatd:g}:rooms"
    assert b"#open" in command(redis.port, "HKEYS", rooms)
    # A room's lines expire --history-days after its last line (1 day here).
    ttl = int(command(redis.port, "PTTL", "{chatd:r:#open}:log")[1:].split(b"\r")[0])
    assert 86_000_000 < ttl <= 86_400_000
    amy.send("PART #open\r\nPART #closed")
    amy.expect(r" PART #closed")
    amy.send("PING sync")
    amy.expect(r" PONG ")

    def forgotten() -> bool:
        return b"#" not in command(redis.port, "HKEYS", rooms)

    eventually(forgotten, "the ended rooms' saved state is deleted")
    # The open room's lines stay (anyone could have read them); the keyed one's go.
    assert command(redis.port, "EXISTS", "{chatd:r:#open}:log") == b":1\r\n"
    assert command(redis.port, "EXISTS", "{chatd:r:#closed}:log") == b":0\r\n"


def test_a_worker_that_dies_is_started_again(
    start_server: Callable[..., Server], redis: RedisServer
) -> None:
    import psutil

    server = start_server(
        "reactor",
        "--ephemeral",
        "--redis",
        redis.url,
        "--redis-lease",
        str(LEASE),
        "--workers",
        "2",
        "--irc-port",
        "0",
        allow=("ended unexpectedly",),
    )
    workers = psutil.Process(server.proc.pid).children()
    assert len(workers) == 2
    victim = workers[0]
    victim.kill()
    victim.wait(10)
    server.wait_for_stderr(r"worker \d \(pid \d+\) ended unexpectedly \(signal SIGKILL\)")

    def two_workers() -> bool:
        alive = psutil.Process(server.proc.pid).children()
        return len(alive) == 2 and victim.pid not in {p.pid for p in alive}

    eventually(two_workers, "the supervisor started a new worker")
    # Chat works across the workers again (whichever each connection lands on).
    clients = [server.client(f"user{i}") for i in range(6)]
    clients[0].send("back")
    for client in clients[1:]:
        client.expect(r"^user0: back$")
