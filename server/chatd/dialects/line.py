"""The line dialect (PROTOCOL.md): framing, registration, commands and rendering.

Sans-IO like h11: :class:`LineDecoder` only stores what it is fed and hands out one item
at a time; :class:`LineEncoder` turns hub events into bytes; :class:`LineSession` reads
commands from one client and calls the hub. Nothing here touches a socket or a clock.

Every notice the server sends is a template in :data:`NOTICES`, and that one table is
also the rule that keeps clients from forging them (issue: a nick ``server`` doing
``/me shutting down`` printed ``* server shutting down``):

* a template that starts with a fixed word (``server shutting down``, ``pong``,
  ``you are ...``) reserves that word as a nickname;
* a template that starts with a nickname (``{nick} quit{reason}``) refuses the actions
  whose rendering ``* NICK TEXT`` it would match.

So no client line can ever produce the bytes of a notice, and a new template is covered
the day it is added.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.hub import MAX_WATCH, Room, parse_mode_changes
from chatd.core.names import NICK_RE, fold, normalize_room, room_problem, valid_nick
from chatd.dialects.base import BLANK, Dialect, Session
from chatd.net.transport import QUIT_TEXT, DisconnectReason

#: Longest accepted line, not counting the terminator (PROTOCOL.md, ``--max-line``).
DEFAULT_MAX_LINE = 4096
#: Longest line of a listing the server sends (``/who``, ``/rooms``), terminator
#: included: one 145 KB line for a room of 5,000 would be one unbounded write.
REPLY_LINE_MAX = 512

#: C0 controls except TAB and the IRC formatting codes (bold 0x02, colour 0x03,
#: reset 0x0F, reverse 0x16, italic 0x1D, underline 0x1F), plus DEL and the C1 block
#: (U+0080..U+009F: U+009B is a one-character CSI on some terminals). Any of these in
#: a line could move another user's cursor or rewrite their screen, so the line is
#: refused instead of relayed.
_FORBIDDEN = re.compile("[\x00\x01\x04-\x08\x0a-\x0e\x10-\x15\x17-\x1c\x1e\x7f-\x9f]")


class DecodeError(enum.Enum):
    """A fault in the peer's bytes; the line is dropped and the peer gets an error."""

    #: The line exceeded the configured limit; it is discarded up to its end.
    TOO_LONG = "line too long"
    #: The line is not valid UTF-8.
    BAD_UTF8 = "line is not valid UTF-8"
    #: The line holds a control character that could act on a terminal.
    CONTROL_CHAR = "line contains a control character"


#: What :meth:`LineDecoder.next_item` yields: a line, an error, or :data:`BLANK`.
Item = str | DecodeError


