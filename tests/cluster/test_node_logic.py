"""The cluster node's logic, driven directly: no Redis, no sockets.

A :class:`ClusterNode` speaks RESP without I/O, so these tests read the commands it
queued (``node.cmd.out``) and feed it replies and pushes as Redis would send them: a
lost message, a duplicate, its own echo, a burst, a dead node's notice.
"""

from __future__ import annotations

import json
from collections import Counter

import hiredis
import pytest

from chatd.cluster import codec
from chatd.cluster.node import SPLIT_REASON, ClusterNode
from chatd.core import events as ev
from chatd.core import targets as tg
from chatd.core.hub import Hub
from chatd.core.ids import Mint
from chatd.core.router import Router

ME = "aaaaa"
OTHER = "bbbbb"


def resp(value: object) -> bytes:
    """``value`` as Redis would send it (bulk strings, integers, arrays)."""
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    data = value.encode() if isinstance(value, str) else value
    assert isinstance(data, bytes)
    return b"$%d\r\n%s\r\n" % (len(data), data)


class World:
    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self.router = Router(self.stats)
        self.delivered: list[tuple[ev.Event, tg.Target]] = []
        self.hub = Hub(self._publish, mint=Mint(ME), clock=lambda: 1000.0)
        self.router.attach(self.hub)
        self.node = ClusterNode(self.hub, self.router, self._deliver, self.stats, node=ME, lease=3)
        self.node.up = True  # as if connected; what it sends is read from cmd.out

    def _publish(self, event: ev.Event, target: tg.Target) -> None:
        self.router.deliver(event, target)
        self.node.publish(event, target)

    def _deliver(self, event: ev.Event, target: tg.Target) -> None:
        self.delivered.append((event, target))
        self.router.deliver(event, target)

    def sent(self) -> list[list[bytes]]:
        """The commands queued since the last call, parsed."""
        reader = hiredis.Reader()
        reader.feed(self.node.cmd.data_to_send())
        commands = []
        while (command := reader.gets()) is not False:
            commands.append(command)
        return commands

    def push(self, channel: str, entry_id: str, prev: str, payload: str) -> None:
        self.node.sub.receive_data(resp([b"smessage", channel, f"{entry_id} {prev} {payload}"]))

    def reply(self, value: object) -> None:
        self.node.cmd.receive_data(resp(value))

    def answer(self, commands: list[list[bytes]]) -> None:
        """Answer ``commands`` (in the order sent) as Redis would: an entry id to a
        publish, an empty stream to a read."""
        for command in commands:
            self.reply("1-0" if command[0] == b"EVALSHA" else [])


def published(command: list[bytes]) -> object:
    """The payload of a publish (``EVALSHA sha numkeys keys... channel payload ...``)."""
    assert command[0] == b"EVALSHA"
    return json.loads(command[3 + int(command[2]) + 1])


def registered(uid: str, nick: str) -> str:
    source = ev.Source(nick, "u", "h", False, uid)
    return codec.encode(OTHER, ev.Registered(source, at=1.0), tg.ToNobody())


@pytest.fixture
def world() -> World:
    return World()


