"""Rooms, nicknames, membership and room modes: the chat itself, with no I/O.

The hub is shared by every dialect. It changes state and **publishes** what happened as
wire-free :mod:`events <chatd.core.events>` with a :mod:`target <chatd.core.targets>`
(a room, a member, everyone) through the ``publish`` callable it was given (the
:class:`~chatd.core.router.Router`). It never encodes, never writes, and never learns
what a socket is: a :class:`Member` carries an opaque ``session`` and ``out`` that only
the router and the dialects use.

Rules the code keeps:

* **Refuse before changing.** Every check that can fail raises a
  :class:`~chatd.core.errors.HubError` before any state changes, so a refused request
  leaves no trace and each dialect renders the refusal its own way.
* **Publish synchronously, after the change.** ``publish`` delivers before it returns,
  and delivering never calls back into the hub (a transport only queues bytes, or marks
  itself to close later), so the member dicts being iterated never change under it.
* **Quits are published to rooms by name**, after the member has left them, so the
  quitter is not among the recipients and a remote node could resolve the same target.
* **Time comes in.** The hub reads the clocks it was given (wall time for topics and
  WHOWAS, monotonic time for the private-message budget), so tests can pass fakes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core.limits import TokenBucket
from chatd.core.masks import mask_match, normalize_ban_mask
from chatd.core.names import fold, nick_problem, normalize_room, room_problem
from chatd.core.targets import (
    Target,
    ToMember,
    ToRoom,
    ToRoomOperators,
    ToRooms,
    ToUserMode,
    ToWatchers,
)

#: Member flags in a room.
OP = 1
VOICE = 2
#: PREFIX order: the highest flag first.
PREFIXES = ((OP, "o", "@"), (VOICE, "v", "+"))

#: Room modes: list modes (always take an argument), a mode with an argument to set and
#: unset, one with an argument to set only, and plain flags (IRC's CHANMODES=A,B,C,D).
#: The lists: bans (``b``), ban exceptions (``e``: a matching member is not banned) and
#: invite exceptions (``I``: a matching member needs no invitation to a ``+i`` room).
#: The flags: ``C`` no CTCP requests (IRC's VERSION, PING...; actions still pass),
#: ``i`` invite-only, ``m`` moderated, ``n`` no messages from outside, ``s`` secret,
#: ``t`` only operators set the topic.
LIST_MODES = "beI"
KEY_MODES = "k"
LIMIT_MODES = "l"
FLAG_MODES = "Cimnst"
PREFIX_MODES = "ov"
#: Room modes a new room starts with: only members speak, only operators set the topic.
DEFAULT_ROOM_MODES = "nt"
#: Entries each of a room's lists (bans, exceptions, invite exceptions) may hold.
MAX_LIST = 100
#: User modes: ``B`` bot (IRCv3 bot mode), ``i`` invisible, ``o`` server operator (only
#: OPER sets it), ``w`` receives WALLOPS.
USER_MODES = "Biow"
#: Nicknames one member may monitor (IRCv3 MONITOR).
MAX_WATCH = 100

#: WHOWAS entries kept (nick changes and quits).
WHOWAS_KEEP = 1000


Publish = Callable[[ev.Event, Target, "Member | None", "Member | None"], None]


class Member:
    """One connection as the hub sees it; ``nick`` is ``None`` until it registers."""

    __slots__ = (
        "session",
        "out",
        "encoder",
        "nick",
        "key",
        "user",
        "host",
        "realname",
        "source",
        "rooms",
        "modes",
        "away",
        "signon",
        "inbox",
        "watching",
        "__weakref__",
    )

    def __init__(self, session: Any, out: Any, encoder: Any, host: str) -> None:
        #: The dialect session that owns this member (the hub only hands it back).
        self.session = session
        #: What the router writes to: an object with ``write(bytes)``.
        self.out = out
        #: The session's encoder: the router encodes once per distinct encoder.
        self.encoder = encoder
        self.nick: str | None = None
        self.key: str | None = None
        self.user = "line"
        self.host = host
        self.realname = ""
        self.source: ev.Source | None = None
        #: Rooms by key, in join order.
        self.rooms: dict[str, Room] = {}
        self.modes = ""
        self.away: str | None = None
        self.signon = 0.0
        #: Private-message budget (bytes from others), made on first use.
        self.inbox: TokenBucket | None = None
        #: Nicknames this member monitors: folded key → the nick as it was asked for.
        self.watching: dict[str, str] = {}

    @property
    def room(self) -> Room | None:
        """The line dialect's current room: the last one joined."""
        if not self.rooms:
            return None
        return next(reversed(self.rooms.values()))

    @property
    def mask(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"

    def __repr__(self) -> str:
        return f"<Member {self.nick or '(unregistered)'}>"


class Room:
    """A named set of members, in join order, with a topic and modes."""

    __slots__ = (
        "name",
        "key",
        "members",
        "topic",
        "topic_by",
        "topic_at",
        "created",
        "modes",
        "password",
        "limit",
        "bans",
        "excepts",
        "invexes",
        "invites",
    )

    def __init__(self, name: str, created: float) -> None:
        self.name = name
        self.key = fold(name)
        #: Member → flags (:data:`OP`, :data:`VOICE`); iteration order is join order.
        self.members: dict[Member, int] = {}
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0.0
        self.created = created
        self.modes = DEFAULT_ROOM_MODES
        self.password: str | None = None
        self.limit: int | None = None
        #: The ``b``, ``e`` and ``I`` lists, each of (mask, set by, when).
        self.bans: list[tuple[str, str, float]] = []
        self.excepts: list[tuple[str, str, float]] = []
        self.invexes: list[tuple[str, str, float]] = []
        #: Keys of members invited since the room became invite-only.
        self.invites: set[str] = set()

    def is_op(self, member: Member) -> bool:
        return bool(self.members.get(member, 0) & OP)

    def mask_list(self, char: str) -> list[tuple[str, str, float]]:
        """The list of list mode ``char`` (``b``, ``e`` or ``I``)."""
        if char == "b":
            return self.bans
        if char == "e":
            return self.excepts
        if char == "I":
            return self.invexes
        raise ValueError(f"not a list mode: {char!r}")

    def mode_string(self, show_key: bool = True) -> tuple[str, list[str]]:
        """``("+ntk", ["key"])``: the flags and arguments MODE #room shows."""
        modes = "+" + self.modes
        args: list[str] = []
        if self.password is not None:
            modes += "k"
            args.append(self.password if show_key else "*")
        if self.limit is not None:
            modes += "l"
            args.append(str(self.limit))
        return modes, args


@dataclass(frozen=True, slots=True)
class WhowasEntry:
    nick: str
    user: str
    host: str
    realname: str
    when: float


@dataclass(slots=True)
class ModeChange:
    """One requested room mode change: ``("+", "o", "bob")``."""

    sign: str
    char: str
    arg: str | None = None


class Hub:
    """All rooms and nicknames of one server, whatever dialect each member speaks."""

    def __init__(
        self,
        publish: Publish,
        default_room: str = "#lobby",
        *,
        reserved_nicks: Iterable[str] = (),
        action_forgeable: Callable[[str, str], bool] | None = None,
        private_rate: float = 0.0,
        private_burst: int = 0,
        max_rooms_per_member: int = 0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        ``reserved_nicks`` and ``action_forgeable`` come from the dialects: a nickname or
        an action that would render as one of some dialect's server notices is refused.
        ``private_rate``/``private_burst``: bytes per second (and at once) one member may
        be sent in private messages by everyone else together (0: unbounded).
        """
        default = normalize_room(default_room)
        problem = room_problem(default)
        if problem:
            raise ValueError(f"invalid default room {default_room!r}: {problem}")
        self.publish = publish
        self.default_room = default
        self.reserved = frozenset(fold(n) for n in reserved_nicks)
        self.action_forgeable = action_forgeable
        self.private_rate = private_rate
        self.private_burst = private_burst
        self.max_rooms = max_rooms_per_member
        self.clock = clock
        self.monotonic = monotonic
        self.rooms: dict[str, Room] = {}
        self.nicks: dict[str, Member] = {}
        #: Every connected member, registered or not.
        self.members: dict[Member, None] = {}
        self.whowas: deque[WhowasEntry] = deque(maxlen=WHOWAS_KEEP)
        #: Folded nick → the members monitoring it (IRCv3 MONITOR), whether or not the
        #: nick is in use; each member's own list is :attr:`Member.watching`.
        self.watchers: dict[str, set[Member]] = {}
        self.max_registered = 0
        self._msgids = 0
        #: When the hub started (IRC's 003 "created" and RPL_CREATIONTIME of rooms).
        self.started = clock()

    # ----------------------------------------------------------------- life cycle

    def connect(self, session: Any, out: Any, encoder: Any, host: str) -> Member:
        member = Member(session, out, encoder, host)
        self.members[member] = None
        return member

    def check_nick(self, nick: str, member: Member | None = None) -> None:
        """Raise the reason ``nick`` cannot be taken (by ``member``, for a change of case)."""
        problem = nick_problem(nick)
        if problem:
            raise err.ErroneousNick(nick, problem)
        key = fold(nick)
        if key in self.reserved:
            raise err.NickReserved(nick)
        holder = self.nicks.get(key)
        if holder is not None and holder is not member:
            raise err.NickInUse(nick)

    def register(self, member: Member, nick: str, user: str = "line", realname: str = "") -> None:
        """Give an unregistered member its nickname (it joins no room here)."""
        if member.nick is not None:
            raise RuntimeError("member is already registered")
        self.check_nick(nick)
        member.nick = nick
        member.key = fold(nick)
        member.user = user
        member.realname = realname
        member.source = ev.Source(nick, user, member.host)
        member.signon = self.clock()
        self.nicks[member.key] = member
        if len(self.nicks) > self.max_registered:
            self.max_registered = len(self.nicks)
        if member.key in self.watchers:
            self.publish(ev.CameOnline(member.source), ToWatchers(member.key), member, None)

    def disconnect(
        self, member: Member, reason: str = "", by_user: bool = False, quiet: bool = False
    ) -> None:
        """Forget a member; everyone who shared a room with it is told. Safe twice.

        ``quiet``: tell nobody (at shutdown everyone was told already).
        """
        if self.members.pop(member, False) is False:
            return
        source = member.source
        if source is None or member.key is None:
            return
        del self.nicks[member.key]
        self._remember(member)
        self.unwatch_all(member)
        rooms = tuple(member.rooms)
        for room in list(member.rooms.values()):
            self._remove(member, room)
        if rooms and not quiet:
            self.publish(ev.Quit(source, reason, by_user), ToRooms(rooms), None, None)
        if member.key in self.watchers and not quiet:
            self.publish(ev.WentOffline(source.nick), ToWatchers(member.key), None, None)

    def change_nick(self, member: Member, new: str) -> None:
        old = self._registered(member)
        if new == old.nick:
            raise err.SameNick(new)
        self.check_nick(new, member)
        key = fold(new)
        old_key: str = member.key  # type: ignore[assignment]
        self._remember(member)
        del self.nicks[old_key]
        self.nicks[key] = member
        member.nick = new
        member.key = key
        member.source = ev.Source(new, member.user, member.host, old.bot)
        self.publish(ev.NickChanged(old, new), ToRooms(tuple(member.rooms), also=key), member, None)
        if key != old_key:  # a change of case only is the same nickname to a watcher
            if old_key in self.watchers:
                self.publish(ev.WentOffline(old.nick), ToWatchers(old_key), None, None)
            if key in self.watchers:
                self.publish(ev.CameOnline(member.source), ToWatchers(key), member, None)

    # ----------------------------------------------------------------- rooms

    def find_room(self, name: str) -> Room | None:
        return self.rooms.get(fold(normalize_room(name)))

    def room_or_raise(self, name: str) -> Room:
        room = self.find_room(name)
        if room is None:
            raise err.NoSuchRoom(name)
        return room

    def join(
        self,
        member: Member,
        name: str,
        password: str | None = None,
        *,
        echo: bool = True,
    ) -> Room:
        """Put ``member`` into room ``name`` (created on demand; its first member is op).

        ``echo``: the joiner receives the JOIN event too (IRC); the line dialect renders
        its own confirmation instead.
        """
        source = self._registered(member)
        name = normalize_room(name)
        problem = room_problem(name)
        if problem:
            raise err.BadRoomName(name, problem)
        key = fold(name)
        room = self.rooms.get(key)
        if room is not None:
            if member in room.members:
                raise err.AlreadyInRoom(room.name)
            self.check_can_join(member, room, password)
        if self.max_rooms and len(member.rooms) >= self.max_rooms:
            raise err.TooManyRooms(name, self.max_rooms)
        flags = 0
        if room is None:
            room = self.rooms[key] = Room(name, self.clock())
            flags = OP
        room.members[member] = flags
        member.rooms[key] = room
        room.invites.discard(member.key)  # type: ignore[arg-type]
        event = ev.Joined(source, room.name, len(room.members), member.realname, member.away)
        self.publish(event, ToRoom(key, None if echo else member.key), member, None)
        return room

    def check_can_join(self, member: Member, room: Room, password: str | None) -> None:
        """Raise the reason ``member`` may not enter ``room`` with ``password``.

        An invitation lets a member past ``+i``, ``+l`` and bans (not past a key); an
        invite exception (``+I``) matching it lets it past ``+i`` only.
        """
        invited = member.key in room.invites
        if "i" in room.modes and not invited and not _matches(room.invexes, member.mask):
            raise err.InviteOnly(room.name)
        if room.password is not None and password != room.password:
            raise err.BadKey(room.name)
        if room.limit is not None and len(room.members) >= room.limit and not invited:
            raise err.RoomFull(room.name)
        if not invited and self.is_banned(member, room):
            raise err.Banned(room.name)

    def is_banned(self, member: Member, room: Room) -> bool:
        """A ban (``+b``) matches ``member`` and no ban exception (``+e``) does."""
        if not room.bans:
            return False
        mask = member.mask
        return _matches(room.bans, mask) and not _matches(room.excepts, mask)

    def part(self, member: Member, name: str, reason: str = "", *, echo: bool = True) -> None:
        source = self._registered(member)
        room = self.room_or_raise(name)
        if member not in room.members:
            raise err.NotInRoom(room.name)
        key = room.key
        target = ToRoom(key, None if echo else member.key)
        # Published before removal so an echoed PART reaches the parter itself.
        self.publish(ev.Parted(source, room.name, reason), target, member, None)
        self._remove(member, room)

    def kick(self, member: Member, name: str, nick: str, reason: str = "") -> None:
        source = self._registered(member)
        room = self.room_or_raise(name)
        if member not in room.members:
            raise err.NotInRoom(room.name)
        victim = self.nicks.get(fold(nick))
        if victim is None:
            raise err.NoSuchNick(nick)
        if victim not in room.members:
            raise err.UserNotInRoom(nick, room.name)
        if not room.is_op(member):
            raise err.NotRoomOperator(room.name)
        event = ev.Kicked(source, room.name, victim.nick, reason or source.nick)  # type: ignore[arg-type]
        self.publish(event, ToRoom(room.key), member, victim)
        self._remove(victim, room)

    def topic(self, member: Member, name: str, text: str) -> None:
        source = self._registered(member)
        room = self.room_or_raise(name)
        if member not in room.members:
            raise err.NotInRoom(room.name)
        if "t" in room.modes and not room.is_op(member):
            raise err.NotRoomOperator(room.name)
        room.topic = text
        room.topic_by = source.nick
        room.topic_at = self.clock()
        self.publish(ev.TopicChanged(source, room.name, text), ToRoom(room.key), member, None)

    def invitations(self, member: Member) -> list[Room]:
        """The rooms ``member`` is invited to and has not entered yet (IRC's INVITE list)."""
        key = member.key
        return [room for room in self.rooms.values() if key in room.invites]

    def invite(self, member: Member, nick: str, name: str) -> Room:
        source = self._registered(member)
        invitee = self.nicks.get(fold(nick))
        if invitee is None:
            raise err.NoSuchNick(nick)
        room = self.room_or_raise(name)
        if member not in room.members:
            raise err.NotInRoom(room.name)
        if invitee in room.members:
            raise err.UserInRoom(invitee.nick, room.name)  # type: ignore[arg-type]
        if "i" in room.modes and not room.is_op(member):
            raise err.NotRoomOperator(room.name)
        room.invites.add(invitee.key)  # type: ignore[arg-type]
        event = ev.Invited(source, invitee.nick, room.name)  # type: ignore[arg-type]
        self.publish(event, ToMember(invitee.key), member, invitee)  # type: ignore[arg-type]
        self.publish(event, ToRoomOperators(room.key, skip=member.key), member, invitee)
        return room

    # ----------------------------------------------------------------- chat

    def say(
        self,
        member: Member,
        name: str,
        texts: tuple[str, ...],
        kind: ev.ChatKind = ev.ChatKind.SAY,
        tags: tuple[tuple[str, str], ...] = (),
        *,
        audience: str = "",
        ctcp: bool = False,
    ) -> ev.Chat:
        """Lines from ``member`` to room ``name`` (every other member gets each, in order).

        ``audience``: ``"o"`` sends to the room's operators only, ``"v"`` to its voiced
        members and operators (IRC's STATUSMSG); the sender must still be allowed to
        speak in the room. ``ctcp``: the text is an IRC client-to-client request (not
        an action), which a ``+C`` room refuses.
        Returns the event, so that a dialect can echo it to its sender (echo-message).
        """
        source = self._registered(member)
        room = self.room_or_raise(name)
        self._check_can_send(member, room)
        if ctcp and "C" in room.modes and not room.is_op(member):
            raise err.CannotSend(room.name, "CTCP requests are blocked (+C)")
        if kind is ev.ChatKind.ACTION:
            self._check_action(source.nick, texts)
        event = ev.Chat(
            source, room.name, texts, kind, tags, self.clock(), self._next_id(), audience
        )
        if audience:
            target: Target = ToRoomOperators(room.key, member.key, voiced=audience == "v")
        else:
            target = ToRoom(room.key, member.key)
        self.publish(event, target, None, None)
        return event

    def _next_id(self) -> str:
        self._msgids += 1
        return f"{self._msgids:x}"

    def _check_can_send(self, member: Member, room: Room) -> None:
        flags = room.members.get(member)
        if flags is None:
            if "n" in room.modes:
                raise err.CannotSend(room.name, "you are not in it (+n)")
            flags = 0
        if flags:
            return  # operators and voiced members always speak
        if "m" in room.modes:
            raise err.CannotSend(room.name, "it is moderated (+m)")
        if self.is_banned(member, room):
            raise err.CannotSend(room.name, "you are banned (+b)")

    def _check_action(self, nick: str, texts: Iterable[str]) -> None:
        if self.action_forgeable is not None:
            for text in texts:
                if self.action_forgeable(nick, text):
                    raise err.ForgedNotice()

    def private(
        self,
        member: Member,
        nick: str,
        text: str,
        kind: ev.ChatKind = ev.ChatKind.SAY,
        cost: int = 0,
        tags: tuple[tuple[str, str], ...] = (),
    ) -> ev.PrivateChat:
        """A private message; refused if ``nick``'s budget for this second is spent.

        ``cost`` is what the message costs the recipient's budget (the sender's dialect
        knows its size on the wire; 0 means the length of the text). Returns the event.
        """
        source = self._registered(member)
        recipient = self.nicks.get(fold(nick))
        if recipient is None:
            raise err.NoSuchNick(nick)
        if kind is ev.ChatKind.ACTION:
            self._check_action(source.nick, (text,))
        if self.private_rate > 0 and recipient is not member:
            self._charge_inbox(recipient, cost or len(text) + 64)
        event = ev.PrivateChat(
            source,
            recipient.nick,  # type: ignore[arg-type]
            text,
            kind,
            tags,
            self.clock(),
            self._next_id(),
        )
        self.publish(event, ToMember(recipient.key), None, recipient)  # type: ignore[arg-type]
        return event

    def _charge_inbox(self, recipient: Member, cost: int) -> None:
        now = self.monotonic()
        bucket = recipient.inbox
        if bucket is None:
            burst = max(self.private_burst, 1)
            bucket = recipient.inbox = TokenBucket(self.private_rate, burst, now)
        if not bucket.take(now, cost):
            raise err.RecipientBusy(recipient.nick)  # type: ignore[arg-type]

    def wallops(self, member: Member, text: str) -> None:
        source = self._registered(member)
        if "o" not in member.modes:
            raise err.NoPrivileges()
        self.publish(ev.Wallops(source, text), ToUserMode("w"), member, None)

    def set_away(self, member: Member, text: str | None) -> None:
        """Away (``text``) or back (``None``); rooms and extended-monitor watchers learn it."""
        source = self._registered(member)
        member.away = text or None
        target = ToRooms(tuple(member.rooms), skip=member.key, watched=member.key)
        self.publish(ev.AwayChanged(source, member.away), target, member, None)

    def set_realname(self, member: Member, realname: str) -> None:
        """A new realname (IRCv3 SETNAME): the member, its rooms and watchers are told."""
        source = self._registered(member)
        if not realname:
            raise err.NeedMoreParams("realname")
        member.realname = realname
        key: str = member.key  # type: ignore[assignment]
        target = ToRooms(tuple(member.rooms), also=key, watched=key)
        self.publish(ev.RealnameChanged(source, realname), target, member, None)

    # ----------------------------------------------------------------- monitor

    def watch(self, member: Member, nicks: Iterable[str]) -> tuple[list[str], list[str]]:
        """Add nicknames to ``member``'s monitor list, as far as :data:`MAX_WATCH` allows.

        Returns the nicks added (or already there) and those refused because the list
        is full. A nick that is not a valid nickname (a mask) is never added: the
        dialect reports it; here it is silently left out.
        """
        self._registered(member)
        added: list[str] = []
        refused: list[str] = []
        watching = member.watching
        for nick in nicks:
            if nick_problem(nick):
                continue
            key = fold(nick)
            if key in watching:
                added.append(nick)
                continue
            if len(watching) >= MAX_WATCH:
                refused.append(nick)
                continue
            watching[key] = nick
            self.watchers.setdefault(key, set()).add(member)
            added.append(nick)
        return added, refused

    def unwatch(self, member: Member, nicks: Iterable[str]) -> None:
        for nick in nicks:
            key = fold(nick)
            if member.watching.pop(key, None) is not None:
                self._drop_watcher(key, member)

    def unwatch_all(self, member: Member) -> None:
        for key in member.watching:
            self._drop_watcher(key, member)
        member.watching.clear()

    def _drop_watcher(self, key: str, member: Member) -> None:
        watchers = self.watchers.get(key)
        if watchers is not None:
            watchers.discard(member)
            if not watchers:
                del self.watchers[key]

    # ----------------------------------------------------------------- modes

    def change_room_modes(
        self, member: Member, name: str, changes: Iterable[ModeChange]
    ) -> tuple[list[ModeChange], list[err.HubError]]:
        """Apply what may be applied; return it and the refusals, one per bad change.

        Changes that change nothing (``+n`` on a ``+n`` room) are dropped silently, as
        IRC servers do. The applied ones are published as one MODE event.
        """
        source = self._registered(member)
        room = self.room_or_raise(name)
        changes = list(changes)
        if changes and not room.is_op(member) and "o" not in member.modes:
            raise err.NotRoomOperator(room.name)
        applied: list[ModeChange] = []
        refused: list[err.HubError] = []
        for change in changes:
            try:
                if self._apply(room, change, source.nick):
                    applied.append(change)
            except err.HubError as exc:
                refused.append(exc)
        if applied:
            modes, args = _mode_line(applied)
            event = ev.ModeChanged(source, room.name, modes, tuple(args))
            self.publish(event, ToRoom(room.key), member, None)
        return applied, refused

    def _apply(self, room: Room, change: ModeChange, setter: str) -> bool:
        sign, char, arg = change.sign, change.char, change.arg
        adding = sign == "+"
        if char in PREFIX_MODES:
            if not arg:
                raise err.NeedMoreParams(f"MODE {sign}{char}")
            target = self.nicks.get(fold(arg))
            if target is None:
                raise err.NoSuchNick(arg)
            if target not in room.members:
                raise err.UserNotInRoom(arg, room.name)
            flag = OP if char == "o" else VOICE
            old = room.members[target]
            new = old | flag if adding else old & ~flag
            if new == old:
                return False
            room.members[target] = new
            change.arg = target.nick
            return True
        if char in LIST_MODES:
            if not arg:
                raise err.NeedMoreParams(f"MODE {sign}{char}")
            entries = room.mask_list(char)
            mask = normalize_ban_mask(arg)
            change.arg = mask
            present = [i for i, (m, _, _) in enumerate(entries) if fold(m) == fold(mask)]
            if adding:
                if present:
                    return False
                if len(entries) >= MAX_LIST:
                    raise err.BanListFull(room.name, char)
                entries.append((mask, setter, self.clock()))
                return True
            if not present:
                return False
            del entries[present[0]]
            return True
        if char in KEY_MODES:
            if adding:
                if not arg or " " in arg:
                    raise err.InvalidModeParam(room.name, char, arg or "", "a key is one word")
                if room.password == arg:
                    return False
                room.password = arg
                return True
            if room.password is None:
                return False
            change.arg = room.password if arg is None else arg
            room.password = None
            return True
        if char in LIMIT_MODES:
            if adding:
                limit = int(arg) if arg and arg.isdigit() else 0
                if limit <= 0:
                    raise err.InvalidModeParam(
                        room.name, char, arg or "", "a limit is a whole number above 0"
                    )
                if room.limit == limit:
                    return False
                room.limit = limit
                change.arg = str(limit)
                return True
            if room.limit is None:
                return False
            room.limit = None
            change.arg = None
            return True
        if char in FLAG_MODES:
            present = char in room.modes
            if adding == present:
                return False
            if adding:
                room.modes = "".join(sorted(room.modes + char))
            else:
                room.modes = room.modes.replace(char, "")
                if char == "i":
                    room.invites.clear()
            change.arg = None
            return True
        raise err.UnknownMode(char, room.name)

    def change_user_modes(self, member: Member, changes: Iterable[ModeChange]) -> str:
        """Apply user mode changes a member may make itself (+B, +i, +w, -o); return them."""
        source = self._registered(member)
        applied = ""
        sign_shown = ""
        for change in changes:
            char, adding = change.char, change.sign == "+"
            if char not in USER_MODES:
                raise err.UnknownMode(char)
            if char == "o" and adding:
                continue  # only OPER gives +o
            present = char in member.modes
            if adding == present:
                continue
            member.modes = (
                "".join(sorted(member.modes + char)) if adding else member.modes.replace(char, "")
            )
            if change.sign != sign_shown:
                applied += change.sign
                sign_shown = change.sign
            applied += char
        if ("B" in member.modes) != source.bot:
            member.source = ev.Source(source.nick, source.user, source.host, not source.bot)
        return applied

    def make_oper(self, member: Member) -> None:
        self._registered(member)
        if "o" not in member.modes:
            member.modes = "".join(sorted(member.modes + "o"))

    # ----------------------------------------------------------------- queries

    def find(self, nick: str) -> Member | None:
        return self.nicks.get(fold(nick))

    def list_rooms(self) -> list[Room]:
        """Busiest rooms first, then by name."""
        return sorted(self.rooms.values(), key=lambda r: (-len(r.members), fold(r.name)))

    def shares_room(self, a: Member, b: Member) -> bool:
        if len(a.rooms) > len(b.rooms):
            a, b = b, a
        return any(key in b.rooms for key in a.rooms)

    def whowas_entries(self, nick: str) -> Iterator[WhowasEntry]:
        """The nick's past identities, newest first."""
        key = fold(nick)
        return (e for e in reversed(self.whowas) if fold(e.nick) == key)

    @property
    def registered(self) -> int:
        return len(self.nicks)

    # ----------------------------------------------------------------- helpers

    def _registered(self, member: Member) -> ev.Source:
        if member.source is None:
            raise RuntimeError("member is not registered")
        return member.source

    def _remember(self, member: Member) -> None:
        self.whowas.append(
            WhowasEntry(member.nick, member.user, member.host, member.realname, self.clock())  # type: ignore[arg-type]
        )

    def _remove(self, member: Member, room: Room) -> None:
        room.members.pop(member, None)
        member.rooms.pop(room.key, None)
        if not room.members and room.key != fold(self.default_room):
            del self.rooms[room.key]


def _matches(entries: list[tuple[str, str, float]], mask: str) -> bool:
    """Does any mask of a room's list match ``nick!user@host``?"""
    return any(mask_match(entry, mask) for entry, _, _ in entries)


def _mode_line(changes: list[ModeChange]) -> tuple[str, list[str]]:
    """``+o-v``, ``["bob", "amy"]``: one mode string for a list of applied changes."""
    modes = ""
    args: list[str] = []
    sign = ""
    for change in changes:
        if change.sign != sign:
            modes += change.sign
            sign = change.sign
        modes += change.char
        if change.arg is not None:
            args.append(change.arg)
    return modes, args


def parse_mode_changes(modestring: str, args: list[str]) -> tuple[list[ModeChange], list[str]]:
    """``"+ob-v", ["bob", "*!*@x", "amy"]`` → changes; unknown letters are kept (refused later).

    Returns the changes and the list-mode letters asked for without an argument (a query
    of the list, e.g. ``MODE #room +b``).
    """
    changes: list[ModeChange] = []
    queries: list[str] = []
    sign = "+"
    args = list(args)
    for char in modestring:
        if char in "+-":
            sign = char
            continue
        takes_arg = (
            char in PREFIX_MODES
            or char in LIST_MODES
            or char in KEY_MODES
            or (char in LIMIT_MODES and sign == "+")
        )
        if takes_arg:
            if args:
                changes.append(ModeChange(sign, char, args.pop(0)))
            elif char in LIST_MODES:
                queries.append(char)
            elif char in KEY_MODES and sign == "-":
                changes.append(ModeChange(sign, char, None))
            else:
                changes.append(ModeChange(sign, char, None))
        else:
            changes.append(ModeChange(sign, char, None))
    return changes, queries
