"""Connection and registration commands: CAP, PASS, NICK, USER, PING, PONG, QUIT.

Registration completes when a nickname and a USER are in and CAP negotiation (if the
client began one) has ended (:func:`try_register`); only then is the nickname claimed in
the hub, so two unregistered clients asking for the same nick cannot both get it.

What a client says about itself before that is kept in a :class:`Registration`, which
the session drops once registered: its presence *is* the registration state (the
session's ``state``), and a registered, idle connection carries none of it.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chatd.core import errors as err
from chatd.dialects.base import password_ok
from chatd.dialects.irc import encoder as enc
from chatd.dialects.irc import info
from chatd.dialects.irc.encoder import CAP_BIT, CAPS, encoder_for
from chatd.dialects.irc.limits import (
    CHAN_MODES,
    CHAN_MODES_WITH_ARG,
    NAMELEN,
    NETWORK,
    USER_MODES,
    USERLEN,
    VERSION,
)
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.wire import Message
from chatd.net.transport import DisconnectReason

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession

_USER_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")


class State(enum.Enum):
    #: Connected, not yet registered: CAP, PASS, NICK, USER, PING, PONG, QUIT.
    REGISTERING = "registering"
    #: Registered: the whole command table.
    REGISTERED = "registered"


class Registration:
    """What an unregistered client has said so far: NICK, USER, PASS, CAP negotiation.

    Its own object, not fields of the session, because none of it is read once the
    client is registered: :func:`_register` drops it, so each of 10,000 idle registered
    connections is five slots and a username string smaller (issue 20's idle-memory
    goal). What registration produced lives on in the hub's
    :class:`~chatd.core.model.Member`.
    """

    __slots__ = ("nick", "username", "realname", "negotiating", "passed")

    def __init__(self) -> None:
        #: The nickname asked for (claimed only when registration completes).
        self.nick: str | None = None
        #: USER's username, already cleaned up (``None``: no USER yet).
        self.username: str | None = None
        self.realname = ""
        #: CAP LS/REQ began negotiation: registration waits for CAP END.
        self.negotiating = False
        #: What PASS gave (checked when sent, and at registration against the password
        #: in force then: a reload may change it meanwhile).
        self.passed: str | None = None


def cap(s: IrcSession, message: Message) -> None:
    if not s.need(message, 1):
        return
    sub = message.params[0].upper()
    reg = s.registration
    if sub == "LS":
        if reg is not None:
            reg.negotiating = True
        version = message.params[1] if len(message.params) > 1 else ""
        if version.isascii() and version.isdigit() and int(version) >= 302:
            s.caps |= enc.CAP_NOTIFY
        s.send("CAP", s.me, "LS", " ".join(CAPS), source=s.server_name)
    elif sub == "LIST":
        enabled = " ".join(name for name in CAPS if s.caps & CAP_BIT[name])
        s.send("CAP", s.me, "LIST", enabled, source=s.server_name)
    elif sub == "REQ":
        if reg is not None:
            reg.negotiating = True
        request = message.params[1] if len(message.params) > 1 else ""
        caps = s.caps
        ok = True
        for word in request.split():
            name = word[1:] if word.startswith("-") else word
            bit = CAP_BIT.get(name)
            if bit is None:
                ok = False
                break
            caps = caps & ~bit if word.startswith("-") else caps | bit
        if ok and request.strip():
            s.caps = caps
            s.encoder = encoder_for(caps)
            s.send("CAP", s.me, "ACK", request, source=s.server_name)
        else:
            s.send("CAP", s.me, "NAK", request, source=s.server_name)
    elif sub == "END":
        if reg is not None:
            reg.negotiating = False
            try_register(s)
    else:
        s.numeric(N.ERR_INVALIDCAPCMD, message.params[0])


def pass_(s: IrcSession, message: Message) -> None:
    reg = s.registration
    if reg is None:
        s.numeric(N.ERR_ALREADYREGISTERED)
        return
    if not s.need(message, 1):
        return
    if s.ctx.config.password is None:
        return
    if not password_ok(s.ctx, message.params[0]):
        s.numeric(N.ERR_PASSWDMISMATCH)
        s.error_and_close("Bad password", DisconnectReason.BAD_PASSWORD)
        return
    reg.passed = message.params[0]


def nick(s: IrcSession, message: Message) -> None:
    if not message.params or not message.params[0]:
        s.numeric(N.ERR_NONICKNAMEGIVEN)
        return
    wanted = message.params[0]
    hub = s.ctx.hub
    reg = s.registration
    if reg is None:
        if wanted == s.nick:
            return
        hub.check_nick(wanted, s.uid)
        s.claimed(
            wanted,
            lambda: _change_nick(s, wanted),
            lambda exc: s.hub_error(exc, "NICK"),
        )
        return
    hub.check_nick(wanted)
    reg.nick = wanted
    try_register(s)


def user(s: IrcSession, message: Message) -> None:
    reg = s.registration
    if reg is None:
        s.numeric(N.ERR_ALREADYREGISTERED)
        return
    params = message.params
    if len(params) < 4 or not params[0] or not params[3]:
        s.numeric(N.ERR_NEEDMOREPARAMS, "USER")
        return
    reg.username = "".join(c for c in params[0] if c in _USER_OK)[:USERLEN] or "user"
    reg.realname = params[3][:NAMELEN]
    try_register(s)


def try_register(s: IrcSession) -> None:
    reg = s.registration
    if reg is None or reg.negotiating or reg.nick is None or reg.username is None:
        return
    if not password_ok(s.ctx, reg.passed):
        s.numeric(N.ERR_PASSWDMISMATCH)
        s.error_and_close("Bad password", DisconnectReason.BAD_PASSWORD)
        return
    s.claimed(reg.nick, lambda: _register(s), lambda exc: _refused(s, exc))


def _register(s: IrcSession) -> None:
    reg = s.registration
    assert reg is not None and reg.nick is not None and reg.username is not None
    try:
        member = s.ctx.hub.register(s.uid, reg.nick, "~" + reg.username, s.host, reg.realname)
    except err.HubError as exc:
        _refused(s, exc)
        return
    s.member = member
    s.registration = None  # State.REGISTERED from now on
    welcome(s)


def _refused(s: IrcSession, exc: err.HubError) -> None:
    if s.registration is not None:
        s.registration.nick = None
    s.hub_error(exc, "NICK")


def _change_nick(s: IrcSession, wanted: str) -> None:
    if s.member is None:
        return  # gone while the lease was taken
    try:
        s.ctx.hub.change_nick(s.uid, wanted)
    except err.HubError as exc:
        s.hub_error(exc, "NICK")


def welcome(s: IrcSession) -> None:
    cfg = s.ctx.config
    hub = s.ctx.hub
    assert s.member is not None
    s.numeric(N.RPL_WELCOME, network=NETWORK, nick=s.member.mask)
    s.numeric(N.RPL_YOURHOST, servername=cfg.server_name, version=VERSION)
    created = datetime.fromtimestamp(hub.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    s.numeric(N.RPL_CREATED, datetime=created)
    s.numeric(N.RPL_MYINFO, cfg.server_name, VERSION, USER_MODES, CHAN_MODES, CHAN_MODES_WITH_ARG)
    info.isupport(s)
    info.lusers(s)
    info.motd(s)


def ping(s: IrcSession, message: Message) -> None:
    if not message.params:
        s.numeric(N.ERR_NOORIGIN)
        return
    s.send("PONG", s.server_name, message.params[0], source=s.server_name, colon=False)


def pong(s: IrcSession, message: Message) -> None:
    s.ping_sent = 0.0


def quit(s: IrcSession, message: Message) -> None:
    reason = message.params[0] if message.params else ""
    s.send("ERROR", f"Closing Link: {s.host} (Quit: {reason or s.me})")
    s.close(DisconnectReason.QUIT, reason)