def test_every_event_kind_survives_the_codec() -> None:
    s = ev.Source("bob", "u", "h", True, "bbbbb1")
    line = ev.ChatLine("hi", "m", 1.5, True)
    samples: list[ev.Event] = [
        ev.Chat(s, "#r", (line,), ev.ChatKind.ACTION, (("+typing", "active"),), "o"),
        ev.PrivateChat(s, "al", "aaaaa1", (line,), ev.ChatKind.NOTICE),
        ev.Registered(s, "real", at=2.0),
        ev.Joined(s, "#r", 3, "real", "away", 1, True, at=2.0),
        ev.Parted(s, "#r", "bye", at=2.0),
        ev.Quit(s, "gone", True, at=2.0),
        ev.Killed(s, s, "why", at=2.0),
        ev.NickChanged(s, "bobby", at=2.0),
        ev.Kicked(s, "#r", s, "out", at=2.0),
        ev.TopicChanged(s, "#r", "topic", at=2.0),
        ev.ModeChanged(s, "#r", (ev.ModeChange("+", "k", "x"), ev.ModeChange("-", "l")), at=2.0),
        ev.UserModeChanged(s, "+iw", at=2.0),
        ev.Invited(s, s, "#r", at=2.0),
        ev.AwayChanged(s, None, at=2.0),
        ev.RealnameChanged(s, "new", at=2.0),
        ev.CameOnline(s, at=2.0),
        ev.WentOffline("bob", at=2.0),
        ev.Wallops(s, "hey", at=2.0),
        ev.RoomRestored("#r", 1.0, bans=(("*!*@x", "bob", 2.0),), limit=5, password="k"),
    ]
    targets: list[tg.Target] = [
        tg.ToRoom("#r", "x"),
        tg.ToRooms(("#a", "#b"), "x", "y", "k"),
        tg.ToRoomOperators("#r", None, True),
        tg.ToWatchers("bob"),
        tg.ToMember("aaaaa1"),
        tg.ToUserMode("w"),
        tg.ToNobody(),
    ]
    for i, event in enumerate(samples):
        target = targets[i % len(targets)]
        payload = codec.encode(OTHER, event, target)
        assert codec.origin(payload) == OTHER
        assert codec.decode(payload) == (OTHER, event, target)
    with pytest.raises(codec.CodecError):
        codec.decode('["x","NoSuchEvent",{},"ToNobody",{}]')
    with pytest.raises(codec.CodecError):
        codec.decode('["x","Quit",{"source":7},"ToNobody",{}]')


def test_a_lost_message_is_read_from_the_stream_and_applied_in_order(world: World) -> None:
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    assert state.last == "1-0"
    # 2-0 is lost on the way; 3-0 names it as its predecessor.
    world.push(state.name, "3-0", "2-0", registered("bbbbb3", "third"))
    assert "third" not in world.hub.nicks
    (command,) = world.sent()
    assert command == [b"XRANGE", state.stream.encode(), b"(1-0", b"(3-0"]
    world.push(state.name, "4-0", "3-0", registered("bbbbb4", "fourth"))  # held meanwhile
    world.reply([["2-0", ["p", registered("bbbbb2", "second"), "v", "1-0"]]])
    assert list(world.hub.nicks) == ["first", "second", "third", "fourth"]
    assert state.last == "4-0" and state.held is None
    assert world.stats["cluster_gaps"] == 1 and world.stats["cluster_gaps_lost"] == 0


def test_a_gap_the_stream_cannot_fill_is_counted_and_the_state_resynced(world: World) -> None:
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    world.push(state.name, "9-0", "8-0", registered("bbbbb9", "ninth"))
    world.sent()
    world.reply([])  # trimmed away, or Redis restarted empty
    assert world.stats["cluster_gaps_lost"] == 1
    assert "ninth" in world.hub.nicks  # what came after the gap is applied
    # ... and every node is asked for its members again.
    (burst,) = world.sent()
    body = published(burst)
    assert isinstance(body, list) and body[1] == "!burst" and body[2]["want"] is True


def test_duplicates_and_own_echoes_are_dropped_but_own_echoes_advance(world: World) -> None:
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    assert world.stats["cluster_duplicates"] == 1
    mine = codec.encode(
        ME, ev.Registered(ev.Source("me", "u", "h", False, "aaaaa1")), tg.ToNobody()
    )
    world.push(state.name, "2-0", "1-0", mine)
    assert "me" not in world.hub.nicks and state.last == "2-0"
    world.push(state.name, "3-0", "2-0", registered("bbbbb3", "third"))
    assert "third" in world.hub.nicks and not world.sent()


def test_a_bad_payload_costs_that_payload_only(world: World) -> None:
    state = world.node.state
    world.push(state.name, "1-0", "0-0", '["bbbbb","Quit",{"source":1},"ToNobody",{}]')
    world.push(state.name, "2-0", "1-0", registered("bbbbb2", "second"))
    assert world.stats["cluster_bad_payloads"] == 1 and "second" in world.hub.nicks


