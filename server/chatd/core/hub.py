"""Rooms, nicknames, membership and modes: the chat itself, with no I/O.

The hub is shared by every dialect and knows none of them. Its state is plain data
(:mod:`chatd.core.model`); it changes **only by applying events**
(:mod:`chatd.core.events`), and every operation has the same three steps:

1. **validate**: every check that can fail raises a :class:`~chatd.core.errors.HubError`
   before anything changes, so a refused request leaves no trace;
2. **build** the event that names who and what (member ids, nicknames, room names,
   structured mode changes; the time and, for chat, one message id per line, minted
   here);
3. **commit**: :meth:`Hub.apply` the event (the only code that writes state), then
   ``publish`` it with a :mod:`target <chatd.core.targets>` (the
   :class:`~chatd.core.router.Router`, which resolves it to local connections).

An event replayed from history or received from another node enters through
:meth:`Hub.receive`, which is the same apply-then-publish; so a second node, or a
restart that replays a log, reaches the same state by the same code.

Rules the code keeps:

* **Publish synchronously, after the change.** ``publish`` delivers before it returns,
  and delivering never calls back into the hub (a transport only queues bytes, or marks
  itself to close later), so nothing the hub iterates changes under it.
* **One text policy** (:mod:`chatd.core.text`) for every text the hub stores or
  publishes: refused where the request can be refused, cleaned where it cannot (a quit).
* **Time comes in.** The hub reads the clocks it was given (wall time for events,
  monotonic time for the private-message budget), so tests pass fakes.
* **Work is counted where it is done.** Counts a query would otherwise scan for (users
  who are invisible or operators) are kept as events are applied, and a ban verdict is
  cached per member and room until the lists or the member's nick change.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core import text as policy
from chatd.core.ids import Mint
from chatd.core.limits import TokenBucket
from chatd.core.masks import normalize_ban_mask
from chatd.core.model import OP, VOICE, MaskEntry, Member, Room, WhowasEntry
from chatd.core.modes import (
    FLAG_MODES,
    KEY_MODES,
    LIMIT_MODES,
    LIST_MODES,
    MAX_LIST,
    PREFIX_MODES,
    USER_MODES,
    sorted_modes,
)
from chatd.core.monitor import Monitor
from chatd.core.names import fold, nick_problem, normalize_room, room_problem
from chatd.core.targets import (
    Target,
    ToMember,
    ToNobody,
    ToRoom,
    ToRoomOperators,
    ToRooms,
    ToUserMode,
    ToWatchers,
)

#: WHOWAS entries kept (nick changes and quits).
WHOWAS_KEEP = 1000
#: Invitations one room holds at most (the oldest goes first).
MAX_INVITES = 100

Publish = Callable[[ev.Event, Target], None]
#: ``(source, target, kind) -> bytes``: how much of one line of chat every dialect can
#: carry in one frame when ``source`` sends it to ``target`` (a room or a nick);
#: ``None`` means no limit. Supplied by the dialects (IRC's 512-byte line is the
#: narrowest), so the hub cuts long lines into pieces, each with its own id, without
#: knowing any wire format.
PieceBudget = Callable[[ev.Source, str, ev.ChatKind], int | None]


class Hub:
    """All rooms and nicknames of one chat, whatever dialect each member speaks."""

    def __init__(
        self,
        publish: Publish,
        default_room: str = "#lobby",
        *,
        reserved_nicks: Iterable[str] = (),
        action_forgeable: Callable[[str, str], bool] | None = None,
        piece_budget: PieceBudget | None = None,
        private_rate: float = 0.0,
        private_burst: int = 0,
        max_rooms_per_member: int = 0,
        max_rooms_per_address: int = 0,
        address_exempt: Callable[[str], bool] | None = None,
        mint: Mint | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        ``reserved_nicks``, ``action_forgeable`` and ``piece_budget`` come from the
        dialects: a nickname or an action that would render as one of some dialect's
        server notices is refused, and a line longer than some dialect's frame is cut.
        ``private_rate``/``private_burst``: bytes per second (and at once) one member may
        be sent in private messages by everyone else together (0: unbounded).
        ``max_rooms_per_member``, ``max_rooms_per_address``: rooms one member, and the
        members of one host together, may be in (0: unbounded); ``address_exempt(host)``
        exempts a host from the second (loopback, by default).
        """
        default = normalize_room(default_room)
        problem = room_problem(default)
        if problem:
            raise ValueError(f"invalid default room {default_room!r}: {problem}")
        self.publish = publish
        self.default_room = default
        self.default_key = fold(default)
        self.reserved = frozenset(fold(n) for n in reserved_nicks)
        self.action_forgeable = action_forgeable
        self.piece_budget = piece_budget
        self.private_rate = private_rate
        self.private_burst = private_burst
        self.max_rooms = max_rooms_per_member
        self.max_rooms_per_address = max_rooms_per_address
        self.address_exempt = address_exempt
        self.mint = mint if mint is not None else Mint()
        self.clock = clock
        self.monotonic = monotonic
        #: Room key → room.
        self.rooms: dict[str, Room] = {}
        #: Member id → registered member.
        self.members: dict[str, Member] = {}
        #: Folded nickname → member id.
        self.nicks: dict[str, str] = {}
        self.whowas: deque[WhowasEntry] = deque(maxlen=WHOWAS_KEEP)
        self.monitor = Monitor()
        #: Most members registered at once (LUSERS).
        self.max_registered = 0
        #: Registered members with user mode ``i``, and with ``o`` (LUSERS, kept as
        #: events are applied rather than counted per query).
        self.invisible = 0
        self.opers = 0
        #: Registered members of this node (on a cluster, the others' are remote).
        self.local_registered = 0
        #: Private-message budgets of recipients (bytes from others), made on first use.
        self.budgets: dict[str, TokenBucket] = {}
        #: Host → rooms its members are in, together (``max_rooms_per_address``).
        self.rooms_by_host: dict[str, int] = {}
        #: When the hub started (IRC's 003 "created").
        self.started = clock()

    # ================================================================= the one door

    def commit(self, event: ev.Event, target: Target) -> None:
        """Apply ``event`` to the state, then publish it to ``target``."""
        self.apply(event)
        self.publish(event, target)

    #: A replayed or remote event enters the same way as a local one.
    receive = commit

    def apply(self, event: ev.Event) -> None:
        """Change the state as ``event`` says; the only code that writes it.

        Events that change nothing (chat, notices) pass through.
        """
        match event:
            case ev.Registered(source=source, realname=realname, at=at):
                member = Member(
                    source.uid, source.nick, fold(source.nick), source.user, source.host
                )
                member.realname = realname
                member.signon = at
                self.members[member.uid] = member
                self.nicks[member.key] = member.uid
                if member.uid.startswith(self.mint.node):
                    self.local_registered += 1
                if len(self.nicks) > self.max_registered:
                    self.max_registered = len(self.nicks)
            case ev.Joined(source=source, room=name, flags=flags, at=at):
                member = self.members[source.uid]
                key = fold(name)
                room = self.rooms.get(key)
                if room is None:
                    room = self.rooms[key] = Room(name, key, at)
                room.members[member.uid] = flags
                member.rooms[key] = None
                self.rooms_by_host[member.host] = self.rooms_by_host.get(member.host, 0) + 1
                room.invites.pop(member.uid, None)
                if member.invited:
                    member.invited.discard(key)
            case ev.Parted(source=source, room=name):
                self._remove(source.uid, fold(name))
            case ev.Kicked(victim=victim, room=name):
                self._remove(victim.uid, fold(name))
            case ev.Quit(source=source, at=at):
                self._forget(source.uid, at)
            case ev.NickChanged(source=source, new=new, at=at):
                member = self.members[source.uid]
                self._remember(member, at)
                if self.nicks.get(member.key) == member.uid:  # (a cluster's race: see
                    del self.nicks[member.key]  # chatd.cluster.node, never on one node)
                member.nick = new
                member.key = fold(new)
                self.nicks[member.key] = member.uid
                member.source = ev.Source(
                    new, member.user, member.host, "B" in member.modes, member.uid
                )
                for key in member.rooms:
                    self.rooms[key].banned.pop(member.uid, None)
            case ev.TopicChanged(source=source, room=name, topic=topic, at=at):
                room = self.rooms[fold(name)]
                room.topic = topic
                room.topic_by = source.nick
                room.topic_at = at
            case ev.ModeChanged(source=source, room=name, changes=changes, at=at):
                room = self.rooms[fold(name)]
                for change in changes:
                    self._apply_mode(room, change, source.nick, at)
            case ev.UserModeChanged(source=source, changes=changes):
                self._apply_user_modes(self.members[source.uid], changes)
            case ev.Invited(victim=victim, room=name):
                room = self.rooms[fold(name)]
                invites = room.invites
                invites.pop(victim.uid, None)
                invites[victim.uid] = None
                invitee = self.members.get(victim.uid)
                if invitee is not None:
                    if invitee.invited is None:
                        invitee.invited = set()
                    invitee.invited.add(room.key)
                if len(invites) > MAX_INVITES:
                    self._uninvite(room, next(iter(invites)))
            case ev.RoomRestored(room=name, created=created):
                key = fold(name)
                if key not in self.rooms:
                    room = self.rooms[key] = Room(name, key, created)
                    room.topic, room.topic_by = event.topic, event.topic_by
                    room.topic_at = event.topic_at
                    room.modes = sorted_modes(c for c in event.modes if c in FLAG_MODES)
                    room.password, room.limit = event.password, event.limit
                    for entries, target in (
                        (event.bans, room.bans),
                        (event.excepts, room.excepts),
                        (event.invexes, room.invexes),
                    ):
                        target.extend(MaskEntry(m, by, at) for m, by, at in entries)
            case ev.AwayChanged(source=source, text=text):
                self.members[source.uid].away = text
            case ev.RealnameChanged(source=source, realname=realname):
                self.members[source.uid].realname = realname

    # ================================================================= members

    def check_nick(self, nick: str, uid: str | None = None) -> None:
        """Raise the reason ``nick`` cannot be taken (by ``uid``, for a change of case)."""
        problem = nick_problem(nick)
        if problem:
            raise err.ErroneousNick(nick, problem)
        key = fold(nick)
        if key in self.reserved:
            raise err.NickReserved(nick)
        holder = self.nicks.get(key)
        if holder is not None and holder != uid:
            raise err.NickInUse(nick)

    def register(self, uid: str, nick: str, user: str, host: str, realname: str = "") -> Member:
        """Claim ``nick`` for connection ``uid``: it becomes a member (of no room yet).

        The realname cannot be refused without refusing the connection, so it is cut to
        :data:`~chatd.core.text.REALNAMELEN` and cleaned of forbidden characters.
        """
        if uid in self.members:
            raise RuntimeError("member is already registered")
        self.check_nick(nick)
        at = self.clock()
        source = ev.Source(nick, user, host, False, uid)
        realname = policy.cleaned(realname[: policy.REALNAMELEN])
        self.commit(ev.Registered(source, realname, at=at), ToNobody())
        key = fold(nick)
        if key in self.monitor.watchers:
            self.publish(ev.CameOnline(source, at=at), ToWatchers(key))
        return self.members[uid]

    def disconnect(
        self, uid: str, reason: str = "", by_user: bool = False, quiet: bool = False
    ) -> None:
        """Forget a member; everyone who shared a room with it is told. Safe twice.

        ``quiet``: tell nobody (at shutdown everyone was told already; the router
        delivers nothing then). The reason is cleaned, not refused: the member is gone.
        """
        self.monitor.clear(uid)
        member = self.members.get(uid)
        if member is None:
            return
        at = self.clock()
        reason = policy.cleaned(reason[: policy.REASONLEN])
        rooms = tuple(member.rooms)
        source = member.source
        key = member.key
        self.commit(ev.Quit(source, reason, by_user, at=at), ToRooms(rooms, skip=uid))
        if key in self.monitor.watchers and not quiet:
            self.publish(ev.WentOffline(source.nick, at=at), ToWatchers(key))

    def change_nick(self, uid: str, new: str) -> None:
        member = self._member(uid)
        old = member.source
        if new == old.nick:
            raise err.SameNick(new)
        self.check_nick(new, uid)
        old_key = member.key
        at = self.clock()
        target = ToRooms(tuple(member.rooms), also=uid)
        self.commit(ev.NickChanged(old, new, at=at), target)
        key = member.key
        if key != old_key:  # a change of case only is the same nickname to a watcher
            watchers = self.monitor.watchers
            if old_key in watchers:
                self.publish(ev.WentOffline(old.nick, at=at), ToWatchers(old_key))
            if key in watchers:
                self.publish(ev.CameOnline(member.source, at=at), ToWatchers(key))

    def kill(self, uid: str, nick: str, reason: str) -> None:
        """A server operator disconnects ``nick``, whatever dialect it speaks.

        The victim is told (:class:`~chatd.core.events.Killed`; its node closes the
        connection), then everyone who shared a room with it sees it quit.
        """
        member = self._member(uid)
        if "o" not in member.modes:
            raise err.NoPrivileges()
        victim = self.find(nick)
        if victim is None:
            raise err.NoSuchNick(nick)
        reason = policy.cleaned(reason[: policy.REASONLEN]) or "no reason"
        at = self.clock()
        self.commit(ev.Killed(member.source, victim.source, reason, at=at), ToMember(victim.uid))
        self.disconnect(victim.uid, f"Killed ({member.source.nick} ({reason}))")

    def set_away(self, uid: str, text: str | None) -> None:
        """Away (``text``) or back (``None``); rooms and extended-monitor watchers learn it."""
        member = self._member(uid)
        text = self._text("away", text[: policy.AWAYLEN]) if text else None
        target = ToRooms(tuple(member.rooms), skip=uid, watched=member.key)
        self.commit(ev.AwayChanged(member.source, text, at=self.clock()), target)

    def set_realname(self, uid: str, realname: str) -> None:
        """A new realname (IRCv3 SETNAME): the member, its rooms and watchers are told."""
        member = self._member(uid)
        if not realname:
            raise err.NeedMoreParams("realname")
        if len(realname) > policy.REALNAMELEN:
            raise err.InvalidText("realname", f"longer than {policy.REALNAMELEN} characters")
        self._text("realname", realname)
        target = ToRooms(tuple(member.rooms), also=uid, watched=member.key)
        self.commit(ev.RealnameChanged(member.source, realname, at=self.clock()), target)

    def change_user_modes(self, uid: str, changes: Iterable[ev.ModeChange]) -> str:
        """Apply user mode changes a member may make itself (+B, +i, +w, -o); return them."""
        member = self._member(uid)
        modes = member.modes
        applied = ""
        sign_shown = ""
        for change in changes:
            char, adding = change.char, change.sign == "+"
            if char not in USER_MODES:
                raise err.UnknownMode(char)
            if char == "o" and adding:
                continue  # only OPER gives +o
            if adding == (char in modes):
                continue
            modes = sorted_modes(modes + char) if adding else modes.replace(char, "")
            if change.sign != sign_shown:
                applied += change.sign
                sign_shown = change.sign
            applied += char
        if applied:
            event = ev.UserModeChanged(member.source, applied, at=self.clock())
            self.commit(event, ToMember(uid))
        return applied

    def make_oper(self, uid: str) -> None:
        member = self._member(uid)
        if "o" not in member.modes:
            event = ev.UserModeChanged(member.source, "+o", at=self.clock())
            self.commit(event, ToMember(uid))

    def wallops(self, uid: str, text: str) -> None:
        member = self._member(uid)
        if "o" not in member.modes:
            raise err.NoPrivileges()
        text = self._text("chat", text[: policy.TOPICLEN])
        self.commit(ev.Wallops(member.source, text, at=self.clock()), ToUserMode("w"))

    # ================================================================= rooms

    def find_room(self, name: str) -> Room | None:
        return self.rooms.get(fold(normalize_room(name)))

    def room_or_raise(self, name: str) -> Room:
        room = self.find_room(name)
        if room is None:
            raise err.NoSuchRoom(name)
        return room

    def join(self, uid: str, name: str, password: str | None = None, *, echo: bool = True) -> Room:
        """Put member ``uid`` into room ``name`` (created on demand; its first member is op).

        ``echo``: the joiner receives the JOIN event too (IRC); the line dialect renders
        its own confirmation instead.
        """
        member = self._member(uid)
        name = normalize_room(name)
        problem = room_problem(name)
        if problem:
            raise err.BadRoomName(name, problem)
        key = fold(name)
        room = self.rooms.get(key)
        if room is not None:
            if uid in room.members:
                raise err.AlreadyInRoom(room.name)
            self.check_can_join(member, room, password)
            name = room.name
        if self.max_rooms and len(member.rooms) >= self.max_rooms:
            raise err.TooManyRooms(name, self.max_rooms)
        per_host = self.max_rooms_per_address
        if per_host and self.rooms_by_host.get(member.host, 0) >= per_host:
            if self.address_exempt is None or not self.address_exempt(member.host):
                raise err.TooManyRooms(name, per_host, by_address=True)
        created = room is None
        count = 1 if room is None else len(room.members) + 1
        # The first member of a room is its operator: of a new room, and of a room
        # restored empty at start (chatd.history) that someone enters first.
        event = ev.Joined(
            member.source,
            name,
            count,
            member.realname,
            member.away,
            OP if count == 1 else 0,
            created,
            at=self.clock(),
        )
        self.commit(event, ToRoom(key, None if echo else uid))
        return self.rooms[key]

    def check_can_join(self, member: Member, room: Room, password: str | None) -> None:
        """Raise the reason ``member`` may not enter ``room`` with ``password``.

        An invitation lets a member past ``+i``, ``+l`` and bans (not past a key); an
        invite exception (``+I``) matching it lets it past ``+i`` only.
        """
        invited = member.uid in room.invites
        if "i" in room.modes and not invited and not _matches(room.invexes, member.mask):
            raise err.InviteOnly(room.name)
        if room.password is not None and password != room.password:
            raise err.BadKey(room.name)
        if room.limit is not None and len(room.members) >= room.limit and not invited:
            raise err.RoomFull(room.name)
        if not invited and self.is_banned(member, room):
            raise err.Banned(room.name)

    def is_banned(self, member: Member, room: Room) -> bool:
        """A ban (``+b``) matches ``member`` and no ban exception (``+e``) does.

        Cached per member in the room (:attr:`Room.banned`) until the lists or the
        member's nick change, so a chat line costs a dict lookup, not a glob per mask.
        """
        if not room.bans:
            return False
        verdict = room.banned.get(member.uid)
        if verdict is None:
            mask = member.mask
            verdict = _matches(room.bans, mask) and not _matches(room.excepts, mask)
            if member.uid in room.members:
                room.banned[member.uid] = verdict
        return verdict

    def part(self, uid: str, name: str, reason: str = "", *, echo: bool = True) -> None:
        member = self._member(uid)
        room = self.room_or_raise(name)
        if uid not in room.members:
            raise err.NotInRoom(room.name)
        reason = self._text("reason", reason[: policy.REASONLEN])
        target = ToRoom(room.key, None if echo else uid)
        self.commit(ev.Parted(member.source, room.name, reason, at=self.clock()), target)

    def kick(self, uid: str, name: str, nick: str, reason: str = "") -> None:
        member = self._member(uid)
        room = self.room_or_raise(name)
        if uid not in room.members:
            raise err.NotInRoom(room.name)
        victim = self.find(nick)
        if victim is None:
            raise err.NoSuchNick(nick)
        if victim.uid not in room.members:
            raise err.UserNotInRoom(nick, room.name)
        if not room.members[uid] & OP:
            raise err.NotRoomOperator(room.name)
        reason = self._text("reason", reason[: policy.REASONLEN]) or member.nick
        event = ev.Kicked(member.source, room.name, victim.source, reason, at=self.clock())
        self.commit(event, ToRoom(room.key))

    def topic(self, uid: str, name: str, text: str) -> None:
        member = self._member(uid)
        room = self.room_or_raise(name)
        if uid not in room.members:
            raise err.NotInRoom(room.name)
        if "t" in room.modes and not room.members[uid] & OP:
            raise err.NotRoomOperator(room.name)
        text = self._text("topic", text[: policy.TOPICLEN])
        event = ev.TopicChanged(member.source, room.name, text, at=self.clock())
        self.commit(event, ToRoom(room.key))

    def invitations(self, uid: str) -> list[Room]:
        """The rooms member ``uid`` is invited to and has not entered (IRC's INVITE list)."""
        member = self._member(uid)
        return [self.rooms[key] for key in sorted(member.invited or ())]

    def invite(self, uid: str, nick: str, name: str) -> Member:
        """Invite ``nick`` to room ``name``; returns the invitee."""
        member = self._member(uid)
        invitee = self.find(nick)
        if invitee is None:
            raise err.NoSuchNick(nick)
        room = self.room_or_raise(name)
        if uid not in room.members:
            raise err.NotInRoom(room.name)
        if invitee.uid in room.members:
            raise err.UserInRoom(invitee.nick, room.name)
        if "i" in room.modes and not room.members[uid] & OP:
            raise err.NotRoomOperator(room.name)
        event = ev.Invited(member.source, invitee.source, room.name, at=self.clock())
        self.commit(event, ToMember(invitee.uid))
        self.publish(event, ToRoomOperators(room.key, skip=uid))
        return invitee

    # ================================================================= chat

    def say(
        self,
        uid: str,
        name: str,
        texts: Iterable[str],
        kind: ev.ChatKind = ev.ChatKind.SAY,
        tags: tuple[tuple[str, str], ...] = (),
        *,
        audience: str = "",
        ctcp: bool = False,
    ) -> ev.Chat:
        """Lines from ``uid`` to room ``name`` (every other member gets each, in order).

        ``audience``: ``"o"`` sends to the room's operators only, ``"v"`` to its voiced
        members and operators (IRC's STATUSMSG); the sender must still be allowed to
        speak in the room. ``ctcp``: the text is an IRC client-to-client request (not
        an action), which a ``+C`` room refuses.
        Returns the event, so that a dialect can echo it to its sender (echo-message).
        """
        member = self._member(uid)
        room = self.room_or_raise(name)
        self._check_can_send(member, room)
        if ctcp and "C" in room.modes and not room.members.get(uid, 0) & OP:
            raise err.CannotSend(room.name, "C")
        texts = tuple(texts)
        for text in texts:
            self._text("chat", text)
        if kind is ev.ChatKind.ACTION:
            self._check_action(member.nick, texts)
        target_name = (("@" if audience == "o" else "+") + room.name) if audience else room.name
        lines = self._lines(member.source, target_name, kind, texts)
        event = ev.Chat(member.source, room.name, lines, kind, tags, audience)
        if audience:
            target: Target = ToRoomOperators(room.key, uid, voiced=audience == "v")
        else:
            target = ToRoom(room.key, uid)
        self.commit(event, target)
        return event

    def private(
        self,
        uid: str,
        nick: str,
        text: str,
        kind: ev.ChatKind = ev.ChatKind.SAY,
        cost: int = 0,
        tags: tuple[tuple[str, str], ...] = (),
    ) -> ev.PrivateChat:
        """A private message; refused if ``nick``'s budget for this second is spent.

        ``cost`` is what the message costs the recipient's budget (the sender's dialect
        knows its size on the wire, tags included; 0 means the length of the text plus
        64). Returns the event.
        """
        member = self._member(uid)
        recipient = self.find(nick)
        if recipient is None:
            raise err.NoSuchNick(nick)
        self._text("chat", text)
        if kind is ev.ChatKind.ACTION:
            self._check_action(member.nick, (text,))
        if self.private_rate > 0 and recipient is not member:
            self._charge_budget(recipient, cost or len(text.encode()) + 64)
        lines = self._lines(member.source, recipient.nick, kind, (text,))
        event = ev.PrivateChat(member.source, recipient.nick, recipient.uid, lines, kind, tags)
        self.commit(event, ToMember(recipient.uid))
        return event

    def _lines(
        self, source: ev.Source, target: str, kind: ev.ChatKind, texts: tuple[str, ...]
    ) -> tuple[ev.ChatLine, ...]:
        """One :class:`~chatd.core.events.ChatLine` per text, or per piece of a text too
        long for some dialect's frame; each with its own id and the same time."""
        at = self.clock()
        mint = self.mint
        budget = self.piece_budget(source, target, kind) if self.piece_budget else None
        lines: list[ev.ChatLine] = []
        for text in texts:
            if budget is not None and len(text) * 4 > budget and len(text.encode()) > budget:
                for i, piece in enumerate(policy.split_utf8(text, budget)):
                    lines.append(ev.ChatLine(piece, mint.msgid(at), at, i > 0))
            else:
                lines.append(ev.ChatLine(text, mint.msgid(at), at))
        return tuple(lines)

    def _check_can_send(self, member: Member, room: Room) -> None:
        flags = room.members.get(member.uid)
        if flags is None:
            if "n" in room.modes:
                raise err.CannotSend(room.name, "n")
            flags = 0
        if flags:
            return  # operators and voiced members always speak
        if "m" in room.modes:
            raise err.CannotSend(room.name, "m")
        if self.is_banned(member, room):
            raise err.CannotSend(room.name, "b")

    def _check_action(self, nick: str, texts: Iterable[str]) -> None:
        if self.action_forgeable is not None:
            for text in texts:
                if self.action_forgeable(nick, text):
                    raise err.ForgedNotice()

    def _charge_budget(self, recipient: Member, cost: int) -> None:
        now = self.monotonic()
        bucket = self.budgets.get(recipient.uid)
        if bucket is None:
            burst = max(self.private_burst, 1)
            bucket = self.budgets[recipient.uid] = TokenBucket(self.private_rate, burst, now)
        if not bucket.take(now, cost):
            raise err.RecipientBusy(recipient.nick)

    # ================================================================= modes

    def change_room_modes(
        self, uid: str, name: str, changes: Iterable[ev.ModeChange]
    ) -> tuple[list[ev.ModeChange], list[err.HubError]]:
        """Validate every change, then apply and publish the valid ones as one event.

        Changes are checked in order against the state the earlier ones would leave
        (``+k a -k a`` in one request works), each refused one with its own error;
        changes that change nothing (``+n`` on a ``+n`` room) are dropped silently, as
        IRC servers do. Nothing changes until every change has been checked, so a
        request applies exactly what it publishes.
        """
        member = self._member(uid)
        room = self.room_or_raise(name)
        changes = list(changes)
        if changes and not room.members.get(uid, 0) & OP and "o" not in member.modes:
            raise err.NotRoomOperator(room.name)
        draft = _Draft(room)
        accepted: list[ev.ModeChange] = []
        refused: list[err.HubError] = []
        unknown = False
        for change in changes:
            try:
                normal = self._check_mode(room, draft, change)
            except err.UnknownMode as exc:
                if not unknown:  # a bad mode string is answered once
                    refused.append(exc)
                unknown = True
                continue
            except err.HubError as exc:
                refused.append(exc)
                continue
            if normal is not None:
                accepted.append(normal)
        if accepted:
            event = ev.ModeChanged(member.source, room.name, tuple(accepted), at=self.clock())
            self.commit(event, ToRoom(room.key))
        return accepted, refused

    def _check_mode(self, room: Room, draft: _Draft, change: ev.ModeChange) -> ev.ModeChange | None:
        """The normalised change if it changes something, ``None`` if it does not;
        raises if it is refused. Records it in ``draft``."""
        sign, char, arg = change.sign, change.char, change.arg
        adding = sign == "+"
        if char in PREFIX_MODES:
            if not arg:
                raise err.NeedMoreParams(f"MODE {sign}{char}")
            target = self.find(arg)
            if target is None:
                raise err.NoSuchNick(arg)
            if target.uid not in room.members:
                raise err.UserNotInRoom(arg, room.name)
            flag = OP if char == "o" else VOICE
            old = draft.flags.get(target.uid, room.members[target.uid])
            new = old | flag if adding else old & ~flag
            if new == old:
                return None
            draft.flags[target.uid] = new
            return ev.ModeChange(sign, char, target.nick, target.uid)
        if char in LIST_MODES:
            if not arg:
                raise err.NeedMoreParams(f"MODE {sign}{char}")
            mask = normalize_ban_mask(arg)
            self._mode_word(room, char, mask, "mask", policy.MASKLEN)
            present = draft.has_mask(char, mask)
            if adding:
                if present:
                    return None
                if draft.list_size(char) >= MAX_LIST:
                    raise err.BanListFull(room.name, char)
            elif not present:
                return None
            draft.set_mask(char, mask, adding)
            return ev.ModeChange(sign, char, mask)
        if char in KEY_MODES:
            if adding:
                if not arg:
                    raise err.InvalidModeParam(room.name, char, "", "a key is one word")
                self._mode_word(room, char, arg, "key", policy.KEYLEN)
                if draft.password == arg:
                    return None
                draft.password = arg
                return ev.ModeChange(sign, char, arg)
            if draft.password is None:
                return None
            # The key being removed, not the client's word for it (which may be anything).
            shown = draft.password
            draft.password = None
            return ev.ModeChange(sign, char, shown)
        if char in LIMIT_MODES:
            if adding:
                limit = _whole_number(arg)
                if limit is None:
                    raise err.InvalidModeParam(
                        room.name, char, arg or "", "a limit is a whole number above 0"
                    )
                if draft.limit == limit:
                    return None
                draft.limit = limit
                return ev.ModeChange(sign, char, str(limit))
            if draft.limit is None:
                return None
            draft.limit = None
            return ev.ModeChange(sign, char, None)
        if char in FLAG_MODES:
            if adding == (char in draft.modes):
                return None
            if adding:
                draft.modes = sorted_modes(draft.modes + char)
            else:
                draft.modes = draft.modes.replace(char, "")
            return ev.ModeChange(sign, char, None)
        raise err.UnknownMode(char, room.name)

    @staticmethod
    def _mode_word(room: Room, char: str, word: str, what: str, limit: int) -> None:
        """A mask or key is one word of printable text, at most ``limit`` characters."""
        if " " in word or word.startswith(":") or "," in word:
            raise err.InvalidModeParam(room.name, char, word, f"a {what} is one word")
        if len(word) > limit:
            raise err.InvalidModeParam(
                room.name, char, word[:limit], f"a {what} is at most {limit} characters"
            )
        problem = policy.text_problem(word)
        if problem or not word.isprintable():
            raise err.InvalidModeParam(room.name, char, "*", f"a {what} is printable text")

    def _apply_mode(self, room: Room, change: ev.ModeChange, setter: str, at: float) -> None:
        sign, char, arg = change.sign, change.char, change.arg
        adding = sign == "+"
        if char in PREFIX_MODES:
            uid = change.uid or self.nicks.get(fold(arg or ""))
            if uid is not None and uid in room.members:
                flag = OP if char == "o" else VOICE
                old = room.members[uid]
                room.members[uid] = old | flag if adding else old & ~flag
        elif char in LIST_MODES:
            entries = room.mask_list(char)
            folded = fold(arg or "")
            entries[:] = [e for e in entries if fold(e.mask) != folded]
            if adding:
                entries.append(MaskEntry(arg or "", setter, at))
            if char != "I":
                room.banned.clear()
        elif char in KEY_MODES:
            room.password = arg if adding else None
        elif char in LIMIT_MODES:
            room.limit = int(arg) if adding and arg else None
        elif char in FLAG_MODES:
            if adding:
                room.modes = sorted_modes(room.modes + char)
            else:
                room.modes = room.modes.replace(char, "")
                if char == "i":
                    for uid in list(room.invites):
                        self._uninvite(room, uid)

    def _apply_user_modes(self, member: Member, changes: str) -> None:
        adding = True
        modes = member.modes
        for char in changes:
            if char in "+-":
                adding = char == "+"
                continue
            if adding == (char in modes):
                continue
            modes = sorted_modes(modes + char) if adding else modes.replace(char, "")
            step = 1 if adding else -1
            if char == "i":
                self.invisible += step
            elif char == "o":
                self.opers += step
        member.modes = modes
        if ("B" in modes) != member.source.bot:
            s = member.source
            member.source = ev.Source(s.nick, s.user, s.host, not s.bot, s.uid)

    # ================================================================= queries

    def find(self, nick: str) -> Member | None:
        uid = self.nicks.get(fold(nick))
        return self.members[uid] if uid is not None else None

    def member(self, uid: str) -> Member | None:
        return self.members.get(uid)

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

    # ================================================================= helpers

    def _member(self, uid: str) -> Member:
        member = self.members.get(uid)
        if member is None:
            raise RuntimeError("member is not registered")
        return member

    @staticmethod
    def _text(what: str, text: str) -> str:
        problem = policy.text_problem(text)
        if problem:
            raise err.InvalidText(what, problem)
        return text

    def _remember(self, member: Member, at: float) -> None:
        self.whowas.append(WhowasEntry(member.nick, member.user, member.host, member.realname, at))

    def _forget(self, uid: str, at: float) -> None:
        member = self.members[uid]
        for key in list(member.rooms):
            self._remove(uid, key)
        del self.members[uid]
        if self.nicks.get(member.key) == uid:
            del self.nicks[member.key]
        if uid.startswith(self.mint.node):
            self.local_registered -= 1
        self._remember(member, at)
        for key in member.invited or ():
            room = self.rooms.get(key)
            if room is not None:
                room.invites.pop(uid, None)
        member.invited = None
        self.budgets.pop(uid, None)
        if "i" in member.modes:
            self.invisible -= 1
        if "o" in member.modes:
            self.opers -= 1

    def _remove(self, uid: str, key: str) -> None:
        room = self.rooms[key]
        room.members.pop(uid, None)
        room.banned.pop(uid, None)
        member = self.members.get(uid)
        if member is not None and member.rooms.pop(key, False) is None:
            left = self.rooms_by_host[member.host] - 1
            if left:
                self.rooms_by_host[member.host] = left
            else:
                del self.rooms_by_host[member.host]
        if not room.members and key != self.default_key:
            for invitee in list(room.invites):
                self._uninvite(room, invitee)
            del self.rooms[key]

    def _uninvite(self, room: Room, uid: str) -> None:
        room.invites.pop(uid, None)
        member = self.members.get(uid)
        if member is not None and member.invited is not None:
            member.invited.discard(room.key)


