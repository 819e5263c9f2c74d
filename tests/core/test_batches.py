"""The router's per-turn batches against immediate delivery: no sockets, a fake clock.

Two worlds run the same operations: one router delivers each event at once (the threaded
engine's way), the other collects room events and flushes them when the "turn" ends
(the reactor's and asyncio's). Before each operation the batching world calls
``catch_up`` on the member acting, as a session does before it handles input. What every
member receives must be the same lines, in the same order per room and per sender (and,
with one room, byte for byte the same stream), while the batching world makes one append
per member per turn.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.hub import Hub
from chatd.core.ids import Mint
from chatd.core.router import Handle, Router


class Look:
    """An encoder: one line per event naming its kind, room, source, role and text."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def encode(self, event: ev.Event, role: Role) -> bytes:
        self.calls += 1
        room = getattr(event, "room", "-")
        source = getattr(event, "source", None)
        nick = source.nick if isinstance(source, ev.Source) else "-"
        text = "/".join(getattr(event, "texts", ())) or getattr(event, "text", "") or ""
        return f"{self.name}|{type(event).__name__}|{room}|{nick}|{role.name}|{text}\n".encode()

    def encode_for(self, event: ev.Event, recipient: Handle) -> bytes:
        return self.encode(event, Role.OTHER)


class Box:
    """A local connection: every write is kept, and counted."""

    def __init__(self, uid: str, encoder: Look) -> None:
        self.uid = uid
        self.out = self
        self.transport = self
        self.encoder = encoder
        self.data = bytearray()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1

    def disconnect(self, detail: str) -> None:
        pass

    def lines(self) -> list[str]:
        """What the hub's events gave it (not its session's replies)."""
        return [x for x in self.data.decode().splitlines() if field(x, 1) != "Reply"]


class World:
    def __init__(self, batching: bool, members: int, looks: int = 2) -> None:
        self.stats: Counter[str] = Counter()
        self.router = Router(self.stats)
        self.router.batching = batching
        self.hub = Hub(self.router.deliver, clock=lambda: 1000.0, mint=Mint("aaaaa"))
        self.router.attach(self.hub)
        self.looks = [Look(f"d{i}") for i in range(looks)]
        self.boxes: list[Box] = []
        for i in range(members):
            box = Box(self.hub.mint.uid(), self.looks[i % looks])
            self.boxes.append(box)
            self.router.connect(box)
            self.hub.register(box.uid, f"m{i}", "u", "10.0.0.1")
        self.turn_end()

    def turn_end(self) -> None:
        self.router.flush_pending()

    def act(self, op: tuple[object, ...]) -> None:
        kind, who = op[0], op[1]
        assert isinstance(who, int)
        box = self.boxes[who]
        if box.uid not in self.hub.members:
            return
        self.router.catch_up(box)  # what a session does before it handles input
        if kind != "turn":  # the session's own reply to its command, before the hub acts
            box.write(f"-|Reply|-|{self.hub.members[box.uid].nick}|-|{kind}\n".encode())
        room = f"#r{op[2]}"
        other = self.boxes[op[3]] if len(op) > 3 else box  # type: ignore[index]
        try:
            if kind == "say":
                self.hub.say(box.uid, room, (f"{who}-{op[4]}",))  # type: ignore[str-bytes-safe]
            elif kind == "join":
                self.hub.join(box.uid, room)
            elif kind == "join_quiet":  # the line dialect's own room at registration
                self.hub.join(box.uid, room, echo=False)
            elif kind == "part":
                self.hub.part(box.uid, room, "bye")
            elif kind == "topic":
                self.hub.topic(box.uid, room, f"t{op[4]}")  # type: ignore[str-bytes-safe]
            elif kind == "kick":
                member = self.hub.members.get(other.uid)
                if member is not None:
                    self.hub.kick(box.uid, room, member.nick, "out")
            elif kind == "pm":
                member = self.hub.members.get(other.uid)
                if member is not None:
                    self.hub.private(box.uid, member.nick, f"p{op[4]}")  # type: ignore[str-bytes-safe]
            elif kind == "quit":  # as the service does when a connection ends
                self.hub.disconnect(box.uid, "gone")
                self.router.disconnect(box.uid)
            elif kind == "turn":
                self.turn_end()
        except err.HubError:
            pass


def ops(members: int, rooms: int) -> st.SearchStrategy[list[tuple[object, ...]]]:
    who = st.integers(0, members - 1)
    room = st.integers(0, rooms - 1)
    n = st.integers(0, 999)
    op = st.one_of(
        st.tuples(st.just("say"), who, room, who, n),
        st.tuples(st.just("say"), who, room, who, n),
        st.tuples(st.just("join"), who, room),
        st.tuples(st.just("join_quiet"), who, room),
        st.tuples(st.just("part"), who, room),
        st.tuples(st.just("topic"), who, room, who, n),
        st.tuples(st.just("kick"), who, room, who, n),
        st.tuples(st.just("pm"), who, room, who, n),
        st.tuples(st.just("quit"), who, room),
        st.tuples(st.just("turn"), who, room),
    )
    return st.lists(op, max_size=60)


def run(batching: bool, script: list[tuple[object, ...]], members: int) -> World:
    world = World(batching, members)
    for i in range(members):
        world.act(("join", i, 0))
    world.turn_end()
    for step in script:
        world.act(step)
    world.turn_end()
    return world


def field(line: str, index: int) -> str:
    return line.split("|")[index]