def _burst(node: str, members: list[list[object]], *, want: bool = False) -> str:
    rooms = [
        json.dumps(
            {
                "name": "#r",
                "created": 5.0,
                "topic": "t",
                "topic_by": "x",
                "topic_at": 6.0,
                "modes": "mnt",
                "password": None,
                "limit": None,
                "lists": {"b": [], "e": [], "I": []},
            }
        )
    ]
    body = {"members": members, "rooms": rooms, "final": True, "want": want}
    return json.dumps([node, "!burst", body])


def test_a_burst_makes_that_node_s_members_what_it_says(world: World) -> None:
    state = world.node.state
    bob = ["bbbbb1", "bob", "u", "h", "Bob", "i", None, 1.0, [["#r", 1]]]
    carol = ["bbbbb2", "carol", "u", "h", "Carol", "", "away", 1.0, [["#r", 0]]]
    world.push(state.name, "1-0", "0-0", _burst(OTHER, [bob, carol], want=True))
    hub = world.hub
    room = hub.rooms["#r"]
    assert room.topic == "t" and room.modes == "mnt"
    assert room.members == {"bbbbb1": 1, "bbbbb2": 0}
    assert hub.members["bbbbb1"].modes == "i" and hub.members["bbbbb2"].away == "away"
    # It asked for ours: this node bursts back (with no members, but it answers).
    (answer,) = world.sent()
    body = published(answer)
    assert isinstance(body, list) and body[1] == "!burst" and body[2]["want"] is False
    # A later burst without carol, and bob renamed and voiced rather than opped.
    bob2 = ["bbbbb1", "robert", "u", "h", "Bob", "i", None, 1.0, [["#r", 2]]]
    world.push(state.name, "2-0", "1-0", _burst(OTHER, [bob2]))
    assert "carol" not in hub.nicks and hub.find("robert") is not None
    assert room.members == {"bbbbb1": 2}
    quits = [e for e, _ in world.delivered if isinstance(e, ev.Quit)]
    assert [q.reason for q in quits] == [SPLIT_REASON]


def test_a_dead_node_s_members_quit_everywhere(world: World) -> None:
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "bob"))
    world.push(state.name, "2-0", "1-0", registered("ccccc1", "carol"))
    world.push(state.name, "3-0", "2-0", json.dumps(["ccccc", "!gone", OTHER]))
    assert set(world.hub.nicks) == {"carol"}
    # The heartbeat asks Redis about carol's node (the only other one it knows now).
    world.node.tick()
    commands = world.sent()
    reaps = [c for c in commands if c[0] == b"EVALSHA" and c[3].endswith(b":log")]
    assert len(reaps) == 1 and reaps[0][4].endswith(b":alive:ccccc")
    # This node declares it gone itself: its own notice is not echoed to it, so it
    # applies the departure at once.
    assert [c[0] for c in commands] == [b"PEXPIRE", b"EVALSHA", b"EVALSHA"]
    world.reply(1)  # the state stream's expiry renewed
    world.reply([0, []])  # the heartbeat's answer: not reaped, no lease lost
    world.reply(1)
    assert world.hub.nicks == {}


class _Out:
    def write(self, data: bytes) -> None:
        pass


class _Encoder:
    def encode(self, event: ev.Event, role: ev.Role) -> bytes:
        return b"x"

    def encode_for(self, event: ev.Event, recipient: object) -> bytes:
        return b"x"