class _Draft:
    """What a room's modes would be after the changes checked so far (see
    :meth:`Hub.change_room_modes`); the room itself is not touched."""

    __slots__ = ("room", "modes", "password", "limit", "flags", "masks")

    def __init__(self, room: Room) -> None:
        self.room = room
        self.modes = room.modes
        self.password = room.password
        self.limit = room.limit
        #: Member id → flags, for the members a change touched.
        self.flags: dict[str, int] = {}
        #: List mode → folded masks added (True) or removed (False) so far.
        self.masks: dict[str, dict[str, bool]] = {}

    def has_mask(self, char: str, mask: str) -> bool:
        folded = fold(mask)
        changed = self.masks.get(char, {}).get(folded)
        if changed is not None:
            return changed
        return any(fold(e.mask) == folded for e in self.room.mask_list(char))

    def list_size(self, char: str) -> int:
        size = len(self.room.mask_list(char))
        for folded, present in self.masks.get(char, {}).items():
            before = any(fold(e.mask) == folded for e in self.room.mask_list(char))
            size += int(present) - int(before)
        return size

    def set_mask(self, char: str, mask: str, present: bool) -> None:
        self.masks.setdefault(char, {})[fold(mask)] = present


def _matches(entries: list[MaskEntry], mask: str) -> bool:
    """Does any mask of a room's list match ``nick!user@host``?"""
    if not entries:
        return False
    target = fold(mask)
    return any(entry.matcher.match(target) for entry in entries)


def _whole_number(arg: str | None) -> int | None:
    """``"50"`` → 50; anything but ASCII digits making a number above 0 → ``None``.

    ``str.isdigit`` accepts ``"²"``, which ``int`` then refuses: only 0-9 count here.
    """
    if not arg or not arg.isascii() or not arg.isdigit() or len(arg) > 9:
        return None
    value = int(arg)
    return value if value > 0 else None
