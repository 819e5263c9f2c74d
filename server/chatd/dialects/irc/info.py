"""Server queries and operator commands: 005, LUSERS, MOTD, VERSION, TIME, INFO, LINKS,
HELP, OPER, KILL, WALLOPS."""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chatd.core.modes import LIST_MODES, MAX_LIST, MAX_MODES
from chatd.core.monitor import MAX_WATCH
from chatd.dialects.irc.isupport import rpl_isupport_lines
from chatd.dialects.irc.limits import (
    AWAYLEN,
    CHANMODES_TOKEN,
    CHATHISTORY_MAX,
    KICKLEN,
    MAX_JOIN_TARGETS,
    MAX_TARGETS,
    MSGREFTYPES,
    NETWORK,
    TOPICLEN,
    USERLEN,
    VERSION,
)
from chatd.dialects.irc.messages import STATUSMSG
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.wire import Message

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession


def isupport(s: IrcSession) -> None:
    cfg = s.ctx.config
    lists = ",".join(f"{char}:{MAX_LIST}" for char in LIST_MODES)
    support: dict[str, str | int | bool | None] = {
        "AWAYLEN": AWAYLEN,
        "BOT": "B",
        "CASEMAPPING": "ascii",
        "CHANMODES": CHANMODES_TOKEN,
        "CHANNELLEN": 50,
        "CHANTYPES": "#",
        "CHATHISTORY": CHATHISTORY_MAX,
        # No C or T: irctest's faketime LIST tests would then sleep for real minutes.
        "ELIST": "MNU",
        "EXCEPTS": "e",
        "INVEX": "I",
        "KICKLEN": KICKLEN,
        "MAXLIST": lists,
        "MODES": MAX_MODES,
        "MONITOR": MAX_WATCH,
        "MSGREFTYPES": MSGREFTYPES,
        "NETWORK": NETWORK,
        "NICKLEN": 30,
        "PREFIX": "(ov)@+",
        "STATUSMSG": "".join(STATUSMSG),
        "TARGMAX": f"JOIN:{MAX_JOIN_TARGETS},KICK:{MAX_TARGETS},NAMES:{MAX_TARGETS},"
        f"NOTICE:{MAX_TARGETS},PART:{MAX_JOIN_TARGETS},PRIVMSG:{MAX_TARGETS},WHOIS:1",
        "TOPICLEN": TOPICLEN,
        "USERLEN": USERLEN,
        "UTF8ONLY": True,
        "WHOX": True,
    }
    if cfg.max_rooms:
        support["CHANLIMIT"] = f"#:{cfg.max_rooms}"
    for line in rpl_isupport_lines(s.server_name, s.me, support):
        s.write(line)


def lusers(s: IrcSession, message: Message | None = None) -> None:
    """LUSERS, from counts the hub keeps as it applies events: no scan of the members
    (every IRC registration sends it, so a join storm would otherwise be quadratic)."""
    hub = s.ctx.hub
    registered = hub.registered
    invisible = hub.invisible
    opers = hub.opers
    local_registered = hub.local_registered  # on a cluster node, not the others'
    unknown = max(s.ctx.connections() - local_registered, 0)
    count, peak = str(registered), str(hub.max_registered)
    local = str(local_registered)
    s.numeric(N.RPL_LUSERCLIENT, u=str(registered - invisible), i=str(invisible), s="1")
    if opers:
        s.numeric(N.RPL_LUSEROP, str(opers))
    if unknown:
        s.numeric(N.RPL_LUSERUNKNOWN, str(unknown))
    s.numeric(N.RPL_LUSERCHANNELS, str(len(hub.rooms)))
    s.numeric(N.RPL_LUSERME, c=local, s="0")
    s.numeric(N.RPL_LOCALUSERS, local, peak, u=local, m=peak)
    s.numeric(N.RPL_GLOBALUSERS, count, peak, u=count, m=peak)


def motd(s: IrcSession, message: Message | None = None) -> None:
    lines = s.ctx.config.motd
    if not lines:
        s.numeric(N.ERR_NOMOTD)
        return
    s.numeric(N.RPL_MOTDSTART, server=s.server_name)
    for line in lines:
        s.numeric(N.RPL_MOTD, text=f"- {line}")
    s.numeric(N.RPL_ENDOFMOTD)


def version(s: IrcSession, message: Message) -> None:
    s.numeric(N.RPL_VERSION, VERSION, s.server_name, text="chatd IRC dialect")
    isupport(s)


def time_(s: IrcSession, message: Message) -> None:
    now = time.time()
    text = datetime.fromtimestamp(now, UTC).strftime("%A %B %d %Y -- %H:%M:%S UTC")
    s.numeric(N.RPL_TIME, s.server_name, str(int(now)), text=text)


def info(s: IrcSession, message: Message) -> None:
    for line in (f"{VERSION}: a chat daemon on a selectors reactor", "https://example.invalid"):
        s.numeric(N.RPL_INFO, text=line)
    s.numeric(N.RPL_ENDOFINFO)


def links(s: IrcSession, message: Message) -> None:
    s.send("365", s.me, "*", "End of /LINKS list", source=s.server_name)


def help_(s: IrcSession, message: Message) -> None:
    from chatd.dialects.irc.registration import State
    from chatd.dialects.irc.session import HANDLERS  # the table names this function

    subject = message.params[0].upper() if message.params else "*"
    if subject != "*" and subject not in HANDLERS[State.REGISTERED]:
        s.numeric(N.ERR_HELPNOTFOUND, subject)
        return
    s.send("704", s.me, subject, f"** Help on {subject} **", source=s.server_name)
    if subject == "*":
        commands = " ".join(sorted(HANDLERS[State.REGISTERED]))
        s.send("705", s.me, subject, commands, source=s.server_name)
    else:
        s.send("705", s.me, subject, f"See RFC 2812 for {subject}.", source=s.server_name)
    s.send("706", s.me, subject, "End of /HELP", source=s.server_name)


# --------------------------------------------------------------------------- operators


def oper(s: IrcSession, message: Message) -> None:
    if not s.need(message, 2):
        return
    name, password = message.params[0], message.params[1]
    if not check_oper(s.ctx.config.opers, name, password):
        s.numeric(N.ERR_PASSWDMISMATCH)
        return
    s.numeric(N.RPL_YOUREOPER)
    # The hub publishes +o to this client, which renders it as MODE.
    s.ctx.hub.make_oper(s.uid)


def check_oper(opers: dict[str, str], name: str, password: str) -> bool:
    """Whether ``name``/``password`` are an operator's, in time that does not depend on
    how much of the password was right (``hmac.compare_digest``)."""
    expected = opers.get(name)
    if expected is None or not password:
        hmac.compare_digest(password.encode(), password.encode())  # the same work
        return False
    return hmac.compare_digest(password.encode(), expected.encode())


def kill(s: IrcSession, message: Message) -> None:
    """KILL nick [reason]: any dialect's member; the hub tells it why and closes it."""
    member = s.member
    assert member is not None
    if "o" not in member.modes:
        s.numeric(N.ERR_NOPRIVILEGES)
        return
    if not s.need(message, 1):
        return
    reason = message.params[1] if len(message.params) > 1 else "no reason"
    s.ctx.hub.kill(s.uid, message.params[0], reason)


def wallops(s: IrcSession, message: Message) -> None:
    if not s.need(message, 1):
        return
    s.ctx.hub.wallops(s.uid, message.params[0])