class _Handle:
    """A local connection as the router sees it (it writes nowhere)."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.out = _Out()
        self.encoder = _Encoder()

    def disconnect(self, detail: str) -> None:
        pass


def local_member(world: World, uid: str, nick: str) -> None:
    world.router.connect(_Handle(uid))  # type: ignore[arg-type]
    world.hub.register(uid, nick, "u", "h")
    world.node.sub.data_to_send()
    world.answer(world.sent())


def test_a_room_is_followed_only_while_it_has_local_members(world: World) -> None:
    hub, node = world.hub, world.node
    local_member(world, "aaaaa1", "me")
    hub.join("aaaaa1", "#side")
    sub = world.node.sub.data_to_send()
    assert b"SSUBSCRIBE" in sub and b"#side" in sub
    cmds = world.sent()
    # The room's position is asked before the JOIN is published.
    assert cmds[0][0] == b"XREVRANGE" and cmds[1][0] == b"EVALSHA"
    assert "#side" in node.rooms
    hub.part("aaaaa1", "#side")
    assert b"SUNSUBSCRIBE" in world.node.sub.data_to_send()
    assert "#side" not in node.rooms


def test_leaving_and_entering_a_room_in_one_turn_is_not_a_moved_slot(world: World) -> None:
    """The answer to our own SUNSUBSCRIBE, and the first subscription's acknowledgement,
    belong to the earlier subscription: the new one waits for its own."""
    hub, node = world.hub, world.node
    local_member(world, "aaaaa1", "me")
    hub.join("aaaaa1", "#side")
    hub.part("aaaaa1", "#side")
    hub.join("aaaaa1", "#side")
    node.sub.data_to_send()
    commands = world.sent()
    assert [c[0] for c in commands].count(b"XREVRANGE") == 2
    channel = node.rooms["#side"]
    name = channel.name
    world.answer(commands)  # both baselines: an empty stream
    for kind in (b"ssubscribe", b"sunsubscribe"):
        node.sub.receive_data(resp([kind, name, 1]))
    assert channel.waiting == 1 and channel.held == []  # still waiting for its own ack
    assert not node.sub.data_to_send() and world.stats["cluster_resubscribes"] == 0
    node.sub.receive_data(resp([b"ssubscribe", name, 1]))
    (catch_up,) = world.sent()
    assert catch_up[0] == b"XRANGE" and channel.waiting == 0


def test_another_node_s_member_taking_our_member_s_nick_renames_ours(world: World) -> None:
    """A remote registration was published after its node took the nick's lease: our
    member, which holds the nick here, lost its lease while Redis was out of reach."""
    hub = world.hub
    local_member(world, "aaaaa1", "alice")
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "alice"))
    assert hub.nicks["alice"] == "bbbbb1"
    assert hub.find("Guestaaaaa1") is hub.members["aaaaa1"]
    (published_rename,) = [c for c in world.sent() if c[0] == b"EVALSHA"]
    body = published(published_rename)
    assert isinstance(body, list) and body[1] == "NickChanged"
    # The other node's alice quits: the nick goes, our guest stays.
    bob = hub.members["bbbbb1"]
    gone = codec.encode(OTHER, ev.Quit(bob.source, "bye"), tg.ToRooms(()))
    world.push(state.name, "2-0", "1-0", gone)
    assert "alice" not in hub.nicks and hub.nicks["guestaaaaa1"] == "aaaaa1"


def test_a_burst_naming_our_member_s_nick_lists_theirs_as_a_guest_until_settled(
    world: World,
) -> None:
    hub = world.hub
    local_member(world, "aaaaa1", "alice")
    state = world.node.state
    theirs = ["bbbbb1", "alice", "u", "h", "", "", None, 1.0, []]
    world.push(state.name, "1-0", "0-0", _burst(OTHER, [theirs]))
    assert hub.nicks["alice"] == "aaaaa1"
    assert hub.members["bbbbb1"].nick == "Guestbbbbb1"
    # Our heartbeat finds our lease taken (by theirs): ours becomes a guest, and theirs
    # gets its nick back here.
    world.node._lease_lost("aaaaa1")
    (claim,) = world.sent()
    assert claim[3].endswith(b":nick:guestaaaaa1")
    world.reply(1)  # the guest nick's lease is ours
    assert hub.members["aaaaa1"].nick == "Guestaaaaa1"
    assert hub.nicks["alice"] == "bbbbb1"


def test_a_redis_that_answers_no_heartbeat_for_long_is_taken_for_gone(world: World) -> None:
    """No reset ever comes from a silent partition: after 30 s of heartbeats (at lease 3,
    one every 0.6 s) without an answer, the node rebuilds its link."""
    node = world.node
    broken: list[str] = []
    node.on_change = lambda: broken.append(node.broken or "")
    for _ in range(50):
        node.tick()
    assert not broken
    node.tick()
    assert broken and "no heartbeat" in broken[0]


def is_refresh(world: World, command: list[bytes]) -> bool:
    """The heartbeat's script: its first key is this node's alive key."""
    return command[0] == b"EVALSHA" and command[3] == world.node._alive_key(ME).encode()


def heartbeat(world: World, tail: str | None = None, entries: object = None) -> list[bytes]:
    """One tick, every command answered as Redis would: the refresh with nothing lost,
    a stream's tail with ``tail``, a stream read with ``entries``. Returns the names of
    the commands sent (XREVRANGE, XRANGE...)."""
    world.node.tick()
    names = []
    pending = world.sent()
    while pending:
        for command in pending:
            names.append(command[0].decode())
            if command[0] == b"XREVRANGE":
                world.reply([[tail, ["p", "x", "v", "y"]]] if tail else [])
            elif command[0] == b"XRANGE":
                world.reply(entries if entries is not None else [])
            elif is_refresh(world, command):
                world.reply([0, []])  # not reaped, no lease lost
            else:
                world.reply(0)
        pending = world.sent()
    return names


def test_a_lost_last_message_is_found_by_a_quiet_channel_s_check_of_its_stream(
    world: World,
) -> None:
    """Nothing follows the lost message, so no gap shows in what follows: the channel,
    quiet for a heartbeat, compares its last entry with the stream's, once."""
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    assert "XREVRANGE" not in heartbeat(world)  # it just moved: not quiet yet
    lost = [["2-0", ["p", registered("bbbbb2", "second"), "v", "1-0"]]]
    sent = heartbeat(world, tail="2-0", entries=lost)
    assert sent.count("XREVRANGE") == 1 and sent.count("XRANGE") == 1
    assert list(world.hub.nicks) == ["first", "second"]
    assert state.last == "2-0" and state.held is None
    assert world.stats["cluster_gaps_at_tail"] == 1 and world.stats["cluster_gaps_lost"] == 0
    # The message itself, arriving late after all, is a duplicate.
    world.push(state.name, "2-0", "1-0", registered("bbbbb2", "second"))
    assert world.stats["cluster_duplicates"] == 1