@settings(max_examples=100, deadline=None)
@given(ops(members=6, rooms=1))
def test_with_one_room_every_member_gets_the_same_stream_as_at_once(
    script: list[tuple[object, ...]],
) -> None:
    at_once, batched = run(False, script, 6), run(True, script, 6)
    for a, b in zip(at_once.boxes, batched.boxes, strict=True):
        assert bytes(b.data) == bytes(a.data)


@settings(max_examples=100, deadline=None)
@given(ops(members=6, rooms=3))
def test_with_several_rooms_order_holds_per_room_and_per_sender(
    script: list[tuple[object, ...]],
) -> None:
    at_once, batched = run(False, script, 6), run(True, script, 6)
    for a, b in zip(at_once.boxes, batched.boxes, strict=True):
        got, want = b.lines(), a.lines()
        assert sorted(got) == sorted(want)
        for index in (2, 3):  # the room; the sender
            for key in {field(line, index) for line in want}:
                if key == "-":
                    continue
                assert [x for x in got if field(x, index) == key] == [
                    x for x in want if field(x, index) == key
                ]


def test_a_turn_of_senders_and_joiners_costs_each_member_one_write() -> None:
    world = World(True, 50, looks=2)
    for i in range(50):
        world.act(("join", i, 0))
    world.turn_end()
    for box in world.boxes:
        box.writes = 0
        box.data.clear()
    calls = [look.calls for look in world.looks]
    for i in range(10):  # ten senders in one turn
        world.act(("say", i, 0, i, i))
    world.turn_end()
    # The other 40 members: one append each for the ten lines.
    assert [box.writes for box in world.boxes[10:]] == [1] * 40
    assert all(len(box.lines()) == 10 for box in world.boxes[10:])
    # A sender already had the lines before its own at its turn (catch_up), then the rest.
    # (Its reply is one more write.)
    assert all(box.writes <= 3 and len(box.lines()) == 9 for box in world.boxes[:10])
    # Each line is encoded once per encoder, not once per member.
    spent = [look.calls - before for look, before in zip(world.looks, calls, strict=True)]
    assert spent == [10, 10]
    assert world.stats["fanout_events"] >= 10


def test_a_join_storm_costs_each_member_one_write_per_turn() -> None:
    world = World(True, 0)
    members: list[Box] = []
    for i in range(100):
        box = Box(world.hub.mint.uid(), world.looks[i % 2])
        world.router.connect(box)
        world.hub.register(box.uid, f"j{i}", "u", "10.0.0.1")
        members.append(box)
    world.boxes = members
    for i in range(50):
        world.act(("join", i, 0))
    world.turn_end()
    for box in members:
        box.writes = 0
        box.data.clear()
    for i in range(50, 100):
        world.act(("join", i, 0))
    world.turn_end()
    # Those present get the 50 joins in one write; each joiner its own JOIN at once
    # (before its session writes anything else), then the later joins in one more write.
    assert all(box.writes == 1 and len(box.lines()) == 50 for box in members[:50])
    for k, box in enumerate(members[50:]):
        lines = box.lines()
        assert field(lines[0], 4) == Role.ACTOR.name and field(lines[0], 3) == f"j{50 + k}"
        assert len(lines) == 50 - k and box.writes == (2 if k == 49 else 3)  # + its reply


def test_events_not_for_one_room_never_overtake_a_pending_batch() -> None:
    world = World(True, 3)
    for i in range(3):
        world.act(("join", i, 0))
    world.turn_end()
    world.act(("say", 0, 0, 0, 1))
    world.act(("pm", 0, 0, 1, 2))  # to m1, after the room line it has not got yet
    lines = world.boxes[1].lines()
    assert [field(x, 1) for x in lines[-2:]] == ["Chat", "PrivateChat"]


class Capture:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def labeled_world(batching: bool) -> tuple[Router, Hub, list[Box]]:
    router = Router(Counter())
    router.batching = batching
    hub = Hub(router.deliver, clock=lambda: 1000.0, mint=Mint("aaaaa"))
    router.attach(hub)
    look = Look("d")
    boxes = []
    for i in range(3):
        box = Box(hub.mint.uid(), look)
        boxes.append(box)
        router.connect(box)
        hub.register(box.uid, f"m{i}", "u", "10.0.0.1")
    for box in boxes[:2]:
        hub.join(box.uid, "#r")
    router.flush_pending()
    return router, hub, boxes


def kill_then_labeled_pm(batching: bool) -> tuple[str, str]:
    """m0 (oper, labeled) KILLs m1 (who shares #r), then sends a labeled PRIVMSG to m2."""
    router, hub, (op, victim, other) = labeled_world(batching)
    hub.members[op.uid].modes = "o"
    router.catch_up(op)
    first, second = Capture(), Capture()
    op.out = first  # the session's labeled-response capture for the KILL
    hub.kill(op.uid, "m1", "bye")
    router.disconnect(victim.uid)
    op.out = second  # ... and for the PRIVMSG that follows in the same read
    hub.private(op.uid, "m2", "hi")
    op.out = op
    router.flush_pending()
    return first.data.decode(), second.data.decode()


def test_a_kill_victims_quit_lands_in_the_killers_labeled_kill_response() -> None:
    at_once = kill_then_labeled_pm(False)
    batched = kill_then_labeled_pm(True)
    assert [field(x, 1) for x in at_once[0].splitlines()] == ["Quit"]
    assert at_once[1] == ""
    # The operator acts: the QUIT, published under the victim's name and batched, still
    # reaches the operator at once, inside the KILL's labeled response.
    assert batched == at_once
