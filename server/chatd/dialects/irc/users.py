"""A user's own state: AWAY, SETNAME (IRCv3 setname) and MONITOR (IRCv3 monitor).

MONITOR lists live in the hub's monitor index (:class:`~chatd.core.monitor.Monitor`);
the hub publishes online/offline events to the watchers of a nick when it signs on,
quits or changes; the encoder renders them as 730/731
(:meth:`~chatd.dialects.irc.encoder.IrcEncoder.encode_for`).
A watched nick may belong to a line user: the hub does not care who speaks which dialect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.core.monitor import MAX_WATCH
from chatd.core.names import valid_nick
from chatd.core.text import text_problem
from chatd.dialects.irc.limits import NAMELEN
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.wire import Message

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession


def away(s: IrcSession, message: Message) -> None:
    text = message.params[0] if message.params else ""
    s.ctx.hub.set_away(s.uid, text or None)
    s.numeric(N.RPL_NOWAWAY if text else N.RPL_UNAWAY)


def setname(s: IrcSession, message: Message) -> None:
    """``SETNAME :new realname``: the client and capable peers get ``SETNAME`` back."""
    realname = message.params[0] if message.params else ""
    if not realname or len(realname) > NAMELEN or text_problem(realname):
        why = "Realname is empty" if not realname else "Realname is not valid"
        if len(realname) > NAMELEN:
            why = f"Realname is longer than {NAMELEN} characters"
        s.fail("SETNAME", "INVALID_REALNAME", text=why)
        return
    s.ctx.hub.set_realname(s.uid, realname)


def monitor(s: IrcSession, message: Message) -> int:
    """``MONITOR +|-|C|L|S [targets]``; returns the extra lines sent (flood cost)."""
    if not s.need(message, 1):
        return 0
    monitor = s.ctx.hub.monitor
    sub = message.params[0].upper()
    if sub in ("+", "-"):
        if not s.need(message, 2):
            return 0
        targets = [t for t in message.params[1].split(",") if t]
        if sub == "-":
            monitor.unwatch(s.uid, targets)
            return 0
        for target in targets:
            if not valid_nick(target):
                s.numeric(N.ERR_ERRONEUSNICKNAME, target)
        added, refused = monitor.watch(s.uid, [t for t in targets if valid_nick(t)])
        sent = _status(s, added)
        if refused:
            s.numeric(N.ERR_MONLISTFULL, str(MAX_WATCH), ",".join(refused))
        return sent
    if sub == "C":
        monitor.clear(s.uid)
        return 0
    if sub == "L":
        sent = s.listing(N.RPL_MONLIST, (), monitor.listing(s.uid), sep=",")
        s.numeric(N.RPL_ENDOFMONLIST)
        return sent
    if sub == "S":
        return _status(s, monitor.listing(s.uid))
    s.send(
        "FAIL",
        "MONITOR",
        "INVALID_PARAMS",
        message.params[0],
        "Unknown MONITOR subcommand",
        source=s.server_name,
    )
    return 0


def _status(s: IrcSession, nicks: list[str]) -> int:
    """730 for the nicks in use (``nick!user@host``), 731 for the others; lines sent."""
    hub = s.ctx.hub
    online: list[str] = []
    offline: list[str] = []
    for nick in nicks:
        member = hub.find(nick)
        if member is None:
            offline.append(nick)
        else:
            online.append(member.mask)
    sent = 0
    if online:
        sent += s.listing(N.RPL_MONONLINE, (), online, sep=",")
    if offline:
        sent += s.listing(N.RPL_MONOFFLINE, (), offline, sep=",")
    return max(sent - 1, 0)
