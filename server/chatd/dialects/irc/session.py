"""One IRC client: its state, its output, the dispatch of commands and the command table.

Sans-IO like the line dialect: the session gets decoded :mod:`wire <chatd.dialects.irc.wire>`
items from :class:`~chatd.dialects.base.Session`, calls the hub, and writes bytes to its
transport; it never sees a socket.

The commands themselves live in modules by group, each a set of functions
``handler(session, message)``: :mod:`~chatd.dialects.irc.registration` (CAP, PASS, NICK,
USER, PING, QUIT), :mod:`~chatd.dialects.irc.channels` (JOIN, PART, NAMES, TOPIC, MODE,
KICK, INVITE), :mod:`~chatd.dialects.irc.messages` (PRIVMSG, NOTICE, TAGMSG),
:mod:`~chatd.dialects.irc.queries` (WHO, WHOIS, WHOWAS, LIST, ISON, USERHOST),
:mod:`~chatd.dialects.irc.users` (AWAY, SETNAME, MONITOR),
:mod:`~chatd.dialects.irc.chathistory` (CHATHISTORY) and
:mod:`~chatd.dialects.irc.info` (LUSERS, MOTD, VERSION, ..., OPER, KILL, WALLOPS).
:data:`HANDLERS`, at the end of this module, is the one table that names them all.

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

A command tagged ``@label=...`` by a client with ``labeled-response`` runs with its
output captured (:mod:`~chatd.dialects.irc.labels`), which then goes out labeled: one
line, a batch, or an ``ACK``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from chatd.core import errors as err
from chatd.core.model import Room
from chatd.dialects.base import Context, Session, Work
from chatd.dialects.irc import (
    channels,
    chathistory,
    info,
    labels,
    messages,
    queries,
    registration,
    users,
)
from chatd.dialects.irc import encoder as enc
from chatd.dialects.irc.encoder import encoder_for, fit
from chatd.dialects.irc.limits import LINE_LIMIT, PING_TIMEOUT_TEXT
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.registration import Registration, State
from chatd.dialects.irc.wire import (
    Blank,
    InputTooLong,
    InvalidUtf8,
    IrcDecoder,
    Malformed,
    Message,
    encode,
)
from chatd.net.transport import QUIT_TEXT, DisconnectReason

Handler = Callable[["IrcSession", Message], int | None]
#: Tags a line may carry per extra flood token it costs (4 KB holds ~800 short ones).
TAGS_PER_TOKEN = 32


class IrcSession(Session):
    """One IRC client."""

    __slots__ = (
        "registration",
        "caps",
        "ping_sent",
        "batch_room",
        "batch",
        "capture",
        "batches",
    )

    def __init__(self, ctx: Context, host: str, now: float, delay: float = 0.0) -> None:
        super().__init__(ctx, host, now, delay)
        #: What the client has said toward registration; ``None`` once registered (see
        #: :attr:`state`), so an idle registered client keeps none of it.
        self.registration: Registration | None = Registration()
        #: Enabled capabilities, as :data:`~chatd.dialects.irc.encoder.CAP_BIT` bits.
        self.caps = 0
        #: When the server's keepalive PING went out (0: none outstanding).
        self.ping_sent = 0.0
        #: PRIVMSGs to one channel collected from this read (published as one event).
        #: Both ``None`` between reads: a list only while lines are collected, so an idle
        #: connection holds none (issue 20's idle-memory goal).
        self.batch_room: str | None = None
        self.batch: list[str] | None = None
        #: The output of the labeled command running now, if any.
        self.capture: labels.Capture | None = None
        #: Labeled-response batches opened so far (their references are this count).
        self.batches = 0
        self.encoder = encoder_for(0)

    @property
    def state(self) -> State:
        """Where registration is; it picks the command table (:data:`HANDLERS`)."""
        return State.REGISTERING if self.registration is not None else State.REGISTERED

    def make_decoder(self) -> IrcDecoder:
        return IrcDecoder()

    # ----------------------------------------------------------------- output

    @property
    def server_name(self) -> str:
        return self.ctx.config.server_name

    @property
    def me(self) -> str:
        """The ``<client>`` parameter of numerics: the nick, or ``*`` before one."""
        member = self.member
        return member.nick if member is not None else "*"

    def send(
        self, command: str, *params: str, source: str | None = None, colon: bool = True
    ) -> None:
        """One line; a last parameter that would overflow 512 bytes is cut to fit.

        The last parameter is text (with its ``:``) unless ``colon`` is False. A middle
        parameter that cannot be one (a client's word that is empty, holds a space or
        starts with ``:``, echoed in a numeric) is shown as ``*``: no word a client
        chooses can make a reply fail to encode.
        """
        if params:
            middle = [p if _fits_middle(p) else "*" for p in params[:-1]]
            head = " ".join((f":{source}" if source else "", command, *middle))
            params = (*middle, fit(head, params[-1]))
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

    def listing(self, num: N, params: tuple[str, ...], words: Iterable[str], sep: str = " ") -> int:
        """``num`` replies with ``words`` packed into the trailing parameter; lines sent.

        ``sep`` joins the words (a space for NAMES, a comma for MONITOR's lists).
        """
        head = f":{self.server_name} {num.code} {self.me} {' '.join(params)} :"
        room = LINE_LIMIT - len(head.encode()) - 2
        lines: list[str] = []
        current: list[str] = []
        size = 0
        for word in words:
            cost = len(word.encode()) + (len(sep) if current else 0)
            if current and size + cost > room:
                lines.append(sep.join(current))
                current, size = [], 0
                cost -= len(sep)
            current.append(word)
            size += cost
        if current:
            lines.append(sep.join(current))
        for line in lines:
            self.numeric(num, *params, text=line)
        return len(lines)

    def close(self, reason: DisconnectReason, detail: str = "") -> None:
        self.end_label()  # the labeled response goes out before the close
        super().close(reason, detail)

    def greet(self) -> None:
        pass  # IRC clients speak first

    def error_and_close(self, text: str, reason: DisconnectReason, detail: str = "") -> None:
        self.send("ERROR", f"Closing Link: {self.host} ({text})")
        self.close(reason, detail)

    def timed_out(self, reason: DisconnectReason) -> None:
        text = PING_TIMEOUT_TEXT if reason is DisconnectReason.IDLE else QUIT_TEXT[reason]
        self.error_and_close(text, reason, text)

    def can_see(self, room: Room) -> bool:
        """Whether this client may learn of ``room`` (a secret room only to its members)."""
        return "s" not in room.modes or self.uid in room.members

    # ----------------------------------------------------------------- keepalive

    def next_deadline(self, now: float) -> float | None:
        if self.member is None:
            return None
        interval = self.ctx.config.ping_interval
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

    def handle(self, item: object) -> int:
        if isinstance(item, Blank):
            return item.count - 1  # each blank line costs a flood token
        tags = (
            item.tags
            if isinstance(item, Message)
            else item.message.tags
            if isinstance(item, InvalidUtf8)
            else None
        )
        if not tags or "label" not in tags or not self.caps & enc.LABELED_RESPONSE:
            return self._handle(item)
        self.flush_batch()  # earlier commands' output is not this one's response
        self.capture = labels.Capture(self.transport, tags["label"])
        self.out = self.capture
        try:
            extra = self._handle(item)
            self.flush_batch()
        finally:
            if self.work is None:
                self.end_label()
            else:
                # Long work: its steps write into the capture (step_work); what others
                # send meanwhile goes straight out, and the response goes at the end.
                self.out = self.transport
        return extra

    def step_work(self, work: Work) -> int:
        capture = self.capture
        if capture is None:
            return next(work)
        self.out = capture
        try:
            return next(work)
        finally:
            self.out = self.transport

    def work_done(self) -> None:
        self.end_label()

    def end_label(self) -> None:
        """Send the running labeled command's response (safe when there is none)."""
        capture = self.capture
        if capture is None:
            return
        self.capture = None
        self.out = self.transport
        data = b"".join(capture.chunks)
        batch_id = None
        # A labeled-response batch is needed for several lines, unless they are one batch.
        if self.caps & enc.BATCH and data.count(b"\n") > 1 and not labels.one_batch(data):
            self.batches += 1
            batch_id = f"{self.batches:x}"
        out = labels.response(data, capture.label, self.server_name, batch_id)
        self.ctx.stats["bytes_out"] += len(out) - len(data)
        self.transport.write(out)

    def _handle(self, item: object) -> int:
        stats = self.ctx.stats
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
        # Reading hundreds of tags is work whatever the command does with them.
        extra = len(message.tags) // TAGS_PER_TOKEN
        handler = HANDLERS[self.state].get(command)
        if handler is None:
            if self.state is State.REGISTERING and command in HANDLERS[State.REGISTERED]:
                self.numeric(N.ERR_NOTREGISTERED)
            else:
                self.numeric(N.ERR_UNKNOWNCOMMAND, command)
            return extra
        try:
            return (handler(self, message) or 0) + extra
        except err.HubError as exc:
            self.hub_error(exc, command)
            return extra

    def flush_batch(self) -> None:
        messages.flush_batch(self)

    def drop_batch(self) -> None:
        self.batch_room, self.batch = None, None

    def need(self, message: Message, count: int) -> bool:
        """Answer 461 and return False if ``message`` has fewer than ``count`` params."""
        if len(message.params) < count:
            self.numeric(N.ERR_NEEDMOREPARAMS, message.command)
            return False
        return True

    def hub_error(self, exc: err.HubError, command: str = "") -> None:
        """Render a hub refusal as its numeric (or, for IRCv3-era refusals, a FAIL)."""
        match exc:
            case err.NickInUse(nick=nick):
                self.numeric(N.ERR_NICKNAMEINUSE, nick)
            case err.NickUnavailable(nick=nick):
                self.fail(
                    command or "NICK",
                    "TEMPORARILY_UNAVAILABLE",
                    nick,
                    text="Nicknames cannot be given out now (the cluster is unreachable); "
                    "try again",
                )
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
                text = f"Cannot send to channel ({_CANNOT_SEND.get(why, why)})"
                self.numeric(N.ERR_CANNOTSENDTOCHAN, room, text=text)
            case err.ForgedNotice():
                self.fail(
                    command or "PRIVMSG",
                    "FORGED_NOTICE",
                    text="That action would read as a server notice",
                )
            case err.InvalidText(what=what, why=why):
                code = "INVALID_REALNAME" if what == "realname" else "INVALID_TEXT"
                self.fail(command or "PRIVMSG", code, text=f"Invalid {what}: {why}")
            case err.RecipientBusy(nick=nick):
                self.fail(
                    command or "PRIVMSG",
                    "TARGET_TOO_FAST",
                    nick,
                    text=f"{nick} is receiving too much; message not sent, try again later",
                )
            case err.UnknownMode(char=char):
                self.numeric(N.ERR_UNKNOWNMODE, char)
            case err.NeedMoreParams():
                self.numeric(N.ERR_NEEDMOREPARAMS, command or "MODE")
            case err.NoPrivileges():
                self.numeric(N.ERR_NOPRIVILEGES)
            case err.InvalidModeParam(room=room, char=char, arg=arg, why=why):
                shown = "*" if char == "k" or not arg or " " in arg else arg  # never echo a key
                self.numeric(N.ERR_INVALIDMODEPARAM, room, char, shown, text=why)
            case err.BanListFull(room=room, char=char):
                self.numeric(N.ERR_INVALIDMODEPARAM, room, char, "*", text="List is full")
            case err.NoRoom():
                self.numeric(N.ERR_NOTONCHANNEL, "*")
            case _:
                self.fail(command or "*", "REFUSED", text=f"Refused: {type(exc).__name__}")

    def fail(self, command: str, code: str, *context: str, text: str) -> None:
        """An IRCv3 standard reply: ``FAIL <command> <code> [<context>...] :<text>``."""
        self.send("FAIL", command, code, *context, text, source=self.server_name)


def _fits_middle(param: str) -> bool:
    """Whether ``param`` can be a middle parameter as it is."""
    return bool(param) and param[0] != ":" and " " not in param


#: CannotSend's ``why`` (the mode responsible) in IRC's words.
_CANNOT_SEND = {
    "n": "you are not in it (+n)",
    "m": "it is moderated (+m)",
    "b": "you are banned (+b)",
    "C": "CTCP requests are blocked (+C)",
}


_BEFORE: dict[str, Handler] = {
    "CAP": registration.cap,
    "PASS": registration.pass_,
    "NICK": registration.nick,
    "USER": registration.user,
    "PING": registration.ping,
    "PONG": registration.pong,
    "QUIT": registration.quit,
}

#: The command table of each registration state (h11 style: the reader is chosen by state).
HANDLERS: dict[State, dict[str, Handler]] = {
    State.REGISTERING: _BEFORE,
    State.REGISTERED: {
        **_BEFORE,
        "JOIN": channels.join,
        "PART": channels.part,
        "NAMES": channels.names,
        "TOPIC": channels.topic,
        "MODE": channels.mode,
        "KICK": channels.kick,
        "INVITE": channels.invite,
        "PRIVMSG": messages.privmsg,
        "NOTICE": messages.notice,
        "TAGMSG": messages.tagmsg,
        "LIST": queries.list_,
        "WHO": queries.who,
        "WHOIS": queries.whois,
        "WHOWAS": queries.whowas,
        "AWAY": users.away,
        "SETNAME": users.setname,
        "MONITOR": users.monitor,
        "ISON": queries.ison,
        "USERHOST": queries.userhost,
        "LUSERS": info.lusers,
        "MOTD": info.motd,
        "VERSION": info.version,
        "TIME": info.time_,
        "INFO": info.info,
        "LINKS": info.links,
        "HELP": info.help_,
        "HELPOP": info.help_,
        "OPER": info.oper,
        "KILL": info.kill,
        "WALLOPS": info.wallops,
        "CHATHISTORY": chathistory.chathistory,
    },
}
