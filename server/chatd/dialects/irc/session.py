"""One IRC client: registration, the command table, replies and numerics.

Sans-IO like the line dialect: the session gets decoded :mod:`wire <chatd.dialects.irc.wire>`
items from :class:`~chatd.dialects.base.Session`, calls the hub, and writes bytes to its
transport; it never sees a socket.

The command a line may carry depends on the registration state, as h11 picks its reader
from ``READERS[(role, state)]``: :data:`HANDLERS` maps each :class:`State` to its own
table. Before registration only CAP, PASS, NICK, USER, PING, PONG and QUIT are read and
anything else is 451; after it the whole table applies and PASS and USER are 462.
Registration completes when a nickname and a USER are in and CAP negotiation (if the
client began one) has ended; only then is the nickname claimed, so two unregistered
clients asking for the same nick cannot both get it.

Refusals come from the hub as typed errors and are rendered here, each with its numeric
(:meth:`IrcSession.hub_error`). Flood control is the base session's: a line costs a
token, and a reply of many lines (NAMES, WHO, LIST) costs one more per extra line.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from chatd import __version__
from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.hub import PREFIXES, Member, Room, parse_mode_changes
from chatd.core.masks import mask_match
from chatd.dialects.base import Session
from chatd.dialects.irc import encoder as enc
from chatd.dialects.irc.encoder import CAP_BIT, CAPS, encoder_for, fit
from chatd.dialects.irc.isupport import rpl_isupport_lines
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.wire import (
    Blank,
    InputTooLong,
    InvalidUtf8,
    IrcDecoder,
    Malformed,
    Message,
    encode,
    parse_ctcp,
)
from chatd.net.transport import QUIT_TEXT, DisconnectReason

VERSION = f"chatd-{__version__}"
NETWORK = "chatd"
USERLEN = 10
TOPICLEN = 390
AWAYLEN = 390
KICKLEN = 390
#: Targets one PRIVMSG/NOTICE/KICK may name (TARGMAX).
MAX_TARGETS = 4
LINE_LIMIT = 512
USER_MODES = "iow"
CHAN_MODES = "biklmnostv"
CHAN_MODES_WITH_ARG = "bklov"
#: Texts of the PING-based keepalive.
PING_TIMEOUT_TEXT = "Ping timeout"

#: C0 controls an IRC client may not send in chat text: everything but TAB, the CTCP
#: delimiter 0x01 and the formatting codes, as for the line dialect (line users' screens).
_FORBIDDEN = frozenset(range(0x20)) - {0x01, 0x02, 0x03, 0x09, 0x0F, 0x16, 0x1D, 0x1E, 0x1F}
_FORBIDDEN_CHARS = "".join(chr(c) for c in sorted(_FORBIDDEN)) + "\x7f"
_USER_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")


class State(enum.Enum):
    #: Connected, not yet registered: CAP, PASS, NICK, USER, PING, PONG, QUIT.
    REGISTERING = "registering"
    #: Registered: the whole command table.
    REGISTERED = "registered"


Handler = Callable[["IrcSession", Message], int | None]


def _has_forbidden(text: str) -> bool:
    """Does chat text hold a control character that could act on a line user's terminal?"""
    return not text.isprintable() and any(c in _FORBIDDEN_CHARS for c in text)


