"""One line-dialect client: a nickname first, then chat lines and ``/commands``.

A line user is in at most one room at a time, its *current room* (``/join`` leaves the
old one); that is the line dialect's idea, kept here, not the hub's. Chat lines that
arrive together are collected and published as one batch (:meth:`LineSession.flush_batch`).
"""

from __future__ import annotations

from collections.abc import Callable

from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core.model import OP, Member, Room
from chatd.core.modes import parse_mode_changes
from chatd.core.monitor import MAX_WATCH
from chatd.core.names import fold, normalize_room, room_problem, valid_nick
from chatd.dialects.base import Context, Session, password_ok
from chatd.dialects.line import history
from chatd.dialects.line.commands import Command, Say, parse_command
from chatd.dialects.line.decoder import DecodeError, Item, LineDecoder
from chatd.dialects.line.encoder import ENCODER
from chatd.dialects.line.errors import error_text
from chatd.dialects.line.notices import (
    HELP_LINES,
    LIST_NOTICES,
    NOTICES,
    STATUS,
    error,
    listing,
    notice,
    reason_suffix,
)
from chatd.dialects.modestrings import room_modes
from chatd.net.transport import QUIT_TEXT, DisconnectReason

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
#: Rooms scanned by ``/rooms`` per flood token it costs.
ROOMS_PER_TOKEN = 200


