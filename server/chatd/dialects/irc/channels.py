"""Channel commands: JOIN, PART, NAMES, TOPIC, MODE (channel and user), KICK, INVITE."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.core import errors as err
from chatd.core.model import OP, VOICE, Room
from chatd.core.modes import parse_mode_changes
from chatd.dialects.irc import encoder as enc
from chatd.dialects.irc.limits import MAX_JOIN_TARGETS, MAX_TARGETS, USER_MODES
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.wire import Message
from chatd.dialects.modestrings import room_modes

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession


#: A list mode → its entry and end-of-list numerics (MODE #room +b, +e, +I).
_LIST_REPLIES = {
    "b": (N.RPL_BANLIST, N.RPL_ENDOFBANLIST),
    "e": (N.RPL_EXCEPTLIST, N.RPL_ENDOFEXCEPTLIST),
    "I": (N.RPL_INVEXLIST, N.RPL_ENDOFINVEXLIST),
}
#: Room flags as IRC shows them (PREFIX=(ov)@+), the highest first.
PREFIXES = ((OP, "o", "@"), (VOICE, "v", "+"))


def prefixes(flags: int, multi: bool) -> str:
    """``@``, ``+``, or with multi-prefix every prefix the member has, highest first."""
    out = ""
    for flag, _, symbol in PREFIXES:
        if flags & flag:
            out += symbol
            if not multi:
                break
    return out


def join(s: IrcSession, message: Message) -> int:
    if not s.need(message, 1):
        return 0
    hub = s.ctx.hub
    member = s.member
    assert member is not None
    if message.params[0] == "0":
        for key in list(member.rooms):
            hub.part(s.uid, hub.rooms[key].name, "Left all channels")
        return 0
    names = message.params[0].split(",")
    keys = message.params[1].split(",") if len(message.params) > 1 else []
    extra = 0
    names, over = _bounded(s, [name for name in names if name], MAX_JOIN_TARGETS)
    for i, name in enumerate(names):
        password = keys[i] if i < len(keys) and keys[i] else None
        if not name:
            continue  # "JOIN #a," and ",#b": autojoin lists often end with a comma
        if not name.startswith("#"):
            s.numeric(N.ERR_NOSUCHCHANNEL, name)
            continue
        try:
            room = hub.join(s.uid, name, password)
        except err.AlreadyInRoom:
            continue
        except err.HubError as exc:
            s.hub_error(exc, "JOIN")
            continue
        if room.topic:
            topic_reply(s, room)
        extra += max(names_reply(s, room) - 1, 0)
        # The room's lists were matched against the joiner: paid by their size.
        extra += (len(room.bans) + len(room.excepts) + len(room.invexes)) // 100
    return extra + over


def _bounded(s: IrcSession, targets: list[str], limit: int) -> tuple[list[str], int]:
    """The first ``limit`` targets, and 407 once (costing a token) if there were more."""
    if len(targets) <= limit:
        return targets, 0
    s.numeric(N.ERR_TOOMANYTARGETS, targets[limit])
    return targets[:limit], 1


def part(s: IrcSession, message: Message) -> None:
    if not s.need(message, 1):
        return
    reason = message.params[1] if len(message.params) > 1 else ""
    names, _ = _bounded(s, [n for n in message.params[0].split(",") if n], MAX_JOIN_TARGETS)
    for name in names:
        try:
            s.ctx.hub.part(s.uid, name, reason)
        except err.HubError as exc:
            s.hub_error(exc, "PART")


def names(s: IrcSession, message: Message) -> int:
    """``NAMES #a[,#b...]``: 353s for each visible channel, then one 366 naming them all.

    A channel that does not exist or is secret to the client gets no 353 and no error
    (RFC 2812: "There is no error reply for bad channel names").
    """
    if not message.params or not message.params[0]:
        s.numeric(N.RPL_ENDOFNAMES, "*")
        return 0
    wanted = [name for name in message.params[0].split(",") if name][:MAX_TARGETS]
    hub = s.ctx.hub
    sent = 0
    shown = ",".join(wanted)
    for name in wanted:
        room = hub.find_room(name) if name.startswith("#") else None
        if room is not None and s.can_see(room):
            sent += names_reply(s, room, end=False)
            if len(wanted) == 1:
                shown = room.name
    s.numeric(N.RPL_ENDOFNAMES, shown)
    return max(sent - 1, 0)


def names_reply(s: IrcSession, room: Room, end: bool = True) -> int:
    """353s (and with ``end`` the 366) for ``room``; returns the 353 lines sent."""
    symbol = "@" if "s" in room.modes else "="
    multi = bool(s.caps & enc.MULTI_PREFIX)
    long_form = s.caps & enc.USERHOST_IN_NAMES
    members = s.ctx.hub.members
    words = []
    for uid, flags in room.members.items():
        member = members[uid]
        shown = member.mask if long_form else member.nick
        words.append(prefixes(flags, multi) + shown)
    sent = s.listing(N.RPL_NAMREPLY, (symbol, room.name), words)
    if end:
        s.numeric(N.RPL_ENDOFNAMES, room.name)
    return sent


def topic(s: IrcSession, message: Message) -> None:
    if not s.need(message, 1):
        return
    hub = s.ctx.hub
    name = message.params[0]
    room = hub.room_or_raise(name)
    if len(message.params) < 2:
        if not s.can_see(room):
            raise err.NoSuchRoom(name)
        if room.topic:
            topic_reply(s, room)
        else:
            s.numeric(N.RPL_NOTOPIC, room.name)
        return
    hub.topic(s.uid, room.name, message.params[1])


def topic_reply(s: IrcSession, room: Room) -> None:
    s.numeric(N.RPL_TOPIC, room.name, text=room.topic)
    when = str(int(room.topic_at))
    s.numeric(N.RPL_TOPICWHOTIME, room.name, room.topic_by, text=when, data=True)


def mode(s: IrcSession, message: Message) -> int:
    if not s.need(message, 1):
        return 0
    target = message.params[0]
    if not target.startswith("#"):
        user_mode(s, message)
        return 0
    hub = s.ctx.hub
    room = hub.room_or_raise(target)
    if len(message.params) == 1:
        modes, args = room_modes(room, show_key=s.uid in room.members)
        s.send(N.RPL_CHANNELMODEIS.code, s.me, room.name, modes, *args, source=s.server_name)
        s.numeric(N.RPL_CREATIONTIME, room.name, text=str(int(room.created)), data=True)
        return 0
    changes, queries = parse_mode_changes(message.params[1], list(message.params[2:]))
    extra = 0
    for char in dict.fromkeys(queries):
        entry, end = _LIST_REPLIES[char]
        for item in room.mask_list(char):
            s.send(
                entry.code,
                s.me,
                room.name,
                item.mask,
                item.set_by,
                str(int(item.at)),
                source=s.server_name,
                colon=False,
            )
            extra += 1
        s.numeric(end, room.name)
    if not changes:
        return extra // 10
    _, refused = hub.change_room_modes(s.uid, room.name, changes)
    for exc in refused:
        s.hub_error(exc, "MODE")
    return 0


def user_mode(s: IrcSession, message: Message) -> None:
    hub = s.ctx.hub
    target = hub.find(message.params[0])
    if target is None:
        s.numeric(N.ERR_NOSUCHNICK, message.params[0])
        return
    if target.uid != s.uid:
        s.numeric(N.ERR_USERSDONTMATCH)
        return
    if len(message.params) == 1:
        s.send(N.RPL_UMODEIS.code, s.me, "+" + target.modes, source=s.server_name, colon=False)
        return
    changes, _ = parse_mode_changes(message.params[1], [])
    unknown = [c for c in changes if c.char not in USER_MODES]
    if unknown:
        s.numeric(N.ERR_UMODEUNKNOWNFLAG)
    # The hub publishes the change to this client, which renders it as MODE.
    hub.change_user_modes(s.uid, [c for c in changes if c.char in USER_MODES])


def kick(s: IrcSession, message: Message) -> None:
    if not s.need(message, 2):
        return
    rooms = [room for room in message.params[0].split(",") if room] or [message.params[0]]
    nicks = [nick for nick in message.params[1].split(",") if nick][:MAX_TARGETS]
    reason = message.params[2] if len(message.params) > 2 else ""
    pairs = (
        zip(rooms, nicks, strict=False)
        if len(rooms) == len(nicks)
        else ((rooms[0], nick) for nick in nicks)
    )
    for room, nick in pairs:
        try:
            s.ctx.hub.kick(s.uid, room, nick, reason)
        except err.HubError as exc:
            s.hub_error(exc, "KICK")


def invite(s: IrcSession, message: Message) -> None:
    """``INVITE nick #room``; with no parameters, the rooms the client is invited to."""
    hub = s.ctx.hub
    if not message.params:
        for room in hub.invitations(s.uid):
            s.numeric(N.RPL_INVITELIST, text=room.name, data=True)
        s.numeric(N.RPL_ENDOFINVITELIST)
        return
    if not s.need(message, 2):
        return
    nick, name = message.params[0], message.params[1]
    if hub.find(nick) is None:
        raise err.NoSuchNick(nick)
    room = hub.room_or_raise(name)
    invitee = hub.invite(s.uid, nick, room.name)
    s.numeric(N.RPL_INVITING, invitee.nick, room.name)
    if invitee.away:
        s.numeric(N.RPL_AWAY, invitee.nick, text=invitee.away)