def test_a_quiet_channel_is_checked_once_not_at_every_heartbeat(world: World) -> None:
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    checks = [heartbeat(world, tail="1-0").count("XREVRANGE") for _ in range(5)]
    assert checks == [0, 1, 0, 0, 0]
    assert world.stats["cluster_gaps"] == 0
    world.push(state.name, "2-0", "1-0", registered("bbbbb2", "second"))
    checks = [heartbeat(world, tail="2-0").count("XREVRANGE") for _ in range(3)]
    assert checks == [0, 1, 0]  # quiet again at a new last entry: one more check


def test_a_channel_that_moved_while_its_tail_was_asked_for_is_left_to_its_messages(
    world: World,
) -> None:
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    heartbeat(world)
    world.node.tick()
    commands = world.sent()
    assert [c[0] for c in commands].count(b"XREVRANGE") == 1
    world.push(state.name, "2-0", "1-0", registered("bbbbb2", "second"))  # meanwhile
    for command in commands:
        if command[0] == b"XREVRANGE":
            world.reply([["2-0", ["p", "x", "v", "y"]]])
        elif is_refresh(world, command):
            world.reply([0, []])
        else:
            world.reply(0)
    assert world.sent() == [] and world.stats["cluster_gaps"] == 0
    assert list(world.hub.nicks) == ["first", "second"]


def test_two_topics_set_at_once_end_the_same_on_every_node(world: World) -> None:
    """Ours and another node's topic, set at once: whichever Redis ordered last is the
    room's topic everywhere, here too, though we applied ours first."""
    hub = world.hub
    local_member(world, "aaaaa1", "me")
    hub.join("aaaaa1", "#r")
    hub.topic("aaaaa1", "#r", "ours")
    commands = world.sent()
    mine = next(published(c) for c in commands if c[0] == b"EVALSHA" and b"TopicChanged" in c[-3])
    world.answer(commands)
    state = world.node.state
    bob = ev.Source("bob", "u", "h", False, "bbbbb1")
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "bob"))
    joined = ev.Joined(bob, "#r", 2, at=2.0)
    world.push(state.name, "2-0", "1-0", codec.encode(OTHER, joined, tg.ToRoom("#r")))
    # Redis ordered the other node's topic first, then ours: ours is the last word.
    theirs = ev.TopicChanged(bob, "#r", "theirs", at=3.0)
    world.push(state.name, "3-0", "2-0", codec.encode(OTHER, theirs, tg.ToRoom("#r")))
    assert hub.rooms["#r"].topic == "theirs"
    world.push(state.name, "4-0", "3-0", json.dumps(mine, separators=(",", ":")))
    assert hub.rooms["#r"].topic == "ours"
    assert world.stats["cluster_settled"] == 1
    # A later change from another node is applied as usual.
    world.push(state.name, "5-0", "4-0", codec.encode(OTHER, theirs, tg.ToRoom("#r")))
    assert hub.rooms["#r"].topic == "theirs"


