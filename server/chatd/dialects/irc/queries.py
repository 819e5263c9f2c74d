"""Queries about users and channels: WHO (with IRCv3 WHOX), WHOIS, WHOWAS, LIST, ISON,
USERHOST.

All of them are read from the hub's state and rendered for one client; none publishes an
event.

WHOX (``WHO <mask> %<fields>[,<token>]``) answers 354 RPL_WHOSPCRPL with the asked
fields in the fixed order ``t c u i h s n f d l a o r`` whatever order they were asked
in; chatd has no accounts (``a`` is ``0``), no server links (``d`` hop count ``0``) and
no op levels (``o`` is ``n/a``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatd.core.masks import mask_match
from chatd.core.model import Member, Room
from chatd.dialects.base import Work
from chatd.dialects.irc import encoder as enc
from chatd.dialects.irc.channels import prefixes
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.wire import Message

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession

#: What a line user's realname reads as (the line dialect has none).
LINE_REALNAME = "chatd line user"


#: WHOX field letters, in the order their values are sent.
WHOX_FIELDS = "tcuihsnfdlaor"


#: Members a WHO mask is matched against per flood token it costs: a WHO that scans
#: every nick is paid for by the scan, whether it matches anyone or not.
SCANNED_PER_TOKEN = 500
#: Members one step of a WHO mask scan looks at (see :data:`chatd.dialects.base.Work`).
WHO_STEP = 500


def who(s: IrcSession, message: Message) -> int:
    """WHO; returns the extra flood tokens it costs: a token per 10 lines sent and per
    :data:`SCANNED_PER_TOKEN` members a mask was matched against.

    A mask is matched against every member in steps of :data:`WHO_STEP`, one per loop
    turn, so it never holds the loop for long however many members there are.
    """
    hub = s.ctx.hub
    mask = message.params[0] if message.params and message.params[0] else "*"
    whox: tuple[str, str] | None = None
    if len(message.params) > 1 and message.params[1].startswith("%"):
        fields, _, token = message.params[1][1:].partition(",")
        whox = ("".join(c for c in WHOX_FIELDS if c in fields), token[:3] or "0")
    lines = 0
    if mask.startswith("#"):
        room = hub.find_room(mask)
        if room is not None and s.can_see(room):
            members = hub.members
            for uid, flags in room.members.items():
                _who_reply(s, members[uid], room.name, flags, whox)
                lines += 1
    else:
        exact = hub.find(mask)
        if exact is not None and "*" not in mask and "?" not in mask:
            _who_reply(s, exact, "*", 0, whox)
            lines = 1
        else:
            s.work = _who_scan(s, mask, whox, list(hub.members))
            return 0
    s.numeric(N.RPL_ENDOFWHO, mask)
    return lines // 10


def _who_scan(s: IrcSession, mask: str, whox: tuple[str, str] | None, uids: list[str]) -> Work:
    """The steps of a WHO mask: each matches :data:`WHO_STEP` members and yields its cost."""
    hub = s.ctx.hub
    me = s.member
    assert me is not None
    lines = 0
    for start in range(0, len(uids), WHO_STEP):
        if start:
            yield WHO_STEP // SCANNED_PER_TOKEN + lines // 10
            lines = 0
        for uid in uids[start : start + WHO_STEP]:
            member = hub.members.get(uid)
            if member is None:
                continue  # gone since the scan began
            if not mask_match(mask, member.nick) and not mask_match(mask, member.mask):
                continue
            if "i" in member.modes and member is not me and not hub.shares_room(member, me):
                continue
            _who_reply(s, member, "*", 0, whox)
            lines += 1
    s.numeric(N.RPL_ENDOFWHO, mask)
    last = len(uids) % WHO_STEP or WHO_STEP
    return last // SCANNED_PER_TOKEN + lines // 10


def shown_host(host: str) -> str:
    """A host as a middle parameter: an IPv6 address may start with ``:``, which a middle
    parameter cannot, so ``::1`` is shown as ``0::1`` (as ircds do)."""
    return "0" + host if host.startswith(":") else host


def who_flags(s: IrcSession, member: Member, flags: int) -> str:
    """``H``/``G`` (here, gone), ``*`` server operator, ``B`` bot, then room prefixes."""
    status = "G" if member.away else "H"
    if "o" in member.modes:
        status += "*"
    if "B" in member.modes:
        status += "B"
    return status + prefixes(flags, bool(s.caps & enc.MULTI_PREFIX))


def _who_reply(
    s: IrcSession, member: Member, channel: str, flags: int, whox: tuple[str, str] | None
) -> None:
    if whox is not None:
        _whox_reply(s, member, channel, flags, *whox)
        return
    s.numeric(
        N.RPL_WHOREPLY,
        channel,
        member.user,
        shown_host(member.host),
        s.server_name,
        member.nick,
        who_flags(s, member, flags),
        text=f"0 {member.realname or LINE_REALNAME}",
    )


def _whox_reply(
    s: IrcSession, member: Member, channel: str, flags: int, fields: str, token: str
) -> None:
    values: list[str] = []
    for field in fields:
        match field:
            case "t":
                values.append(token)
            case "c":
                values.append(channel)
            case "u":
                values.append(member.user)
            case "i" | "h":
                values.append(shown_host(member.host))
            case "s":
                values.append(s.server_name)
            case "n":
                values.append(member.nick)
            case "f":
                values.append(who_flags(s, member, flags))
            case "d":
                values.append("0")
            case "l":
                values.append(str(idle_seconds(s, member)))
            case "a":
                values.append("0")
            case "o":
                values.append("n/a")
            case "r":
                values.append(member.realname or LINE_REALNAME)
    realname_last = fields.endswith("r")
    if values:
        s.send(N.RPL_WHOSPCRPL.code, s.me, *values, source=s.server_name, colon=realname_last)
    else:
        s.send(N.RPL_WHOSPCRPL.code, s.me, source=s.server_name, colon=False)


def idle_seconds(s: IrcSession, member: Member) -> int:
    """Seconds since the member last sent anything (0 for a member of no local session)."""
    session = s.ctx.connection(member.uid)
    if session is None:
        return 0
    return max(int(time.monotonic() - session.last_active), 0)


def whois(s: IrcSession, message: Message) -> None:
    if not message.params:
        s.numeric(N.ERR_NONICKNAMEGIVEN)
        return
    nick = message.params[-1].split(",")[0]
    hub = s.ctx.hub
    member = hub.find(nick)
    if member is None:
        s.numeric(N.ERR_NOSUCHNICK, nick)
        s.numeric(N.RPL_ENDOFWHOIS, nick)
        return
    name = member.nick
    realname = member.realname or LINE_REALNAME
    host = shown_host(member.host)
    s.numeric(N.RPL_WHOISUSER, name, member.user, host, "*", text=realname)
    multi = bool(s.caps & enc.MULTI_PREFIX)
    rooms = [
        prefixes(room.members[member.uid], multi) + room.name
        for room in (hub.rooms[key] for key in member.rooms)
        if s.can_see(room)
    ]
    if rooms:
        s.listing(N.RPL_WHOISCHANNELS, (name,), rooms)
    s.numeric(N.RPL_WHOISSERVER, name, s.server_name, text="chatd")
    if member.away:
        s.numeric(N.RPL_AWAY, name, text=member.away)
    if "o" in member.modes:
        s.numeric(N.RPL_WHOISOPERATOR, name)
    if "B" in member.modes:
        s.numeric(N.RPL_WHOISBOT, name)
    if s.ctx.connection(member.uid) is not None:
        idle = str(idle_seconds(s, member))
        s.numeric(N.RPL_WHOISIDLE, name, idle, str(int(member.signon)))
    s.numeric(N.RPL_ENDOFWHOIS, name)


def whowas(s: IrcSession, message: Message) -> None:
    if not message.params or not message.params[0]:
        s.numeric(N.ERR_NONICKNAMEGIVEN)
        return
    nick = message.params[0]
    count = 0
    if len(message.params) > 1:
        try:
            count = int(message.params[1])
        except ValueError:
            count = 0
    found = 0
    for entry in s.ctx.hub.whowas_entries(nick):
        s.numeric(
            N.RPL_WHOWASUSER,
            entry.nick,
            entry.user,
            shown_host(entry.host),
            "*",
            text=entry.realname or LINE_REALNAME,
        )
        s.numeric(N.RPL_WHOISSERVER, entry.nick, s.server_name, text="chatd")
        found += 1
        if 0 < count <= found:
            break
    if not found:
        s.numeric(N.ERR_WASNOSUCHNICK, nick)
    s.numeric(N.RPL_ENDOFWHOWAS, nick)


#: Rooms LIST looks at per flood token it costs (beside a token per 10 lines sent), for
#: each condition it tests them against.
ROOMS_PER_TOKEN = 200
#: Room tests one step of LIST runs (rooms × conditions), one step per loop turn.
LIST_STEP = 1000
#: Conditions one LIST may give (``>N``, ``<N``, masks); more are refused (ELIST).
MAX_LIST_CONDITIONS = 8


def list_(s: IrcSession, message: Message) -> int:
    """LIST, in the order rooms were created, in bounded steps (see :data:`LIST_STEP`)."""
    hub = s.ctx.hub
    tests: list[Callable[[Room], bool]] = []
    named: list[Room] = []
    if message.params and message.params[0]:
        words = [word for word in message.params[0].split(",") if word]
        for word in words:
            test = _list_test(word)
            if test is not None:
                tests.append(test)
            elif (room := hub.find_room(word)) is not None:
                named.append(room)
        if len(tests) > MAX_LIST_CONDITIONS:
            s.fail(
                "LIST",
                "TOO_MANY_CONDITIONS",
                text=f"LIST takes at most {MAX_LIST_CONDITIONS} masks or conditions",
            )
            return 0
        if not tests:
            s.numeric(N.RPL_LISTSTART, "Channel")
            sent = _list_rooms(s, named)
            s.numeric(N.RPL_LISTEND)
            return sent // 10
    s.numeric(N.RPL_LISTSTART, "Channel")
    s.work = _list_scan(s, list(hub.rooms.values()), tests)
    return 0


def _list_rooms(s: IrcSession, rooms: list[Room]) -> int:
    sent = 0
    for room in rooms:
        if s.can_see(room):
            s.numeric(N.RPL_LIST, room.name, str(len(room.members)), text=room.topic)
            sent += 1
    return sent


def _list_scan(s: IrcSession, rooms: list[Room], tests: list[Callable[[Room], bool]]) -> Work:
    """The steps of a LIST: each tests at most :data:`LIST_STEP` rooms × conditions."""
    live = s.ctx.hub.rooms
    per_step = max(LIST_STEP // max(len(tests), 1), 1)
    cost = 0
    for start in range(0, len(rooms), per_step):
        if start:
            yield cost
        chunk = [
            room
            for room in rooms[start : start + per_step]
            if live.get(room.key) is room and all(test(room) for test in tests)
        ]
        sent = _list_rooms(s, chunk)
        cost = per_step * max(len(tests), 1) // ROOMS_PER_TOKEN + sent // 10
    s.numeric(N.RPL_LISTEND)
    return cost


def _list_test(word: str) -> Callable[[Room], bool] | None:
    """The room test a LIST word stands for (``>N``, ``<N``, ``!mask``, ``mask``), or
    ``None`` for a plain room name."""
    number = word[1:]
    if word[:1] in "<>" and number.isascii() and number.isdigit():
        n = int(number)
        if word[0] == ">":
            return lambda r: len(r.members) > n
        return lambda r: len(r.members) < n
    if word.startswith("!"):
        mask = word[1:]
        return lambda r: not mask_match(mask, r.name)
    if "*" in word or "?" in word:
        return lambda r: mask_match(word, r.name)
    return None


def ison(s: IrcSession, message: Message) -> None:
    hub = s.ctx.hub
    present = []
    for word in " ".join(message.params).split():
        member = hub.find(word)
        if member is not None:
            present.append(member.nick)
    s.numeric(N.RPL_ISON, text=" ".join(present))


def userhost(s: IrcSession, message: Message) -> None:
    hub = s.ctx.hub
    replies = []
    for word in " ".join(message.params).split()[:5]:
        member = hub.find(word)
        if member is not None:
            oper = "*" if "o" in member.modes else ""
            status = "-" if member.away else "+"
            replies.append(f"{member.nick}{oper}={status}{member.user}@{member.host}")
    s.numeric(N.RPL_USERHOST, text=" ".join(replies))
