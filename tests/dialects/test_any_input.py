"""Any input, from either dialect, against real sessions without sockets (issue 16, item 1).

Hypothesis drives every IRC command and every line command with generated parameters
(empty words, spaces, colons, commas, ``²``, control characters, long words, masks) at
three members who share rooms, and checks the guarantee exactly:

* no input makes a session raise (a traceback would reset the sender, or worse, a
  reader of a stored word);
* every line anyone is sent encodes and reads back: IRC lines parse, fit 512 bytes
  without their tags, and hold no middle parameter that is empty or starts with ``:``;
  line-dialect lines are UTF-8 without a character the text policy forbids;
* a command applies exactly what it publishes: replaying the published events into a
  second hub gives the same state.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatd.core import events as ev
from chatd.core.hub import Hub
from chatd.core.ids import Mint
from chatd.core.router import Router
from chatd.core.targets import Target
from chatd.core.text import FORBIDDEN
from chatd.dialects.irc.registration import State
from chatd.dialects.irc.session import HANDLERS
from chatd.dialects.irc.wire import Message, parse
from engine_double import Peer, World

IRC_COMMANDS = sorted(HANDLERS[State.REGISTERED]) + ["FOO"]
LINE_COMMANDS = [
    "nick", "join", "who", "rooms", "msg", "me", "topic", "mode", "kick", "invite", "away",
    "monitor", "unmonitor", "ping", "stats", "help", "history", "quit", "bogus",
]  # fmt: skip

#: Words that broke replies before: empty, spaced, colon-led, comma lists, non-ASCII
#: digits, masks, nicks and rooms that exist, controls the text policy forbids.
TRICKY = [
    "", " ", ":", "::", "::1", ":x", "*", "#", "#lobby", "#c", "#c,", ",#c", "#c1,",
    "#lobby,#lobby", "²", "a b", ":a b", "0", "-1", "+", "-", "+b", "+k", "+l", "-k",
    "+ik-t+l", "+beI", "+ov", "+Z", "+" + "Z" * 50, "bob", "amy", "cid", "BOB", "*!*@*",
    "nick!user@host", "x" * 300, "\x1b[2J", "\x07", "\u009b", "\u2028", "\x01ACTION hi\x01",
    "\x01VERSION\x01", ">1", "<5", "!*", "%tcuihsnfdlaor,42", "LS", "REQ", "END", "302",
    "+", "C", "L", "S", "@#lobby", "+#lobby", "0",
    "LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS", "100", "msgid=x", "timestamp=",
    "timestamp=2027-01-15T08:00:00.000Z", "timestamp=2262-01-01T00:00:00.000Z",
]  # fmt: skip
WORD = st.one_of(
    st.sampled_from(TRICKY),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
        max_size=12,
    ),
)


@st.composite
def irc_lines(draw: st.DrawFn) -> str:
    command = draw(st.sampled_from(IRC_COMMANDS))
    middles = draw(st.lists(WORD.filter(lambda w: w and " " not in w and w[0] != ":"), max_size=4))
    trailing = draw(st.one_of(st.none(), WORD))
    tags = draw(st.sampled_from(["", "@label=l1 ", "@+typing=active ", "@+a=" + "x" * 50 + " "]))
    line = " ".join([command, *middles])
    if trailing is not None:
        line += " :" + trailing
    return tags + line


@st.composite
def line_lines(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(WORD)  # chat (or a nick, before registration)
    command = draw(st.sampled_from(LINE_COMMANDS))
    args = draw(st.lists(WORD, max_size=3))
    return " ".join(["/" + command, *args])


def _check_irc(lines: list[str]) -> None:
    for line in lines:
        parsed = parse(line)
        assert isinstance(parsed, Message), line
        body = line.split(" ", 1)[1] if line.startswith("@") else line
        assert len(body.encode()) + 2 <= 512, line
        assert "\x00" not in line


def _check_line(lines: list[str]) -> None:
    for line in lines:
        assert FORBIDDEN.search(line) is None, line
        assert line.startswith(("* ", "! ")) or ": " in line, line


def _state(hub: Hub) -> tuple[object, ...]:
    rooms = {
        k: {f: v for f, v in dataclasses.asdict(r).items() if f != "banned"}
        for k, r in hub.rooms.items()
    }
    members = {k: dataclasses.asdict(m) for k, m in hub.members.items()}
    return rooms, members, hub.nicks, hub.invisible, hub.opers


class Scene:
    """A server with three members in #lobby and #c: amy (IRC, operator, every cap),
    bob (plain IRC) and cid (line), and a log of what the hub published."""

    def __init__(self) -> None:
        self.world = World(opers={"boss": "pw"})
        hub = self.world.service.hub
        self.log: list[tuple[ev.Event, Target]] = []
        publish = hub.publish

        def recording(event: ev.Event, target: Target) -> None:
            self.log.append((event, target))
            publish(event, target)

        hub.publish = recording
        caps = (
            "message-tags server-time echo-message labeled-response batch away-notify "
            "invite-notify multi-prefix userhost-in-names setname extended-monitor"
        )
        self.amy = self.world.irc("amy", caps=caps)
        self.bob = self.world.irc("bob", host="::1")
        self.cid = self.world.line("cid")
        self.amy.send("OPER boss pw\r\nJOIN #lobby,#c\r\nMONITOR + bob,cid")
        self.bob.send("JOIN #lobby,#c")
        self.cid.send("/ping")
        for peer in self.peers:
            peer.lines()

    @property
    def peers(self) -> list[Peer]:
        return [self.amy, self.bob, self.cid]

    def check_outputs(self) -> None:
        _check_irc(self.amy.lines())
        _check_irc(self.bob.lines())
        _check_line(self.cid.lines())

    def check_replay(self) -> None:
        router = Router(Counter())
        other = Hub(router.deliver, mint=Mint("bbbbb"))
        router.attach(other)
        for event, target in self.log:
            other.receive(event, target)
        assert _state(other) == _state(self.world.service.hub)


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(st.lists(irc_lines(), min_size=1, max_size=6), st.lists(line_lines(), max_size=4))
def test_no_input_breaks_a_reply_a_reader_or_the_state(irc: list[str], line: list[str]) -> None:
    scene = Scene()
    for text in irc:
        if not scene.amy.session.lost:
            scene.amy.send(text + "\r\n")
        scene.check_outputs()
    for text in line:
        if not scene.cid.session.lost and text.strip():
            scene.cid.send(text)
        scene.check_outputs()
    # bob asks about what the others may have stored (bans, keys, topics, away texts).
    if not scene.bob.session.lost:
        scene.bob.send("MODE #lobby\r\nMODE #lobby +beI\r\nMODE #c +b\r\nNAMES #lobby,#c")
        scene.bob.send("WHO #lobby\r\nWHOIS amy\r\nWHOIS bob\r\nLIST\r\nTOPIC #c\r\nWHO *")
    scene.check_outputs()
    scene.check_replay()


@SETTINGS
@given(st.lists(line_lines(), min_size=1, max_size=8))
def test_no_line_input_breaks_an_irc_reader(line: list[str]) -> None:
    scene = Scene()
    scene.cid.send("/mode +o cid")  # cid is no operator: refused, harmless
    for text in line:
        if not scene.cid.session.lost and text.strip():
            scene.cid.send(text)
    if not scene.amy.session.lost:
        scene.amy.send("MODE #lobby\r\nMODE #lobby +beI\r\nNAMES #lobby\r\nWHO #lobby")
    scene.check_outputs()
    scene.check_replay()


def test_the_thirteen_one_line_inputs_of_issue_16() -> None:
    scene = Scene()
    inputs = [
        "JOIN #c1,", "JOIN ,#c2", "PART #c3,", "PRIVMSG #lobby, :hi", "WHOIS :a b",
        "NAMES :#a b", "MONITOR + :a b", "LIST >²", "CAP LS ²", "NICK :a b",
        "MODE #lobby +b :evil mask", "MODE #lobby +e ::x!y@z", "MODE #lobby +I :a b",
        "MODE #lobby +ik-t+l key ²", "KICK #lobby, cid", "INVITE :a b #lobby",
    ]  # fmt: skip
    for text in inputs:
        scene.amy.send(text)
        scene.check_outputs()
    room = scene.world.service.hub.rooms["#lobby"]
    assert room.bans == room.excepts == room.invexes == []
    # +i, +k and -t applied (and published), the bad limit refused on its own.
    assert (room.modes, room.password, room.limit) == ("in", "key", None)
    scene.bob.send("MODE #lobby\r\nMODE #lobby +b")
    _check_irc(scene.bob.lines())
    scene.check_replay()