class LineDecoder:
    """Split a byte stream into lines, whatever the segmentation.

    The buffer never holds more than ``max_line + 1`` bytes of an unterminated line
    (the ``+ 1`` leaves room for the ``\\r`` of a ``\\r\\n`` that has not arrived
    yet): past that the line is reported as too long at once and the rest of it is
    skipped as it arrives, so a peer that never sends ``\\n`` costs a bounded amount
    of memory however much it sends. Empty lines come out as :data:`BLANK`, so flood
    control charges for them like for any other line.
    """

    __slots__ = ("_buf", "_pos", "_max", "_discarding")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._buf = bytearray()
        self._pos = 0
        self._max = max_line
        self._discarding = False

    def feed(self, data: bytes) -> None:
        """Store bytes received from the peer; call :meth:`next_item` to use them."""
        self._buf += data

    def feed_eof(self) -> None:
        """The peer closed its side: an unterminated last line still counts, once."""
        if self.buffered and not self._discarding:
            self._buf += b"\n"
        elif self._discarding:
            self._buf.clear()
            self._pos = 0
            self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as items."""
        return len(self._buf) - self._pos

    def next_item(self) -> Item | None:
        """Return the next line, error or :data:`BLANK`; ``None`` when a line is missing."""
        buf = self._buf
        while True:
            end = buf.find(b"\n", self._pos)
            if end < 0:
                return self._need_data()
            start = self._pos
            self._pos = end + 1
            if self._discarding:
                # The end of an overlong line whose error was already reported.
                self._discarding = False
                continue
            if end > start and buf[end - 1] == 13:  # strip one "\r" before "\n"
                end -= 1
            if end - start > self._max:
                return DecodeError.TOO_LONG
            raw = bytes(buf[start:end])
            if not raw or raw.isspace():
                return BLANK
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return DecodeError.BAD_UTF8
            if _FORBIDDEN.search(line):
                return DecodeError.CONTROL_CHAR
            return line

    def _need_data(self) -> DecodeError | None:
        """Compact the buffer; report an unterminated line that is already too long."""
        buf = self._buf
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        if self._discarding:
            buf.clear()
            return None
        if len(buf) > self._max + 1 or (len(buf) == self._max + 1 and buf[-1] != 13):
            buf.clear()
            self._discarding = True
            return DecodeError.TOO_LONG
        return None

    def items(self) -> list[Item]:
        """Every complete item buffered now, blanks left out (for tests and tools)."""
        out: list[Item] = []
        while (item := self.next_item()) is not None:
            if item is not BLANK:
                out.append(item)
        return out


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Say:
    """A chat line to the current room."""

    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """A ``/command`` with its name lower-cased and its raw argument string."""

    #: Lower-cased command name without the slash, e.g. ``"nick"``.
    name: str
    #: Everything after the first run of spaces, with trailing spaces removed.
    args: str


def parse_command(line: str) -> Say | Command:
    """Classify one decoded line.

    ``//text`` is an escape for a chat line that begins with a slash (as in IRC
    clients): it is sent as ``/text``.
    """
    if not line.startswith("/"):
        return Say(line)
    if line.startswith("//"):
        return Say(line[1:])
    name, _, args = line[1:].partition(" ")
    return Command(name.lower(), args.strip())


# --------------------------------------------------------------------------- notices

#: Every ``* `` notice the server sends, by name. ``{nick}``-like fields are nicknames,
#: ``{room}`` a room name, ``{reason}`` either empty or `` (text)``, anything else text.
NOTICES = {
    "welcome": "welcome to {server}",
    "choose": "please choose a nickname",
    "password": "this server needs a password: send /pass PASSWORD first",
    "registered": "you are {nick}, in {room} ({members} here); /help lists commands",
    "registered_no_room": "you are {nick}; /join ROOM to enter a room",
    "you_joined": "you joined {room} ({members} here)",
    "joined": "{nick} joined {room}",
    "left": "{nick} left {room}{reason}",
    "quit": "{nick} quit{reason}",
    "renamed": "{old} is now known as {new}",
    "kicked": "{nick} was kicked from {room} by {by}{reason}",
    "you_kicked": "you were kicked from {room} by {by}{reason}",
    "topic_set": "{by} set the topic of {room} to: {topic}",
    "topic_cleared": "{by} cleared the topic of {room}",
    "topic": "topic of {room}: {topic}",
    "no_topic": "{room} has no topic",
    "mode_set": "{by} set mode {modes} on {room}",
    "modes": "modes of {room}: {modes}",
    "invited": "{by} invited {nick} to {room}",
    "you_invited": "{by} invited you to {room} (/join {room})",
    "invite_sent": "invited {nick} to {room}",
    "sent": "-> {nick}: {text}",
    "who": "{room} ({members}): {nicks}",
    "rooms": "rooms ({count}): {listing}",
    "pong": "pong{token}",
    "stats": "stats: {counters}",
    "away": "you are marked away: {text}",
    "back": "you are no longer marked away",
    "bye": "bye{reason}",
    "shutdown": "server shutting down",
    "help": "commands:",
    "bans": "bans of {room}: {masks}",
    # A room name first: no nickname starts with "#", so no action can read as these.
    "excepts": "{room} ban exceptions: {masks}",
    "invexes": "{room} invite exceptions: {masks}",
    # IRC's STATUSMSG (PRIVMSG @#room): a line only the room's operators (or voiced
    # members and operators) were sent.
    "status_chat": "{nick} to the {audience} of {room}: {text}",
    # MONITOR (shared with IRC): a watched nickname signing on or off, and the list.
    "online": "{nick} is online",
    "offline": "{nick} is offline",
    "monitoring": "you monitor ({count}): {listing}",
    "unmonitored": "you no longer monitor: {nicks}",
}

#: How a Chat event's ``audience`` reads in ``status_chat``.
AUDIENCE = {"o": "operators", "v": "voiced members"}
#: ``/msg @#room`` and ``/msg +#room``: the audience of the room they name.
_STATUS = {"@#": "o", "+#": "v"}
#: List-mode letter → the notice listing it.
_LIST_NOTICES = {"b": "bans", "e": "excepts", "I": "invexes"}

_FIELD = re.compile(r"\{(\w+)\}")
_NICK_FIELDS = {"nick", "old", "new", "by"}
_FIELD_PATTERNS = {
    "room": r"#\S+",
    "audience": "(?:" + "|".join(AUDIENCE.values()) + ")",
    "reason": r"(?: \(.*\))?",
    "token": r"(?: .*)?",
    "members": r"\d+",
    "count": r"\d+",
}


def _field_pattern(name: str) -> str:
    if name in _NICK_FIELDS:
        return NICK_RE.pattern
    return _FIELD_PATTERNS.get(name, r".*")


def _template_regex(template: str) -> str:
    out = []
    pos = 0
    for match in _FIELD.finditer(template):
        out.append(re.escape(template[pos : match.start()]))
        out.append(_field_pattern(match.group(1)))
        pos = match.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


def _forgery_rules() -> tuple[frozenset[str], re.Pattern[str]]:
    """Reserved nicks, and one regex matching every action text that reads as a notice."""
    reserved: set[str] = set()
    actions: list[str] = []
    for template in NOTICES.values():
        first = _FIELD.match(template)
        if first and first.group(1) in _NICK_FIELDS:
            # "{nick} quit{reason}": the action "quit (connection reset)" by anyone.
            actions.append(_template_regex(template[first.end() :].removeprefix(" ")))
        else:
            word = re.split(r"[ :({]", template, maxsplit=1)[0]
            if valid_nick(word):
                reserved.add(word)
    return frozenset(reserved), re.compile("|".join(f"(?:{a})" for a in actions))


RESERVED_NICKS, _FORGED_ACTION = _forgery_rules()


def action_forgeable(nick: str, text: str) -> bool:
    """Would ``* NICK TEXT`` be byte-identical to one of :data:`NOTICES`?"""
    return _FORGED_ACTION.fullmatch(text) is not None


def notice(name: str, **fields: Any) -> bytes:
    return ("* " + NOTICES[name].format(**fields) + "\n").encode()


def error(text: str) -> bytes:
    return ("! " + text + "\n").encode()


def _reason(reason: str) -> str:
    return f" ({reason})" if reason else ""


def listing(prefix: str, words: list[str], limit: int = REPLY_LINE_MAX) -> list[str]:
    """``prefix`` + space-separated ``words`` in lines of at most ``limit`` bytes (with ``\\n``).

    A reply of any size becomes several lines, each a complete notice on its own.
    """
    room = limit - len(prefix.encode()) - 1
    lines: list[str] = []
    current: list[str] = []
    size = 0
    for word in words:
        cost = len(word.encode()) + (1 if current else 0)
        if current and size + cost > room:
            lines.append(prefix + " ".join(current))
            current, size = [], 0
            cost = len(word.encode())
        current.append(word)
        size += cost
    lines.append(prefix + " ".join(current))
    return lines


HELP_LINES = (
    "commands:",
    "/nick NEW         change your nickname",
    "/join ROOM [KEY]  leave this room and enter ROOM (created on demand)",
    "/who              list the members of your room",
    "/rooms            list the rooms and how many are in each",
    "/msg NICK TEXT    send a private message (@#ROOM: to the room's operators)",
    "/me TEXT          act: shown to the room as '* NICK TEXT'",
    "/topic [TEXT]     show or set the room's topic",
    "/mode [CHANGES]   show or change room modes: +i +k KEY +l N +m +n +t +s +C",
    "                  +o/+v NICK, +b/+e/+I MASK (ban, ban exception, invite exception)",
    "/invite NICK      invite NICK to your room",
    "/kick NICK [WHY]  remove NICK from your room (room operators)",
    "/away [TEXT]      mark yourself away (no text: back)",
    "/monitor [NICK..] be told when NICK comes online or goes (no NICK: your list)",
    "/unmonitor NICK.. stop that (* for every nick)",
    "/ping [TOKEN]     the server answers '* pong'",
    "/stats            server counters",
    "/quit [REASON]    leave",
    "/help             this list",
    "//TEXT            sends chat that starts with /",
)


class LineEncoder:
    """Renders hub events for line-dialect members; one instance serves them all."""

    __slots__ = ()

    def encode(self, event: ev.Event, role: Role) -> bytes:
        match event:
            case ev.Chat(source=source, texts=texts, kind=kind):
                if event.audience:
                    return self.status_chat(event)
                if kind is ev.ChatKind.ACTION:
                    prefix = "* " + source.nick + " "
                else:
                    prefix = source.nick + ": "
                if len(texts) == 1:
                    return (prefix + texts[0] + "\n").encode()
                return "".join([prefix + text + "\n" for text in texts]).encode()
            case ev.PrivateChat(source=source, text=text, kind=kind):
                if kind is ev.ChatKind.ACTION:
                    return f"* {source.nick} (private) {text}\n".encode()
                return f"{source.nick} (private): {text}\n".encode()
            case ev.Joined(source=source, room=room):
                if role is Role.ACTOR:
                    return b""  # the session renders "you joined" itself
                return notice("joined", nick=source.nick, room=room)
            case ev.Parted(source=source, room=room, reason=reason):
                if role is Role.ACTOR:
                    return b""
                return notice("left", nick=source.nick, room=room, reason=_reason(reason))
            case ev.Quit(source=source, reason=reason):
                return notice("quit", nick=source.nick, reason=_reason(reason))
            case ev.NickChanged(source=source, new=new):
                return notice("renamed", old=source.nick, new=new)
            case ev.Kicked(source=source, room=room, nick=nick, reason=reason):
                why = _reason(reason if reason != source.nick else "")
                if role is Role.SUBJECT:
                    return notice("you_kicked", room=room, by=source.nick, reason=why)
                return notice("kicked", nick=nick, room=room, by=source.nick, reason=why)
            case ev.TopicChanged(source=source, room=room, topic=topic):
                if topic:
                    return notice("topic_set", by=source.nick, room=room, topic=topic)
                return notice("topic_cleared", by=source.nick, room=room)
            case ev.ModeChanged(source=source, room=room, changes=changes, args=args):
                modes = " ".join((changes, *args))
                return notice("mode_set", by=source.nick, room=room, modes=modes)
            case ev.Invited(source=source, nick=nick, room=room):
                if role is Role.SUBJECT:
                    return notice("you_invited", by=source.nick, room=room)
                return notice("invited", by=source.nick, nick=nick, room=room)
            case ev.ServerShutdown():
                return notice("shutdown")
            case ev.AwayChanged() | ev.Wallops() | ev.RealnameChanged():
                return b""  # IRC-only notifications
            case ev.CameOnline() | ev.WentOffline():
                return b""  # personal: see encode_for
        raise TypeError(f"no line encoding for {event!r}")

    def encode_for(self, event: ev.Event, member: Any) -> bytes:
        """A nickname the member monitors (``/monitor``) signed on or off."""
        match event:
            case ev.CameOnline(source=source):
                return notice("online", nick=source.nick)
            case ev.WentOffline(nick=nick):
                return notice("offline", nick=nick)
        raise TypeError(f"no personal line encoding for {event!r}")

    @staticmethod
    def status_chat(event: ev.Chat) -> bytes:
        """``* amy to the operators of #club: text``, one line per text."""
        audience = AUDIENCE[event.audience]
        out = []
        for text in event.texts:
            if event.kind is ev.ChatKind.ACTION:
                text = f"* {event.source.nick} {text}"
            out.append(
                notice(
                    "status_chat",
                    nick=event.source.nick,
                    audience=audience,
                    room=event.room,
                    text=text,
                )
            )
        return b"".join(out)


