"""chatd nodes on a real 3-master Redis Cluster (Debian's ``redis-server``, made with
``redis-cli --cluster create``): rooms on several shards, and a room's slot moving."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redisproc import RedisCluster
from test_chathistory import _tag
from test_nodes import LEASE, SETTLE, _history, chat_resumes, irc, names, sees

from chatd.cluster.slots import keyslot
from chatwire import Client, IrcClient, Server

pytestmark = pytest.mark.timeout(120)

ROOMS = ("#lobby", "#x1", "#x2", "#x3")
CAPS = "batch server-time message-tags echo-message draft/chathistory"


@pytest.fixture
def rc(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "rc")
    yield cluster
    cluster.stop()


@pytest.fixture
def node(start_server: Callable[..., Server], rc: RedisCluster) -> Callable[..., Server]:
    def start(master: int = 0) -> Server:
        return start_server(
            "reactor",
            "--irc-port",
            "0",
            "--ephemeral",
            "--redis",
            rc.nodes[master].url,
            "--redis-lease",
            str(LEASE),
        )

    return start


def _both_in(node: Callable[..., Server], room: str) -> tuple[Client, IrcClient]:
    """A line user on a node of the first master and an IRC user on one of the third,
    both in ``room``."""
    a, b = node(0), node(2)
    alice = a.client("alice")
    bob = irc(b, "bob", CAPS)
    sees(bob, "alice")
    bob.send(f"JOIN {room}")
    bob.expect(r" 366 ")
    alice.send(f"/join {room}")
    alice.expect(rf"^\* you joined {room}")
    bob.expect(rf" :alice!\S+ JOIN {room}$")
    return alice, bob


def _slot(room: str) -> int:
    return keyslot("{chatd:r:" + room + "}:log")


def test_rooms_on_several_shards_are_one_chat(
    node: Callable[..., Server], rc: RedisCluster
) -> None:
    owners = {rc.owner(_slot(room)).port for room in ROOMS}
    assert len(owners) > 1, "the test's rooms should live on several masters"
    a, b = node(0), node(1)
    alice = a.client("alice")
    bob = irc(b, "bob", CAPS)
    sees(bob, "alice")
    other = IrcClient(b.host, b.irc_port or 0)
    other.send("NICK alice\r\nUSER x 0 * :x")
    other.expect(r" 433 \* alice ")
    bob.send("JOIN " + ",".join(ROOMS))
    bob.expect(r" 366 bob #x3 ")
    alice.expect(r"^\* bob joined #lobby")
    for room in ROOMS:
        if room != "#lobby":  # a line user starts in #lobby (and is in one room at a time)
            alice.send(f"/join {room}")
            alice.expect(rf"^\* you joined {room}")
            bob.expect(rf" :alice!\S+ JOIN {room}$")
        alice.send(f"hello {room}")
        bob.expect(rf"PRIVMSG {room} :hello {room}$")
        bob.send(f"PRIVMSG {room} :back in {room}")
        alice.expect(rf"^bob: back in {room}$")
    # History comes from the room's stream on its own shard.
    got = _history(bob, "CHATHISTORY LATEST #x2 * 5")
    assert [line.rsplit(":", 1)[-1] for line in got] == ["hello #x2", "back in #x2"]
    bob.send("PRIVMSG alice :private")
    alice.expect(r"^bob \(private\): private$")
    assert names(bob, "#x3") == {"alice", "bob"}  # the line user's last room


def test_a_room_whose_slot_moves_to_another_master_keeps_chatting(
    node: Callable[..., Server], rc: RedisCluster
) -> None:
    room = "#x2"
    alice, bob = _both_in(node, room)
    alice.send("before the move")
    first = bob.expect(r"PRIVMSG #x2 :before the move$")[-1]

    slot = _slot(room)
    source = rc.owner(slot)
    target = next(n for n in rc.nodes if n is not source)
    stream = "{chatd:r:" + room + "}:log"
    rc.move(slot, [stream], target)
    assert rc.owner(slot) is target

    chat_resumes(alice, bob, "#x2", "once the room's slot has moved", count=20)
    # The room's history moved with its stream.
    lines = _history(bob, f"CHATHISTORY AROUND #x2 msgid={_tag(first, 'msgid')} 1")
    assert [line.rsplit(":", 1)[-1] for line in lines] == ["before the move"]


def test_lines_sent_while_a_room_s_slot_migrates_all_arrive(
    node: Callable[..., Server], rc: RedisCluster
) -> None:
    """Mid-migration the room's stream is on the new master and its slot still on the old
    one, which answers ``ASK``: the publish is sent on to the new master (``ASKING``);
    the subscribers hear of it once the slot has moved, from the stream. A line sent
    after the move meets ``MOVED`` instead (on a loaded machine the move can finish
    first): it is sent again once the link is rebuilt, and a subscriber that had not
    resubscribed on the new master yet finds it by its quiet channel's check of the
    stream's tail (nothing follows the last line). The link is rebuilt only once every
    publish sent before the first ``MOVED`` is answered, so none is dropped unanswered;
    a stream read that meets ``ASK`` is sent on too, and one that meets ``MOVED`` is not
    taken for lost lines. Either way, every line arrives."""
    room = "#x2"
    alice, bob = _both_in(node, room)
    slot = _slot(room)
    target = next(n for n in rc.nodes if n is not rc.owner(slot))
    rc.start_move(slot, ["{chatd:r:" + room + "}:log"], target)
    for i in range(10):
        alice.send(f"during {i}")
    rc.finish_move(slot, target)
    got = [
        line.rsplit(":", 1)[-1]
        for line in bob.expect(r"PRIVMSG #x2 :during 9$", timeout=SETTLE)
        if "PRIVMSG #x2 :during" in line
    ]
    assert got == [f"during {i}" for i in range(10)]
    alice.send("/stats")
    stats = alice.expect(r"^\* stats: ")[-1]
    # Sent on (ASK), or sent again after a rebuild (MOVED): one of the two paths was taken.
    assert re.search(r"\bcluster_(asks|redirects)=\d", stats), stats