# ===================================================================== a slot that moves


def error(text: str) -> bytes:
    """A Redis error reply."""
    return b"-" + text.encode() + b"\r\n"


def say(world: World, room: str, text: str) -> None:
    """Our member ``me`` says ``text`` in ``room``: the node publishes it."""
    source = ev.Source("me", "u", "h", False, "aaaaa1")
    line = ev.ChatLine(text, "m" + text, 1.0, False)
    world.node.publish(ev.Chat(source, room, (line,)), tg.ToRoom(room, "aaaaa1"))


def said(commands: list[list[bytes]]) -> list[str]:
    """The texts of the chat publishes among ``commands``."""
    texts = []
    for command in commands:
        body = published(command)
        assert isinstance(body, list)
        texts += [line["text"] for line in body[2]["lines"]]
    return texts


def test_a_moved_slot_rebuilds_the_link_only_once_every_command_sent_is_answered(
    world: World,
) -> None:
    """The answers after the first ``MOVED`` come in: a publish that met ``MOVED`` too
    is sent again after the rebuild, one that was applied is not, and one made while
    waiting goes out after them, in order. Before, the link was dropped at the first
    ``MOVED``: the publishes still unanswered were lost with it."""
    node = world.node
    asked: list[str | None] = []
    node.on_change = lambda: asked.append(node.moved)
    for text in ("one", "two", "three"):
        say(world, "#x" if text != "three" else "#elsewhere", text)
    sent = world.sent()
    assert said(sent) == ["one", "two", "three"]
    world.node.cmd.receive_data(error("MOVED 1234 127.0.0.1:7001"))
    assert asked and "MOVED 1234" in (asked[0] or "")
    assert not node.settled  # two answers still due: the engine waits for them
    say(world, "#x", "four")  # made meanwhile: it waits for the new link
    assert world.sent() == []
    world.node.cmd.receive_data(error("MOVED 1234 127.0.0.1:7001"))
    world.reply("5-0")  # #elsewhere's slot did not move: applied
    assert node.settled and len(asked) == 1
    assert world.stats["cluster_redirects"] == 1 and world.stats["cluster_publish_errors"] == 0
    node.lost()  # the engine rebuilds the link
    assert node.moved is None
    node.connected(None, None, 0)
    resent = [c for c in world.sent() if c[0] == b"EVALSHA" and b"#x" in c[3]]
    assert said(resent) == ["one", "two", "four"]


def test_a_stream_read_that_meets_moved_loses_nothing(world: World) -> None:
    """A repair read answered ``MOVED`` is not an empty stream: ``last`` stays where it
    was, nothing is counted lost, and the reconnect reads the stream from there."""
    state = world.node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    world.push(state.name, "3-0", "2-0", registered("bbbbb3", "third"))
    (read,) = world.sent()
    assert read[0] == b"XRANGE"
    world.node.cmd.receive_data(error("MOVED 1234 127.0.0.1:7001"))
    assert world.stats["cluster_gaps_lost"] == 0 and state.last == "1-0"
    assert world.sent() == []  # no burst asked for: nothing is known lost
    world.node.lost()
    world.node.connected(None, None, 0)
    world.node.sub.receive_data(resp([b"ssubscribe", state.name, 1]))
    catch_up = [c for c in world.sent() if c[0] == b"XRANGE"]
    assert catch_up == [[b"XRANGE", state.stream.encode(), b"(1-0", b"+"]]