ENCODER = LineEncoder()

#: Commands an unregistered client may use; anything else waits for a nickname.
_BEFORE_REGISTRATION = frozenset({"quit", "help", "ping", "nick", "pass"})

_USAGE = {
    "nick": "usage: /nick NEW",
    "join": "usage: /join ROOM [KEY]",
    "msg": "usage: /msg NICK TEXT",
    "me": "usage: /me TEXT",
    "kick": "usage: /kick NICK [REASON]",
    "invite": "usage: /invite NICK",
    "unmonitor": "usage: /unmonitor NICK... (or /unmonitor * for all)",
    "pass": "usage: /pass PASSWORD",
}


class LineSession(Session):
    """One line-dialect client: a nickname first, then chat lines and ``/commands``."""

    __slots__ = ("batch", "authenticated")

    def __init__(self, service: Any, host: str, now: float, delay: float = 0.0) -> None:
        super().__init__(service, host, now, delay)
        #: Chat lines to the current room collected from this read (see flush_batch);
        #: ``None`` between reads, so an idle connection holds no list.
        self.batch: list[str] | None = None
        self.authenticated = service.config.password is None

    def make_decoder(self) -> LineDecoder:
        return LineDecoder(self.service.config.max_line)

    @property
    def encoder(self) -> LineEncoder:
        return ENCODER

    def greet(self) -> None:
        data = notice("welcome", server=self.service.config.server_name)
        if not self.authenticated:
            data += notice("password")
        self.write(data + notice("choose"))

    # ----------------------------------------------------------------- input

    def handle(self, item: Item) -> int:
        stats = self.service.stats
        if isinstance(item, DecodeError):
            self.flush_batch()
            stats["bad_lines"] += 1
            self.error(item.value)
            return 0
        stats["lines_in"] += 1
        member = self.member
        if member.nick is not None and not item.startswith("/"):
            self._collect(item)
            return 0
        self.flush_batch()
        parsed = parse_command(item)
        if member.nick is None:
            return self._before_registration(parsed)
        if isinstance(parsed, Say):
            self._collect(parsed.text)
            return 0
        handler = _COMMANDS.get(parsed.name)
        if handler is None:
            self.error(f"unknown command: /{parsed.name} (try /help)")
            return 0
        if parsed.name in _USAGE and not parsed.args:
            self.error(_USAGE[parsed.name])
            return 0
        try:
            return handler(self, parsed.args) or 0
        except err.HubError as exc:
            self.error(exc.text)
            return 0

    def _collect(self, text: str) -> None:
        if self.batch is None:
            self.batch = [text]
        else:
            self.batch.append(text)

    def flush_batch(self) -> None:
        batch = self.batch
        if not batch:
            return
        self.batch = None
        self.service.stats["messages_in"] += len(batch)
        room = self.member.room
        try:
            if room is None:
                raise err.NoRoom()
            self.service.hub.say(self.member, room.name, tuple(batch))
        except err.HubError as exc:
            for _ in batch:
                self.error(exc.text)

    def _before_registration(self, parsed: Say | Command) -> int:
        if isinstance(parsed, Command) and parsed.name == "pass":
            return self._pass(parsed.args)
        if isinstance(parsed, Command) and parsed.name not in _BEFORE_REGISTRATION:
            self.error("choose a nickname first")
            return 0
        if isinstance(parsed, Command) and parsed.name != "nick":
            return _COMMANDS[parsed.name](self, parsed.args) or 0
        nick = parsed.text if isinstance(parsed, Say) else parsed.args
        if not nick:
            self.error(_USAGE["nick"])
            return 0
        if not self.authenticated:
            self.error("send /pass PASSWORD before your nickname")
            return 0
        hub = self.service.hub
        try:
            hub.register(self.member, nick)
        except err.HubError as exc:
            self.error(exc.text)
            return 0
        try:
            room = hub.join(self.member, hub.default_room, echo=False)
        except err.HubError:
            self.write(notice("registered_no_room", nick=nick))
            return 0
        self.write(notice("registered", nick=nick, room=room.name, members=len(room.members)))
        return 0

    def _pass(self, args: str) -> int:
        expected = self.service.config.password
        if self.member.nick is not None or self.authenticated:
            self.error("you may not send /pass now")
            return 0
        if not args:
            self.error(_USAGE["pass"])
            return 0
        if args != expected:
            self.error("wrong password")
            self.close(DisconnectReason.BAD_PASSWORD)
            return 0
        self.authenticated = True
        return 0

    # ----------------------------------------------------------------- commands

    def _nick(self, args: str) -> None:
        if " " in args:
            self.error(_USAGE["nick"])
            return
        self.service.hub.change_nick(self.member, args)

    def _join(self, args: str) -> None:
        name, _, key = args.partition(" ")
        if " " in key:
            self.error(_USAGE["join"])
            return
        hub = self.service.hub
        member = self.member
        old = member.room
        target = hub.find_room(name)
        if old is not None and target is old:
            raise err.AlreadyInRoom(old.name)
        # Check before leaving, so a refused join keeps the member where it was.
        if target is not None:
            hub.check_can_join(member, target, key or None)
        elif (problem := room_problem(normalize_room(name))) is not None:
            raise err.BadRoomName(normalize_room(name), problem)
        if old is not None:
            hub.part(member, old.name, echo=False)
        room = hub.join(member, name, key or None, echo=False)
        self.write(notice("you_joined", room=room.name, members=len(room.members)))

    def _who(self, args: str) -> int:
        room = self._room()
        nicks = sorted((m.nick for m in room.members), key=str.lower)  # type: ignore[arg-type]
        prefix = "* " + NOTICES["who"].format(room=room.name, members=len(nicks), nicks="")
        lines = listing(prefix, nicks)  # type: ignore[arg-type]
        self.write("".join(line + "\n" for line in lines).encode())
        return len(lines) - 1  # each further line costs a flood token

    def _rooms(self, args: str) -> int:
        rooms = self.service.hub.list_rooms()
        prefix = "* " + NOTICES["rooms"].format(count=len(rooms), listing="")
        words = [f"{r.name} ({len(r.members)})," for r in rooms]
        if words:
            words[-1] = words[-1][:-1]
        lines = listing(prefix, words)
        self.write("".join(line + "\n" for line in lines).encode())
        return len(lines) - 1

    def _msg(self, args: str) -> None:
        target, _, text = args.partition(" ")
        text = text.strip()
        if not text:
            self.error(_USAGE["msg"])
            return
        audience = _STATUS.get(target[:2], "")
        if audience:  # /msg @#room TEXT: to the room's operators (IRC's STATUSMSG)
            self.service.stats["messages_in"] += 1
            room = self.service.hub.room_or_raise(target[1:])
            self.service.hub.say(self.member, room.name, (text,), audience=audience)
            self.write(notice("sent", nick=target[0] + room.name, text=text))
            return
        self.service.stats["private_in"] += 1
        event = self.service.hub.private(self.member, target, text)
        self.write(notice("sent", nick=event.target, text=text))

    def _monitor(self, args: str) -> int:
        hub = self.service.hub
        nicks = args.replace(",", " ").split()
        if not nicks:
            watched = list(self.member.watching.values())
            words = [f"{n} ({'online' if hub.find(n) else 'offline'})," for n in watched]
            if words:
                words[-1] = words[-1][:-1]
            prefix = "* " + NOTICES["monitoring"].format(count=len(words), listing="")
            lines = listing(prefix, words or ["nobody"])
            self.write("".join(line + "\n" for line in lines).encode())
            return len(lines) - 1
        for nick in nicks:
            if not valid_nick(nick):
                self.error(f"invalid nickname: {nick}")
        added, refused = hub.watch(self.member, [n for n in nicks if valid_nick(n)])
        for nick in added:
            member = hub.find(nick)
            if member is not None:
                self.write(notice("online", nick=member.nick))
            else:
                self.write(notice("offline", nick=nick))
        if refused:
            self.error(
                f"your monitor list is full ({MAX_WATCH} nicks); not added: {' '.join(refused)}"
            )
        return len(added) // 10

    def _unmonitor(self, args: str) -> None:
        hub = self.service.hub
        nicks = args.replace(",", " ").split()
        if nicks == ["*"]:
            nicks = list(self.member.watching.values())
            hub.unwatch_all(self.member)
        else:
            nicks = [n for n in nicks if fold(n) in self.member.watching]
            hub.unwatch(self.member, nicks)
        self.write(notice("unmonitored", nicks=" ".join(nicks) or "nobody"))

    def _me(self, args: str) -> None:
        self.service.stats["messages_in"] += 1
        self.service.hub.say(self.member, self._room().name, (args,), ev.ChatKind.ACTION)

    def _topic(self, args: str) -> None:
        room = self._room()
        if not args:
            if room.topic:
                self.write(notice("topic", room=room.name, topic=room.topic))
            else:
                self.write(notice("no_topic", room=room.name))
            return
        text = "" if args == "-" else args
        self.service.hub.topic(self.member, room.name, text)

    def _mode(self, args: str) -> None:
        room = self._room()
        if not args:
            modes, margs = room.mode_string(show_key=room.is_op(self.member))
            self.write(notice("modes", room=room.name, modes=" ".join((modes, *margs))))
            return
        modestring, *rest = args.split()
        changes, queries = parse_mode_changes(modestring, rest)
        if queries and not changes:
            for char in dict.fromkeys(queries):
                masks = [mask for mask, _, _ in room.mask_list(char)] or ["(none)"]
                template = NOTICES[_LIST_NOTICES[char]]
                prefix = "* " + template.format(room=room.name, masks="")
                for line in listing(prefix, masks):
                    self.write((line + "\n").encode())
            return
        _, refused = self.service.hub.change_room_modes(self.member, room.name, changes)
        for exc in refused:
            self.error(exc.text)

    def _kick(self, args: str) -> None:
        nick, _, reason = args.partition(" ")
        self.service.hub.kick(self.member, self._room().name, nick, reason.strip())

    def _invite(self, args: str) -> None:
        if " " in args:
            self.error(_USAGE["invite"])
            return
        room = self._room()
        self.service.hub.invite(self.member, args, room.name)
        self.write(notice("invite_sent", nick=args, room=room.name))

    def _away(self, args: str) -> None:
        self.service.hub.set_away(self.member, args or None)
        self.write(notice("away", text=args) if args else notice("back"))

    def _ping(self, args: str) -> None:
        self.write(notice("pong", token=" " + args if args else ""))

    def _stats(self, args: str) -> None:
        counters = " ".join(f"{k}={v}" for k, v in sorted(self.service.snapshot().items()))
        self.write(notice("stats", counters=counters))

    def _help(self, args: str) -> None:
        self.write(b"".join(("* " + line + "\n").encode() for line in HELP_LINES))

    def _quit(self, args: str) -> None:
        self.write(notice("bye", reason=_reason(args)))
        self.close(DisconnectReason.QUIT, args)

    def _room(self) -> Room:
        room = self.member.room
        if room is None:
            raise err.NoRoom()
        return room

    # ----------------------------------------------------------------- output

    def error(self, text: str) -> None:
        self.service.stats["errors_sent"] += 1
        self.write(error(text))

    def timed_out(self, reason: DisconnectReason) -> None:
        self.error(QUIT_TEXT[reason])
        self.close(reason)


_COMMANDS: dict[str, Callable[[LineSession, str], int | None]] = {
    "nick": LineSession._nick,
    "join": LineSession._join,
    "who": LineSession._who,
    "rooms": LineSession._rooms,
    "msg": LineSession._msg,
    "me": LineSession._me,
    "topic": LineSession._topic,
    "mode": LineSession._mode,
    "kick": LineSession._kick,
    "invite": LineSession._invite,
    "away": LineSession._away,
    "monitor": LineSession._monitor,
    "unmonitor": LineSession._unmonitor,
    "ping": LineSession._ping,
    "stats": LineSession._stats,
    "help": LineSession._help,
    "quit": LineSession._quit,
}

DIALECT = Dialect(
    name="line",
    session=LineSession,
    refusal=error,
    reserved_nicks=RESERVED_NICKS,
    action_forgeable=action_forgeable,
)