class LineSession(Session):
    """One line-dialect client."""

    __slots__ = ("batch", "passed", "current")

    def __init__(self, ctx: Context, host: str, now: float, delay: float = 0.0) -> None:
        super().__init__(ctx, host, now, delay)
        self.encoder = ENCODER
        #: Chat lines to the current room collected from this read (see flush_batch);
        #: ``None`` between reads, so an idle connection holds no list.
        self.batch: list[str] | None = None
        #: The password /pass gave (checked against the one in force when it was sent,
        #: and again at registration: a reload may change it meanwhile).
        self.passed: str | None = None
        #: The key of the room this user is in (the last it joined), if any.
        self.current: str | None = None

    @property
    def authenticated(self) -> bool:
        """No password is needed now, or /pass gave the one in force now."""
        return password_ok(self.ctx, self.passed)

    def make_decoder(self) -> LineDecoder:
        return LineDecoder(self.ctx.config.max_line)

    def greet(self) -> None:
        data = notice("welcome", server=self.ctx.config.server_name)
        if not self.authenticated:
            data += notice("password")
        self.write(data + notice("choose"))

    # ----------------------------------------------------------------- input

    def handle(self, item: object) -> int:
        stats = self.ctx.stats
        if isinstance(item, DecodeError):
            self.flush_batch()
            stats["bad_lines"] += 1
            self.error(item.value)
            return 0
        assert isinstance(item, str)
        stats["lines_in"] += 1
        if self.member is not None and not item.startswith("/"):
            self._collect(item)
            return 0
        self.flush_batch()
        parsed = parse_command(item)
        if self.member is None:
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
            self.error(error_text(exc))
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
        self.ctx.stats["messages_in"] += len(batch)
        try:
            room = self._room()
            self.ctx.hub.say(self.uid, room.name, batch)
        except err.HubError as exc:
            text = error_text(exc)
            for _ in batch:
                self.error(text)

    def drop_batch(self) -> None:
        self.batch = None

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
        try:
            self.ctx.hub.check_nick(nick)
        except err.HubError as exc:
            self.error(error_text(exc))
            return 0
        self.claimed(nick, lambda: self._register(nick), self._refused)
        return 0

    def _refused(self, exc: err.HubError) -> None:
        self.error(error_text(exc))

    def _register(self, nick: str) -> None:
        hub = self.ctx.hub
        if self.member is not None:
            return
        try:
            self.member = hub.register(self.uid, nick, "line", self.host)
        except err.HubError as exc:
            self.error(error_text(exc))
            return
        try:
            room = hub.join(self.uid, hub.default_room, echo=False)
        except err.HubError:
            self.write(notice("registered_no_room", nick=nick))
            return
        self.current = room.key
        self.write(notice("registered", nick=nick, room=room.name, members=len(room.members)))

    def _pass(self, args: str) -> int:
        expected = self.ctx.config.password
        if self.member is not None or self.authenticated or expected is None:
            self.error("you may not send /pass now")
            return 0
        if not args:
            self.error(_USAGE["pass"])
            return 0
        if not password_ok(self.ctx, args):
            self.error("wrong password")
            self.close(DisconnectReason.BAD_PASSWORD)
            return 0
        self.passed = args
        return 0

    # ----------------------------------------------------------------- commands

    def _nick(self, args: str) -> None:
        if " " in args:
            self.error(_USAGE["nick"])
            return
        hub = self.ctx.hub
        member = self._member()
        if args == member.nick:
            raise err.SameNick(args)
        hub.check_nick(args, self.uid)
        self.claimed(args, lambda: self._change_nick(args), self._refused)

    def _change_nick(self, nick: str) -> None:
        if self.member is None:
            return
        try:
            self.ctx.hub.change_nick(self.uid, nick)
        except err.HubError as exc:
            self.error(error_text(exc))

    def _join(self, args: str) -> None:
        name, _, key = args.partition(" ")
        if " " in key:
            self.error(_USAGE["join"])
            return
        hub = self.ctx.hub
        member = self._member()
        old = self._current_room()
        target = hub.find_room(name)
        if old is not None and target is old:
            raise err.AlreadyInRoom(old.name)
        # Check before leaving, so a refused join keeps the member where it was.
        if target is not None:
            hub.check_can_join(member, target, key or None)
        elif (problem := room_problem(normalize_room(name))) is not None:
            raise err.BadRoomName(normalize_room(name), problem)
        if old is not None:
            hub.part(self.uid, old.name, echo=False)
        room = hub.join(self.uid, name, key or None, echo=False)
        self.current = room.key
        self.write(notice("you_joined", room=room.name, members=len(room.members)))

    def _who(self, args: str) -> int:
        room = self._room()
        members = self.ctx.hub.members
        nicks = sorted((members[uid].nick for uid in room.members), key=str.lower)
        prefix = "* " + NOTICES["who"].format(room=room.name, members=len(nicks), nicks="")
        lines = listing(prefix, nicks)
        self.write("".join(line + "\n" for line in lines).encode())
        return len(lines) - 1  # each further line costs a flood token

    def _history(self, args: str) -> None:
        n = history.count(args)
        if n is None:
            self.error(history.USAGE)
            return
        self.work = history.replay(self, self._room(), n)

    def _rooms(self, args: str) -> int:
        rooms = sorted(self.ctx.hub.rooms.values(), key=lambda r: (-len(r.members), fold(r.name)))
        prefix = "* " + NOTICES["rooms"].format(count=len(rooms), listing="")
        words = [f"{r.name} ({len(r.members)})," for r in rooms]
        if words:
            words[-1] = words[-1][:-1]
        lines = listing(prefix, words)
        self.write("".join(line + "\n" for line in lines).encode())
        # Each further line costs a flood token, and so does sorting many rooms.
        return len(lines) - 1 + len(rooms) // ROOMS_PER_TOKEN

    def _msg(self, args: str) -> None:
        target, _, text = args.partition(" ")
        text = text.strip()
        if not text:
            self.error(_USAGE["msg"])
            return
        hub = self.ctx.hub
        audience = STATUS.get(target[:2], "")
        if audience:  # /msg @#room TEXT: to the room's operators (IRC's STATUSMSG)
            self.ctx.stats["messages_in"] += 1
            room = hub.room_or_raise(target[1:])
            hub.say(self.uid, room.name, (text,), audience=audience)
            self.write(notice("sent", nick=target[0] + room.name, text=text))
            return
        self.ctx.stats["private_in"] += 1
        event = hub.private(self.uid, target, text)
        self.write(notice("sent", nick=event.target, text=text))

    def _monitor(self, args: str) -> int:
        hub = self.ctx.hub
        nicks = args.replace(",", " ").split()
        if not nicks:
            watched = hub.monitor.listing(self.uid)
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
        added, refused = hub.monitor.watch(self.uid, [n for n in nicks if valid_nick(n)])
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
        monitor = self.ctx.hub.monitor
        nicks = args.replace(",", " ").split()
        if nicks == ["*"]:
            removed = monitor.clear(self.uid)
        else:
            removed = monitor.unwatch(self.uid, nicks)
        self.write(notice("unmonitored", nicks=" ".join(removed) or "nobody"))

    def _me(self, args: str) -> None:
        self.ctx.stats["messages_in"] += 1
        self.ctx.hub.say(self.uid, self._room().name, (args,), ev.ChatKind.ACTION)

    def _topic(self, args: str) -> None:
        room = self._room()
        if not args:
            if room.topic:
                self.write(notice("topic", room=room.name, topic=room.topic))
            else:
                self.write(notice("no_topic", room=room.name))
            return
        text = "" if args == "-" else args
        self.ctx.hub.topic(self.uid, room.name, text)

    def _mode(self, args: str) -> None:
        room = self._room()
        if not args:
            modes, margs = room_modes(room, show_key=bool(room.members.get(self.uid, 0) & OP))
            self.write(notice("modes", room=room.name, modes=" ".join((modes, *margs))))
            return
        modestring, *rest = args.split()
        changes, queries = parse_mode_changes(modestring, rest)
        if queries and not changes:
            for char in dict.fromkeys(queries):
                masks = [entry.mask for entry in room.mask_list(char)] or ["(none)"]
                template = NOTICES[LIST_NOTICES[char]]
                prefix = "* " + template.format(room=room.name, masks="")
                for line in listing(prefix, masks):
                    self.write((line + "\n").encode())
            return
        _, refused = self.ctx.hub.change_room_modes(self.uid, room.name, changes)
        for exc in refused:
            self.error(error_text(exc))

    def _kick(self, args: str) -> None:
        nick, _, reason = args.partition(" ")
        self.ctx.hub.kick(self.uid, self._room().name, nick, reason.strip())

    def _invite(self, args: str) -> None:
        if " " in args:
            self.error(_USAGE["invite"])
            return
        room = self._room()
        invitee = self.ctx.hub.invite(self.uid, args, room.name)
        self.write(notice("invite_sent", nick=invitee.nick, room=room.name))

    def _away(self, args: str) -> None:
        self.ctx.hub.set_away(self.uid, args or None)
        self.write(notice("away", text=args) if args else notice("back"))

    def _ping(self, args: str) -> None:
        self.write(notice("pong", token=" " + args if args else ""))

    def _stats(self, args: str) -> None:
        counters = " ".join(f"{k}={v}" for k, v in sorted(self.ctx.snapshot().items()))
        self.write(notice("stats", counters=counters))

    def _help(self, args: str) -> None:
        self.write(b"".join(("* " + line + "\n").encode() for line in HELP_LINES))

    def _quit(self, args: str) -> None:
        self.write(notice("bye", reason=reason_suffix(args)))
        self.close(DisconnectReason.QUIT, args)

    def _member(self) -> Member:
        member = self.member
        assert member is not None
        return member

    def _current_room(self) -> Room | None:
        """The room this user is in, or ``None`` (it was never in one, or was kicked)."""
        key = self.current
        member = self.member
        if key is None or member is None or key not in member.rooms:
            return None
        return self.ctx.hub.rooms.get(key)

    def _room(self) -> Room:
        room = self._current_room()
        if room is None:
            raise err.NoRoom()
        return room

    # ----------------------------------------------------------------- output

    def error(self, text: str) -> None:
        self.ctx.stats["errors_sent"] += 1
        self.write(error(text))

    def timed_out(self, reason: DisconnectReason) -> None:
        self.error(QUIT_TEXT[reason])
        self.close(reason)


_COMMANDS: dict[str, Callable[[LineSession, str], int | None]] = {
    "nick": LineSession._nick,
    "join": LineSession._join,
    "who": LineSession._who,
    "history": LineSession._history,
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

__all__ = ["Item", "LineSession"]