def test_an_ask_is_followed_to_the_importing_master_for_reads_and_publishes(
    world: World,
) -> None:
    """Mid-migration the key is on the importing master, its slot not yet: the command
    is sent there after ``ASKING``, its answer goes to the command's callback, and the
    link is not rebuilt."""
    node = world.node
    node.use_topology(2, [0] * 16384, ["127.0.0.1:7000", "127.0.0.1:7001"])
    node.on_change = lambda: pytest.fail("an ASK is not a moved slot")
    state = node.state
    world.push(state.name, "1-0", "0-0", registered("bbbbb1", "first"))
    world.push(state.name, "3-0", "2-0", registered("bbbbb3", "third"))
    say(world, "#x", "hello")
    (read, publish) = world.sent()
    assert read[0] == b"XRANGE" and publish[0] == b"EVALSHA"
    for _ in (read, publish):
        node.cmd.receive_data(error("ASK 1234 127.0.0.1:7001"))
    importing = node.shards[1].cmd
    reader = hiredis.Reader()
    reader.feed(importing.data_to_send())
    sent_on = []
    while (command := reader.gets()) is not False:
        sent_on.append(command)
    assert [c[0] for c in sent_on] == [b"ASKING", b"XRANGE", b"ASKING", b"EVALSHA"]
    assert sent_on[1] == read and sent_on[3] == publish
    importing.receive_data(resp("OK"))
    importing.receive_data(resp([["2-0", ["p", registered("bbbbb2", "second"), "v", "1-0"]]]))
    importing.receive_data(resp("OK") + resp("9-0"))
    assert list(world.hub.nicks) == ["first", "second", "third"]
    assert world.stats["cluster_asks"] == 2 and world.stats["cluster_gaps_lost"] == 0
    assert node.moved is None and node.settled


def test_a_nick_claimed_while_the_link_waits_to_be_rebuilt_is_asked_on_the_new_one(
    world: World,
) -> None:
    """A claim made while the link waits, or answered ``MOVED`` itself, is not failed:
    the nickname is asked for again on the rebuilt link."""
    node = world.node
    first = node.claim("aaaaa1", "early")
    (claim,) = world.sent()
    node.cmd.receive_data(error("MOVED 1234 127.0.0.1:7001"))
    assert node.moved is not None and not first.done()
    second = node.claim("aaaaa2", "late")
    assert world.sent() == [] and not second.done()
    node.lost()
    node.connected(None, None, 0)
    asked = [c for c in world.sent() if c[0] == b"EVALSHA" and b":nick:" in c[3]]
    assert [c[3].rsplit(b":", 1)[-1] for c in asked] == [b"early", b"late"]


def test_a_node_drained_while_its_link_waits_sends_what_waited_then_the_quits(
    world: World,
) -> None:
    """No new link is coming: what waited goes out on the old one, before the quits; a
    publish that meets ``MOVED`` now is counted unsent, not kept for a link never made."""
    node = world.node
    local_member(world, "aaaaa1", "me")
    say(world, "#x", "one")
    world.sent()
    node.cmd.receive_data(error("MOVED 1234 127.0.0.1:7001"))
    say(world, "#x", "two")
    assert world.sent() == []
    assert node.drain("server shutting down") == 1
    assert node.moved is None
    sent = world.sent()
    kinds = [published(c)[1] for c in sent]  # type: ignore[index]
    assert kinds == ["Chat", "Chat", "Quit"]
    assert said(sent[:2]) == ["one", "two"]
    for _ in sent:
        node.cmd.receive_data(error("MOVED 1234 127.0.0.1:7001"))
    assert world.stats["cluster_unsent"] == 3 and node.settled and node.moved is None


def test_past_the_resend_bound_a_publish_made_while_waiting_is_dropped_not_reordered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chatd.cluster.node.MAX_RESEND", 3)  # "first", "a", "b"
    node = world.node
    say(world, "#elsewhere", "first")
    world.sent()
    node.cmd.receive_data(error("MOVED 1234 127.0.0.1:7001"))
    for text in ("a", "b", "c"):
        say(world, "#x", text)
    assert world.sent() == [] and world.stats["cluster_unsent"] == 1
    node.lost()
    node.connected(None, None, 0)
    resent = [c for c in world.sent() if c[0] == b"EVALSHA" and b"#x" in c[3]]
    assert said(resent) == ["a", "b"]