class IrcSession(Session):
    """One IRC client."""

    __slots__ = (
        "nick_wanted",
        "username",
        "realname",
        "caps",
        "negotiating",
        "password_ok",
        "ping_sent",
        "batch_room",
        "batch",
        "state",
    )

    def __init__(self, service: Any, host: str, now: float, delay: float = 0.0) -> None:
        super().__init__(service, host, now, delay)
        self.nick_wanted: str | None = None
        self.username: str | None = None
        self.realname = ""
        #: Enabled capabilities, as :data:`~chatd.dialects.irc.encoder.CAP_BIT` bits.
        self.caps = 0
        #: CAP LS/REQ began negotiation: registration waits for CAP END.
        self.negotiating = False
        self.password_ok = service.config.password is None
        #: When the server's keepalive PING went out (0: none outstanding).
        self.ping_sent = 0.0
        #: PRIVMSGs to one channel collected from this read (published as one event).
        self.batch_room: str | None = None
        self.batch: list[str] = []
        self.state = State.REGISTERING

    def make_decoder(self) -> IrcDecoder:
        return IrcDecoder()

    @property
    def encoder(self) -> enc.IrcEncoder:
        return encoder_for(self.caps)

    # ----------------------------------------------------------------- output

    @property
    def server_name(self) -> str:
        return self.service.config.server_name

    @property
    def me(self) -> str:
        """The ``<client>`` parameter of numerics: the nick, or ``*`` before one."""
        return self.member.nick or "*"

    def send(
        self, command: str, *params: str, source: str | None = None, colon: bool = True
    ) -> None:
        """One line; a last parameter that would overflow 512 bytes is cut to fit.

        The last parameter is text (with its ``:``) unless ``colon`` is False.
        """
        if params:
            head = " ".join((f":{source}" if source else "", command, *params[:-1]))
            params = (*params[:-1], fit(head, params[-1]))
        self.write(encode(command, *params, source=source, colon=colon))

    def numeric(
        self, num: N, *params: str, text: str | None = None, data: bool = False, **fields: str
    ) -> None:
        """A numeric to this client; its text is ``text`` or the numeric's own.

        ``data``: the last parameter is a value (a time, a nick), not text: no colon.
        """
        last = text if text is not None else num.text.format(**fields) if num.text else None
        args = (*params, last) if last is not None else params
        colon = last is not None and not data
        self.send(num.code, self.me, *args, source=self.server_name, colon=colon)

    def listing(self, num: N, params: tuple[str, ...], words: Iterable[str]) -> int:
        """``num`` replies with ``words`` packed into the trailing parameter; lines sent."""
        head = f":{self.server_name} {num.code} {self.me} {' '.join(params)} :"
        room = LINE_LIMIT - len(head.encode()) - 2
        lines: list[str] = []
        current: list[str] = []
        size = 0
        for word in words:
            cost = len(word.encode()) + (1 if current else 0)
            if current and size + cost > room:
                lines.append(" ".join(current))
                current, size = [], 0
                cost -= 1
            current.append(word)
            size += cost
        if current:
            lines.append(" ".join(current))
        for line in lines:
            self.numeric(num, *params, text=line)
        return len(lines)

    def greet(self) -> None:
        pass  # IRC clients speak first

    def error_and_close(self, text: str, reason: DisconnectReason, detail: str = "") -> None:
        self.send("ERROR", f"Closing Link: {self.host} ({text})")
        self.close(reason, detail)

    def timed_out(self, reason: DisconnectReason) -> None:
        text = PING_TIMEOUT_TEXT if reason is DisconnectReason.IDLE else QUIT_TEXT[reason]
        self.error_and_close(text, reason, text)

    def kill(self, by: str, reason: str) -> None:
        """A server operator disconnected this client (KILL)."""
        text = f"Killed ({by} ({reason}))"
        self.error_and_close(text, DisconnectReason.KILLED, text)

    # ----------------------------------------------------------------- keepalive

    def next_deadline(self, now: float) -> float | None:
        if self.member.nick is None:
            return None
        interval = self.service.config.ping_interval
        if interval <= 0:
            return None
        if self.ping_sent and self.last_active <= self.ping_sent:
            return self.ping_sent + interval
        return self.last_active + interval

    def on_deadline(self, now: float) -> None:
        if self.ping_sent and self.last_active <= self.ping_sent:
            self.timed_out(DisconnectReason.IDLE)
            return
        self.ping_sent = now
        self.send("PING", self.server_name, colon=False)

    # ----------------------------------------------------------------- input

    def handle(self, item: Any) -> int:
        if isinstance(item, Blank):
            return item.count - 1  # each blank line costs a flood token
        stats = self.service.stats
        stats["lines_in"] += 1
        if isinstance(item, Message):
            message = item
        else:
            self.flush_batch()
            stats["bad_lines"] += 1
            if isinstance(item, InputTooLong):
                self.numeric(N.ERR_INPUTTOOLONG)
            elif isinstance(item, InvalidUtf8):
                command = item.message.command or "*"
                self.send(
                    "FAIL",
                    command,
                    "INVALID_UTF8",
                    "Message rejected: not UTF-8",
                    source=self.server_name,
                )
            elif isinstance(item, Malformed):
                pass  # nothing to answer: there is no command
            return 0
        command = message.command
        if command != "PRIVMSG" or self.batch_room is None:
            self.flush_batch()
        handler = HANDLERS[self.state].get(command)
        if handler is None:
            if self.state is State.REGISTERING and command in HANDLERS[State.REGISTERED]:
                self.numeric(N.ERR_NOTREGISTERED)
            else:
                self.numeric(N.ERR_UNKNOWNCOMMAND, command)
            return 0
        try:
            return handler(self, message) or 0
        except err.HubError as exc:
            self.hub_error(exc, command)
            return 0

    def need(self, message: Message, count: int) -> bool:
        """Answer 461 and return False if ``message`` has fewer than ``count`` params."""
        if len(message.params) < count:
            self.numeric(N.ERR_NEEDMOREPARAMS, message.command)
            return False
        return True

    def hub_error(self, exc: err.HubError, command: str = "") -> None:
        """Render a hub refusal as its numeric."""
        match exc:
            case err.NickInUse(nick=nick):
                self.numeric(N.ERR_NICKNAMEINUSE, nick)
            case err.ErroneousNick(nick=nick) | err.NickReserved(nick=nick):
                self.numeric(N.ERR_ERRONEUSNICKNAME, nick or "*")
            case err.SameNick():
                pass
            case err.NoSuchNick(nick=nick):
                self.numeric(N.ERR_NOSUCHNICK, nick)
            case err.NoSuchRoom(room=room):
                self.numeric(N.ERR_NOSUCHCHANNEL, room)
            case err.BadRoomName(room=room, why=why):
                self.numeric(N.ERR_BADCHANNAME, room, text=f"Illegal channel name: {why}")
            case err.NotInRoom(room=room):
                self.numeric(N.ERR_NOTONCHANNEL, room)
            case err.UserNotInRoom(nick=nick, room=room):
                self.numeric(N.ERR_USERNOTINCHANNEL, nick, room)
            case err.UserInRoom(nick=nick, room=room):
                self.numeric(N.ERR_USERONCHANNEL, nick, room)
            case err.NotRoomOperator(room=room):
                self.numeric(N.ERR_CHANOPRIVSNEEDED, room)
            case err.InviteOnly(room=room):
                self.numeric(N.ERR_INVITEONLYCHAN, room)
            case err.BadKey(room=room):
                self.numeric(N.ERR_BADCHANNELKEY, room)
            case err.RoomFull(room=room):
                self.numeric(N.ERR_CHANNELISFULL, room)
            case err.Banned(room=room):
                self.numeric(N.ERR_BANNEDFROMCHAN, room)
            case err.TooManyRooms(room=room):
                self.numeric(N.ERR_TOOMANYCHANNELS, room)
            case err.CannotSend(room=room, why=why):
                self.numeric(N.ERR_CANNOTSENDTOCHAN, room, text=f"Cannot send to channel ({why})")
            case err.ForgedNotice():
                self.send(
                    "FAIL", command or "PRIVMSG", "FORGED_NOTICE", exc.text, source=self.server_name
                )
            case err.RecipientBusy(nick=nick):
                self.send(
                    "FAIL",
                    command or "PRIVMSG",
                    "TARGET_TOO_FAST",
                    nick,
                    exc.text,
                    source=self.server_name,
                )
            case err.UnknownMode(char=char):
                self.numeric(N.ERR_UNKNOWNMODE, char)
            case err.NeedMoreParams():
                self.numeric(N.ERR_NEEDMOREPARAMS, command or "MODE")
            case err.NoPrivileges():
                self.numeric(N.ERR_NOPRIVILEGES)
            case err.BanListFull(room=room, char=char):
                self.numeric(N.ERR_INVALIDMODEPARAM, room, char, "*", text="List is full")
            case _:
                self.send("FAIL", command or "*", "REFUSED", exc.text, source=self.server_name)

    # ----------------------------------------------------------------- registration

    def _cap(self, message: Message) -> None:
        if not self.need(message, 1):
            return
        sub = message.params[0].upper()
        registering = self.state is State.REGISTERING
        if sub == "LS":
            if registering:
                self.negotiating = True
            version = message.params[1] if len(message.params) > 1 else ""
            if version.isdigit() and int(version) >= 302:
                self.caps |= enc.CAP_NOTIFY
            self.send("CAP", self.me, "LS", " ".join(CAPS), source=self.server_name)
        elif sub == "LIST":
            enabled = " ".join(name for name in CAPS if self.caps & CAP_BIT[name])
            self.send("CAP", self.me, "LIST", enabled, source=self.server_name)
        elif sub == "REQ":
            if registering:
                self.negotiating = True
            request = message.params[1] if len(message.params) > 1 else ""
            caps = self.caps
            ok = True
            for word in request.split():
                name = word[1:] if word.startswith("-") else word
                bit = CAP_BIT.get(name)
                if bit is None:
                    ok = False
                    break
                caps = caps & ~bit if word.startswith("-") else caps | bit
            if ok and request.strip():
                self.caps = caps
                self.member.encoder = encoder_for(caps)
                self.send("CAP", self.me, "ACK", request, source=self.server_name)
            else:
                self.send("CAP", self.me, "NAK", request, source=self.server_name)
        elif sub == "END":
            if registering:
                self.negotiating = False
                self._try_register()
        else:
            self.numeric(N.ERR_INVALIDCAPCMD, message.params[0])

    def _pass(self, message: Message) -> None:
        if self.state is State.REGISTERED:
            self.numeric(N.ERR_ALREADYREGISTERED)
            return
        if not self.need(message, 1):
            return
        expected = self.service.config.password
        if expected is None:
            return
        if message.params[0] != expected:
            self.numeric(N.ERR_PASSWDMISMATCH)
            self.error_and_close("Bad password", DisconnectReason.BAD_PASSWORD)
            return
        self.password_ok = True

    def _nick(self, message: Message) -> None:
        if not message.params or not message.params[0]:
            self.numeric(N.ERR_NONICKNAMEGIVEN)
            return
        nick = message.params[0]
        hub = self.service.hub
        if self.state is State.REGISTERED:
            hub.change_nick(self.member, nick)
            return
        hub.check_nick(nick)
        self.nick_wanted = nick
        self._try_register()

    def _user(self, message: Message) -> None:
        if self.state is State.REGISTERED:
            self.numeric(N.ERR_ALREADYREGISTERED)
            return
        params = message.params
        if len(params) < 4 or not params[0] or not params[3]:
            self.numeric(N.ERR_NEEDMOREPARAMS, "USER")
            return
        user = "".join(c for c in params[0] if c in _USER_OK)[:USERLEN] or "user"
        self.username = user
        self.realname = params[3][:TOPICLEN]
        self._try_register()

    def _try_register(self) -> None:
        if self.negotiating or self.nick_wanted is None or self.username is None:
            return
        if not self.password_ok:
            self.numeric(N.ERR_PASSWDMISMATCH)
            self.error_and_close("Bad password", DisconnectReason.BAD_PASSWORD)
            return
        nick = self.nick_wanted
        try:
            self.service.hub.register(self.member, nick, "~" + self.username, self.realname)
        except err.HubError as exc:
            self.nick_wanted = None
            self.hub_error(exc, "NICK")
            return
        self.state = State.REGISTERED
        self.member.modes = ""
        self._welcome()

    def _welcome(self) -> None:
        cfg = self.service.config
        hub = self.service.hub
        nick = self.me
        self.numeric(N.RPL_WELCOME, network=NETWORK, nick=f"{nick}!{self.member.user}@{self.host}")
        self.numeric(N.RPL_YOURHOST, servername=cfg.server_name, version=VERSION)
        created = datetime.fromtimestamp(hub.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        self.numeric(N.RPL_CREATED, datetime=created)
        self.numeric(
            N.RPL_MYINFO, cfg.server_name, VERSION, USER_MODES, CHAN_MODES, CHAN_MODES_WITH_ARG
        )
        self._isupport()
        self._lusers()
        self._motd()

    def _isupport(self) -> None:
        cfg = self.service.config
        support: dict[str, Any] = {
            "AWAYLEN": AWAYLEN,
            "CASEMAPPING": "ascii",
            "CHANMODES": "b,k,l,imnst",
            "CHANNELLEN": 50,
            "CHANTYPES": "#",
            "ELIST": "MNU",
            "KICKLEN": KICKLEN,
            "MAXLIST": "b:100",
            "MODES": 6,
            "NETWORK": NETWORK,
            "NICKLEN": 30,
            "PREFIX": "(ov)@+",
            "TARGMAX": f"JOIN:,KICK:{MAX_TARGETS},NAMES:1,NOTICE:{MAX_TARGETS},PART:,"
            f"PRIVMSG:{MAX_TARGETS},WHOIS:1",
            "TOPICLEN": TOPICLEN,
            "USERLEN": USERLEN,
            "UTF8ONLY": True,
        }
        if cfg.max_rooms:
            support["CHANLIMIT"] = f"#:{cfg.max_rooms}"
        for line in rpl_isupport_lines(self.server_name, self.me, support):
            self.write(line)

    def _lusers(self, message: Message | None = None) -> None:
        hub = self.service.hub
        registered = list(hub.nicks.values())
        invisible = sum(1 for m in registered if "i" in m.modes)
        opers = sum(1 for m in registered if "o" in m.modes)
        unknown = len(hub.members) - len(registered)
        count, peak = str(len(registered)), str(hub.max_registered)
        self.numeric(N.RPL_LUSERCLIENT, u=str(len(registered) - invisible), i=str(invisible), s="1")
        if opers:
            self.numeric(N.RPL_LUSEROP, str(opers))
        if unknown:
            self.numeric(N.RPL_LUSERUNKNOWN, str(unknown))
        self.numeric(N.RPL_LUSERCHANNELS, str(len(hub.rooms)))
        self.numeric(N.RPL_LUSERME, c=count, s="0")
        self.numeric(N.RPL_LOCALUSERS, count, peak, u=count, m=peak)
        self.numeric(N.RPL_GLOBALUSERS, count, peak, u=count, m=peak)

    def _motd(self, message: Message | None = None) -> None:
        lines = self.service.config.motd
        if not lines:
            self.numeric(N.ERR_NOMOTD)
            return
        self.numeric(N.RPL_MOTDSTART, server=self.server_name)
        for line in lines:
            self.numeric(N.RPL_MOTD, text=f"- {line}")
        self.numeric(N.RPL_ENDOFMOTD)

    # ----------------------------------------------------------------- connection

    def _ping(self, message: Message) -> None:
        if not message.params:
            self.numeric(N.ERR_NOORIGIN)
            return
        self.send("PONG", self.server_name, message.params[0], source=self.server_name, colon=False)

    def _pong(self, message: Message) -> None:
        self.ping_sent = 0.0

    def _quit(self, message: Message) -> None:
        reason = message.params[0] if message.params else ""
        self.send("ERROR", f"Closing Link: {self.host} (Quit: {reason or self.me})")
        self.close(DisconnectReason.QUIT, reason[:TOPICLEN])

    # ----------------------------------------------------------------- channels

    def _join(self, message: Message) -> int:
        if not self.need(message, 1):
            return 0
        hub = self.service.hub
        if message.params[0] == "0":
            for room in list(self.member.rooms.values()):
                hub.part(self.member, room.name, "Left all channels")
            return 0
        names = message.params[0].split(",")
        keys = message.params[1].split(",") if len(message.params) > 1 else []
        extra = 0
        for i, name in enumerate(names):
            key = keys[i] if i < len(keys) and keys[i] else None
            if not name.startswith("#"):
                self.numeric(N.ERR_NOSUCHCHANNEL, name)
                continue
            try:
                room = hub.join(self.member, name, key)
            except err.AlreadyInRoom:
                continue
            except err.HubError as exc:
                self.hub_error(exc, "JOIN")
                continue
            if room.topic:
                self._topic_reply(room)
            extra += self._names(room)
        return extra

    def _part(self, message: Message) -> None:
        if not self.need(message, 1):
            return
        reason = message.params[1] if len(message.params) > 1 else ""
        for name in message.params[0].split(","):
            try:
                self.service.hub.part(self.member, name, reason[:TOPICLEN])
            except err.HubError as exc:
                self.hub_error(exc, "PART")

    def _names_command(self, message: Message) -> int:
        if not message.params or not message.params[0]:
            self.numeric(N.RPL_ENDOFNAMES, "*")
            return 0
        name = message.params[0]
        room = self.service.hub.find_room(name) if name.startswith("#") else None
        if room is None or not self._can_see(room):
            self.numeric(N.RPL_ENDOFNAMES, name)
            return 0
        return self._names(room)

    def _names(self, room: Room) -> int:
        symbol = "@" if "s" in room.modes else "="
        multi = self.caps & enc.MULTI_PREFIX
        long_form = self.caps & enc.USERHOST_IN_NAMES
        words = []
        for member, flags in room.members.items():
            shown = member.mask if long_form else member.nick
            words.append(_prefixes(flags, bool(multi)) + shown)  # type: ignore[operator]
        sent = self.listing(N.RPL_NAMREPLY, (symbol, room.name), words)
        self.numeric(N.RPL_ENDOFNAMES, room.name)
        return max(sent - 1, 0)

    def _can_see(self, room: Room) -> bool:
        return "s" not in room.modes or self.member in room.members

    def _topic(self, message: Message) -> None:
        if not self.need(message, 1):
            return
        hub = self.service.hub
        name = message.params[0]
        room = hub.room_or_raise(name)
        if len(message.params) < 2:
            if not self._can_see(room):
                raise err.NoSuchRoom(name)
            if room.topic:
                self._topic_reply(room)
            else:
                self.numeric(N.RPL_NOTOPIC, room.name)
            return
        hub.topic(self.member, room.name, message.params[1][:TOPICLEN])

    def _topic_reply(self, room: Room) -> None:
        self.numeric(N.RPL_TOPIC, room.name, text=room.topic)
        when = str(int(room.topic_at))
        self.numeric(N.RPL_TOPICWHOTIME, room.name, room.topic_by, text=when, data=True)

    def _list(self, message: Message) -> int:
        hub = self.service.hub
        self.numeric(N.RPL_LISTSTART, "Channel")
        wanted: list[Room]
        tests: list[Callable[[Room], bool]] = []
        if message.params and message.params[0]:
            wanted = []
            for word in message.params[0].split(","):
                if word.startswith(">") and word[1:].isdigit():
                    tests.append(lambda r, n=int(word[1:]): len(r.members) > n)
                elif word.startswith("<") and word[1:].isdigit():
                    tests.append(lambda r, n=int(word[1:]): len(r.members) < n)
                elif word.startswith("!"):
                    tests.append(lambda r, m=word[1:]: not mask_match(m, r.name))
                elif "*" in word or "?" in word:
                    tests.append(lambda r, m=word: mask_match(m, r.name))
                elif (room := hub.find_room(word)) is not None:
                    wanted.append(room)
            if tests:
                wanted = [r for r in hub.list_rooms() if all(t(r) for t in tests)]
        else:
            wanted = hub.list_rooms()
        sent = 0
        for room in wanted:
            if self._can_see(room):
                self.numeric(N.RPL_LIST, room.name, str(len(room.members)), text=room.topic)
                sent += 1
        self.numeric(N.RPL_LISTEND)
        return sent // 10

    def _mode(self, message: Message) -> int:
        if not self.need(message, 1):
            return 0
        target = message.params[0]
        if not target.startswith("#"):
            self._user_mode(message)
            return 0
        hub = self.service.hub
        room = hub.room_or_raise(target)
        if len(message.params) == 1:
            modes, args = room.mode_string(show_key=self.member in room.members)
            self.send(
                N.RPL_CHANNELMODEIS.code, self.me, room.name, modes, *args, source=self.server_name
            )
            self.numeric(N.RPL_CREATIONTIME, room.name, text=str(int(room.created)), data=True)
            return 0
        changes, queries = parse_mode_changes(message.params[1], list(message.params[2:]))
        for char in queries:
            if char == "b":
                for mask, setter, when in room.bans:
                    self.send(
                        N.RPL_BANLIST.code,
                        self.me,
                        room.name,
                        mask,
                        setter,
                        str(int(when)),
                        source=self.server_name,
                        colon=False,
                    )
                self.numeric(N.RPL_ENDOFBANLIST, room.name)
        if not changes:
            return 0
        for change in changes:
            if change.char in "kl" and change.sign == "+":
                if change.char == "k" and (not change.arg or " " in change.arg):
                    self.numeric(N.ERR_INVALIDMODEPARAM, room.name, "k", "*", text="Invalid key")
                    change.char = ""
                elif (
                    change.char == "l"
                    and not (change.arg or "").isdigit()
                    or (change.char == "l" and int(change.arg or "0") <= 0)
                ):
                    arg = change.arg or "*"
                    self.numeric(N.ERR_INVALIDMODEPARAM, room.name, "l", arg, text="Invalid limit")
                    change.char = ""
        changes = [c for c in changes if c.char]
        if not changes:
            return 0
        _, refused = hub.change_room_modes(self.member, room.name, changes)
        for exc in refused:
            self.hub_error(exc, "MODE")
        return 0

    def _user_mode(self, message: Message) -> None:
        hub = self.service.hub
        target = hub.find(message.params[0])
        if target is None:
            self.numeric(N.ERR_NOSUCHNICK, message.params[0])
            return
        if target is not self.member:
            self.numeric(N.ERR_USERSDONTMATCH)
            return
        if len(message.params) == 1:
            self.send(
                N.RPL_UMODEIS.code,
                self.me,
                "+" + self.member.modes,
                source=self.server_name,
                colon=False,
            )
            return
        changes, _ = parse_mode_changes(message.params[1], [])
        unknown = [c for c in changes if c.char not in USER_MODES]
        if unknown:
            self.numeric(N.ERR_UMODEUNKNOWNFLAG)
        applied = hub.change_user_modes(self.member, [c for c in changes if c.char in USER_MODES])
        if applied:
            self.send("MODE", self.me, applied, source=self.me, colon=False)

    def _kick(self, message: Message) -> None:
        if not self.need(message, 2):
            return
        rooms = message.params[0].split(",")
        nicks = message.params[1].split(",")[:MAX_TARGETS]
        reason = message.params[2][:KICKLEN] if len(message.params) > 2 else ""
        pairs = (
            zip(rooms, nicks, strict=False)
            if len(rooms) == len(nicks)
            else ((rooms[0], nick) for nick in nicks)
        )
        for room, nick in pairs:
            try:
                self.service.hub.kick(self.member, room, nick, reason)
            except err.HubError as exc:
                self.hub_error(exc, "KICK")

    def _invite(self, message: Message) -> None:
        if not self.need(message, 2):
            return
        nick, name = message.params[0], message.params[1]
        hub = self.service.hub
        if hub.find(nick) is None:
            raise err.NoSuchNick(nick)
        room = hub.room_or_raise(name)
        hub.invite(self.member, nick, room.name)
        invitee = hub.find(nick)
        self.numeric(N.RPL_INVITING, invitee.nick, room.name)  # type: ignore[union-attr,arg-type]
        if invitee is not None and invitee.away:
            self.numeric(N.RPL_AWAY, invitee.nick, text=invitee.away)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- messages

    def _privmsg(self, message: Message) -> int:
        return self._message(message, ev.ChatKind.SAY)

    def _notice(self, message: Message) -> int:
        return self._message(message, ev.ChatKind.NOTICE)

    def _tagmsg(self, message: Message) -> int:
        if not message.params:
            return 0
        tags = _client_tags(message)
        self._deliver(message.params[0], "", ev.ChatKind.TAGMSG, tags, quiet=True)
        return 0

    def _message(self, message: Message, kind: ev.ChatKind) -> int:
        quiet = kind is ev.ChatKind.NOTICE  # NOTICE never gets an automatic reply
        params = message.params
        if not params or not params[0]:
            if not quiet:
                self.numeric(N.ERR_NORECIPIENT, command=message.command)
            return 0
        if len(params) < 2 or params[1] == "":
            if not quiet:
                self.numeric(N.ERR_NOTEXTTOSEND)
            return 0
        text = params[1]
        if _has_forbidden(text):
            if not quiet:
                self.send(
                    "FAIL",
                    message.command,
                    "INVALID_TEXT",
                    "Control characters refused",
                    source=self.server_name,
                )
            return 0
        tags = _client_tags(message)
        longest = max(params[0].split(","), key=len)
        relayed = f":{self.member.mask} {message.command} {longest} :{text}\r\n"
        if len(relayed.encode()) > LINE_LIMIT:
            # Relayed with our prefix it would not fit one line; IRC peers would have to
            # truncate it. Refuse it whole instead (417 is meant for exactly this).
            if not quiet:
                self.numeric(N.ERR_INPUTTOOLONG)
            return 0
        ctcp = parse_ctcp(text)
        if ctcp is not None and ctcp[0] == "ACTION" and kind is ev.ChatKind.SAY:
            kind, text = ev.ChatKind.ACTION, ctcp[1]
        targets = params[0].split(",")[:MAX_TARGETS]
        if (
            len(targets) == 1
            and kind is ev.ChatKind.SAY
            and not tags
            and ctcp is None
            and targets[0].startswith("#")
            and not self.caps & enc.ECHO_MESSAGE
        ):
            # Consecutive PRIVMSGs to one channel from one read go out as one event.
            room = targets[0]
            if self.batch_room is not None and self.batch_room != room:
                self.flush_batch()
            self.batch_room = room
            self.batch.append(text)
            return 0
        self.flush_batch()  # what came before this message goes out before it
        for target in targets:
            self._deliver(target, text, kind, tags, quiet)
        return 0

    def flush_batch(self) -> None:
        room, texts = self.batch_room, self.batch
        if room is None:
            return
        self.batch_room, self.batch = None, []
        self.service.stats["messages_in"] += len(texts)
        try:
            self.service.hub.say(self.member, room, tuple(texts))
        except err.HubError as exc:
            for _ in texts:
                self._message_error(exc, room)

    def _message_error(self, exc: err.HubError, target: str) -> None:
        if isinstance(exc, err.NoSuchRoom):
            self.numeric(N.ERR_NOSUCHCHANNEL, target)
        elif isinstance(exc, err.NotInRoom):
            self.numeric(N.ERR_CANNOTSENDTOCHAN, target, text="Cannot send to channel (+n)")
        else:
            self.hub_error(exc, "PRIVMSG")

    def _deliver(
        self,
        target: str,
        text: str,
        kind: ev.ChatKind,
        tags: tuple[tuple[str, str], ...],
        quiet: bool,
    ) -> None:
        hub = self.service.hub
        stats = self.service.stats
        try:
            if target.startswith("#"):
                stats["messages_in"] += 1
                event: ev.Chat | ev.PrivateChat = hub.say(self.member, target, (text,), kind, tags)
            else:
                stats["private_in"] += 1
                cost = len(text) + 64
                event = hub.private(self.member, target, text, kind, cost, tags)
                recipient = hub.find(target)
                if not quiet and recipient is not None and recipient.away:
                    self.numeric(N.RPL_AWAY, recipient.nick, text=recipient.away)  # type: ignore[arg-type]
        except err.HubError as exc:
            if not quiet:
                self._message_error(exc, target)
            return
        if self.caps & enc.ECHO_MESSAGE:
            self.write(self.encoder.encode(event, Role.ACTOR))

    # ----------------------------------------------------------------- queries

    def _who(self, message: Message) -> int:
        hub = self.service.hub
        mask = message.params[0] if message.params and message.params[0] else "*"
        lines = 0
        if mask.startswith("#"):
            room = hub.find_room(mask)
            if room is not None and self._can_see(room):
                for member, flags in room.members.items():
                    self._who_reply(member, room.name, flags)
                    lines += 1
        else:
            exact = hub.find(mask)
            if exact is not None and "*" not in mask and "?" not in mask:
                self._who_reply(exact, "*", 0)
                lines = 1
            else:
                for member in hub.nicks.values():
                    if not mask_match(mask, member.nick) and not mask_match(mask, member.mask):  # type: ignore[arg-type]
                        continue
                    if (
                        "i" in member.modes
                        and member is not self.member
                        and not hub.shares_room(member, self.member)
                    ):
                        continue
                    self._who_reply(member, "*", 0)
                    lines += 1
        self.numeric(N.RPL_ENDOFWHO, mask)
        return lines // 10

    def _who_reply(self, member: Member, channel: str, flags: int) -> None:
        status = "G" if member.away else "H"
        if "o" in member.modes:
            status += "*"
        status += _prefixes(flags, bool(self.caps & enc.MULTI_PREFIX))
        self.numeric(
            N.RPL_WHOREPLY,
            channel,
            member.user,
            member.host,
            self.server_name,
            member.nick,  # type: ignore[arg-type]
            status,
            text=f"0 {member.realname or 'chatd line user'}",
        )

    def _whois(self, message: Message) -> None:
        if not message.params:
            self.numeric(N.ERR_NONICKNAMEGIVEN)
            return
        nick = message.params[-1].split(",")[0]
        hub = self.service.hub
        member = hub.find(nick)
        if member is None:
            self.numeric(N.ERR_NOSUCHNICK, nick)
            self.numeric(N.RPL_ENDOFWHOIS, nick)
            return
        name: str = member.nick  # type: ignore[assignment]
        realname = member.realname or "chatd line user"
        self.numeric(N.RPL_WHOISUSER, name, member.user, member.host, "*", text=realname)
        rooms = [
            _prefixes(room.members[member], bool(self.caps & enc.MULTI_PREFIX)) + room.name
            for room in member.rooms.values()
            if self._can_see(room)
        ]
        if rooms:
            self.listing(N.RPL_WHOISCHANNELS, (name,), rooms)
        self.numeric(N.RPL_WHOISSERVER, name, self.server_name, text="chatd")
        if member.away:
            self.numeric(N.RPL_AWAY, name, text=member.away)
        if "o" in member.modes:
            self.numeric(N.RPL_WHOISOPERATOR, name)
        session = member.session
        if session is not None:
            idle = int(time.monotonic() - session.last_active)
            self.numeric(N.RPL_WHOISIDLE, name, str(max(idle, 0)), str(int(member.signon)))
        self.numeric(N.RPL_ENDOFWHOIS, name)

    def _whowas(self, message: Message) -> None:
        if not message.params or not message.params[0]:
            self.numeric(N.ERR_NONICKNAMEGIVEN)
            return
        nick = message.params[0]
        count = 0
        if len(message.params) > 1:
            try:
                count = int(message.params[1])
            except ValueError:
                count = 0
        found = 0
        for entry in self.service.hub.whowas_entries(nick):
            self.numeric(
                N.RPL_WHOWASUSER,
                entry.nick,
                entry.user,
                entry.host,
                "*",
                text=entry.realname or "chatd line user",
            )
            self.numeric(N.RPL_WHOISSERVER, entry.nick, self.server_name, text="chatd")
            found += 1
            if 0 < count <= found:
                break
        if not found:
            self.numeric(N.ERR_WASNOSUCHNICK, nick)
        self.numeric(N.RPL_ENDOFWHOWAS, nick)

    def _away(self, message: Message) -> None:
        text = message.params[0][:AWAYLEN] if message.params else ""
        self.service.hub.set_away(self.member, text or None)
        self.numeric(N.RPL_NOWAWAY if text else N.RPL_UNAWAY)

    def _ison(self, message: Message) -> None:
        hub = self.service.hub
        present = []
        for word in " ".join(message.params).split():
            member = hub.find(word)
            if member is not None:
                present.append(member.nick)
        self.numeric(N.RPL_ISON, text=" ".join(present))  # type: ignore[arg-type]

    def _userhost(self, message: Message) -> None:
        hub = self.service.hub
        replies = []
        for word in " ".join(message.params).split()[:5]:
            member = hub.find(word)
            if member is not None:
                oper = "*" if "o" in member.modes else ""
                away = "-" if member.away else "+"
                replies.append(f"{member.nick}{oper}={away}{member.user}@{member.host}")
        self.numeric(N.RPL_USERHOST, text=" ".join(replies))

    def _version(self, message: Message) -> None:
        self.numeric(N.RPL_VERSION, VERSION, self.server_name, text="chatd IRC dialect")
        self._isupport()

    def _time(self, message: Message) -> None:
        now = time.time()
        text = datetime.fromtimestamp(now, UTC).strftime("%A %B %d %Y -- %H:%M:%S UTC")
        self.numeric(N.RPL_TIME, self.server_name, str(int(now)), text=text)

    def _info(self, message: Message) -> None:
        for line in (f"{VERSION}: a chat daemon on a selectors reactor", "https://example.invalid"):
            self.numeric(N.RPL_INFO, text=line)
        self.numeric(N.RPL_ENDOFINFO)

    def _links(self, message: Message) -> None:
        self.send("365", self.me, "*", "End of /LINKS list", source=self.server_name)

    def _help(self, message: Message) -> None:
        subject = message.params[0].upper() if message.params else "*"
        if subject != "*" and subject not in HANDLERS[State.REGISTERED]:
            self.numeric(N.ERR_HELPNOTFOUND, subject)
            return
        self.send("704", self.me, subject, f"** Help on {subject} **", source=self.server_name)
        if subject == "*":
            commands = " ".join(sorted(HANDLERS[State.REGISTERED]))
            self.send("705", self.me, subject, commands, source=self.server_name)
        else:
            self.send(
                "705", self.me, subject, f"See RFC 2812 for {subject}.", source=self.server_name
            )
        self.send("706", self.me, subject, "End of /HELP", source=self.server_name)

    # ----------------------------------------------------------------- operators

    def _oper(self, message: Message) -> None:
        if not self.need(message, 2):
            return
        name, password = message.params[0], message.params[1]
        if self.service.config.opers.get(name) != password or password == "":
            self.numeric(N.ERR_PASSWDMISMATCH)
            return
        self.service.hub.make_oper(self.member)
        self.numeric(N.RPL_YOUREOPER)
        self.send("MODE", self.me, "+o", source=self.me, colon=False)

    def _kill(self, message: Message) -> None:
        if "o" not in self.member.modes:
            self.numeric(N.ERR_NOPRIVILEGES)
            return
        if not self.need(message, 1):
            return
        victim = self.service.hub.find(message.params[0])
        if victim is None:
            self.numeric(N.ERR_NOSUCHNICK, message.params[0])
            return
        reason = message.params[1] if len(message.params) > 1 else "no reason"
        session = victim.session
        if session is not None:
            session.kill(self.me, reason[:KICKLEN])

    def _wallops(self, message: Message) -> None:
        if not self.need(message, 1):
            return
        self.service.hub.wallops(self.member, message.params[0][:TOPICLEN])


def _prefixes(flags: int, multi: bool) -> str:
    """``@``, ``+``, or with multi-prefix every prefix the member has, highest first."""
    out = ""
    for flag, _, symbol in PREFIXES:
        if flags & flag:
            out += symbol
            if not multi:
                break
    return out


def _client_tags(message: Message) -> tuple[tuple[str, str], ...]:
    """The client-only (``+``) tags of a message, which are relayed to tag-aware clients."""
    if not message.tags:
        return ()
    return tuple((k, v) for k, v in message.tags.items() if k.startswith("+"))


_BEFORE: dict[str, Handler] = {
    "CAP": IrcSession._cap,
    "PASS": IrcSession._pass,
    "NICK": IrcSession._nick,
    "USER": IrcSession._user,
    "PING": IrcSession._ping,
    "PONG": IrcSession._pong,
    "QUIT": IrcSession._quit,
}

#: The command table of each registration state (h11 style: the reader is chosen by state).
HANDLERS: dict[State, dict[str, Handler]] = {
    State.REGISTERING: _BEFORE,
    State.REGISTERED: {
        **_BEFORE,
        "JOIN": IrcSession._join,
        "PART": IrcSession._part,
        "PRIVMSG": IrcSession._privmsg,
        "NOTICE": IrcSession._notice,
        "TAGMSG": IrcSession._tagmsg,
        "NAMES": IrcSession._names_command,
        "TOPIC": IrcSession._topic,
        "LIST": IrcSession._list,
        "MODE": IrcSession._mode,
        "KICK": IrcSession._kick,
        "INVITE": IrcSession._invite,
        "WHO": IrcSession._who,
        "WHOIS": IrcSession._whois,
        "WHOWAS": IrcSession._whowas,
        "AWAY": IrcSession._away,
        "ISON": IrcSession._ison,
        "USERHOST": IrcSession._userhost,
        "LUSERS": IrcSession._lusers,
        "MOTD": IrcSession._motd,
        "VERSION": IrcSession._version,
        "TIME": IrcSession._time,
        "INFO": IrcSession._info,
        "LINKS": IrcSession._links,
        "HELP": IrcSession._help,
        "HELPOP": IrcSession._help,
        "OPER": IrcSession._oper,
        "KILL": IrcSession._kill,
        "WALLOPS": IrcSession._wallops,
    },
}
