"""Hub events as IRC lines, once per set of capabilities that changes the bytes.

Most of what an IRC client receives from other people is the same for every recipient:
``:amy!line@127.0.0.1 PRIVMSG #lobby :hi``. Six IRCv3 capabilities change those bytes:
``server-time`` adds a ``time`` tag, ``message-tags`` adds ``msgid``, ``bot`` and the
sender's client-only tags, ``away-notify``, ``invite-notify`` and ``setname`` decide
whether AWAY, INVITE and SETNAME lines are sent at all, and ``extended-monitor`` whether
a watcher outside the actor's rooms gets AWAY and SETNAME. :func:`encoder_for` interns
one :class:`IrcEncoder` per combination of those (:data:`ENCODING_BITS`), so the router
encodes an event at most once per combination for IRC however many IRC clients are in
the room, and usually once.

MONITOR's 730/731 name their recipient, so they are rendered per watcher
(:meth:`IrcEncoder.encode_for`); they are rare (a watched nick signing on or off).

Long text from the line dialect (up to ``--max-line`` bytes) is split at UTF-8 character
boundaries into several PRIVMSGs that each fit IRC's 512-byte line, in order, never
truncated (:func:`~chatd.dialects.irc.wire.split_text`). Other trailing parameters (a
kick reason, a topic) are cut to fit instead, as IRC servers do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chatd.core import events as ev
from chatd.core.events import Role
from chatd.dialects.irc.wire import ctcp, encode, split_text

#: The capabilities this server offers, and the bit each is kept as in a session.
CAPS = (
    "cap-notify",
    "multi-prefix",
    "echo-message",
    "server-time",
    "message-tags",
    "away-notify",
    "invite-notify",
    "userhost-in-names",
    "batch",
    "labeled-response",
    "setname",
    "extended-monitor",
)
CAP_BIT = {name: 1 << i for i, name in enumerate(CAPS)}
SERVER_TIME = CAP_BIT["server-time"]
MESSAGE_TAGS = CAP_BIT["message-tags"]
AWAY_NOTIFY = CAP_BIT["away-notify"]
INVITE_NOTIFY = CAP_BIT["invite-notify"]
ECHO_MESSAGE = CAP_BIT["echo-message"]
MULTI_PREFIX = CAP_BIT["multi-prefix"]
USERHOST_IN_NAMES = CAP_BIT["userhost-in-names"]
CAP_NOTIFY = CAP_BIT["cap-notify"]
BATCH = CAP_BIT["batch"]
LABELED_RESPONSE = CAP_BIT["labeled-response"]
SETNAME = CAP_BIT["setname"]
EXTENDED_MONITOR = CAP_BIT["extended-monitor"]
#: The bits that change how a relayed event is encoded.
ENCODING_BITS = (
    SERVER_TIME | MESSAGE_TAGS | AWAY_NOTIFY | INVITE_NOTIFY | SETNAME | EXTENDED_MONITOR
)
#: STATUSMSG: a Chat event's ``audience`` → the prefix of its IRC target.
STATUS_PREFIX = {"o": "@", "v": "+"}

LINE_LIMIT = 512


def prefix(source: ev.Source) -> str:
    return f"{source.nick}!{source.user}@{source.host}"


def server_time(at: float) -> str:
    """IRCv3 ``time`` tag value: ``2026-12-01T11:02:56.123Z``."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def fit(line_start: str, last: str, limit: int = LINE_LIMIT) -> str:
    """Cut ``last`` (at a character boundary) so that ``line_start :last\\r\\n`` fits."""
    room = limit - len(line_start.encode()) - 4  # " :" and "\r\n"
    data = last.encode()
    if len(data) <= room:
        return last
    return data[: max(room, 0)].decode("utf-8", "ignore")


class IrcEncoder:
    """Renders hub events for the IRC members whose capabilities have ``bits``."""

    __slots__ = ("bits", "clock", "__weakref__")

    def __init__(self, bits: int, clock: Callable[[], float] = time.time) -> None:
        self.bits = bits
        self.clock = clock

    def tags(
        self,
        at: float = 0.0,
        msgid: str = "",
        client: tuple[tuple[str, str], ...] = (),
        bot: bool = False,
    ) -> dict[str, str] | None:
        """The tags a relayed line carries for these capabilities (``None``: no tags).

        ``bot``: the sender is a bot (IRCv3 bot mode: a ``bot`` tag, without a value).
        """
        bits = self.bits
        if not bits & (SERVER_TIME | MESSAGE_TAGS):
            return None
        tags: dict[str, str] = {}
        if bits & SERVER_TIME:
            tags["time"] = server_time(at or self.clock())
        if bits & MESSAGE_TAGS:
            if msgid:
                tags["msgid"] = msgid
            if bot:
                tags["bot"] = ""
            tags.update(client)
        return tags or None

    def encode(self, event: ev.Event, role: Role) -> bytes:
        match event:
            case ev.Chat(source=source, room=room, texts=texts, kind=kind):
                if event.audience:
                    room = STATUS_PREFIX[event.audience] + room
                return self.chat(
                    prefix(source), room, texts, kind, event.tags, event.at, event.msgid, source.bot
                )
            case ev.PrivateChat(source=source, target=target, text=text, kind=kind):
                return self.chat(
                    prefix(source),
                    target,
                    (text,),
                    kind,
                    event.tags,
                    event.at,
                    event.msgid,
                    source.bot,
                )
            case ev.Joined(source=source, room=room, away=away):
                src = prefix(source)
                line = encode("JOIN", room, source=src, tags=self.tags())
                if away and role is Role.OTHER and self.bits & AWAY_NOTIFY:
                    away = fit(f":{src} AWAY", away)
                    line += encode("AWAY", away, source=src, tags=self.tags(), colon=True)
                return line
            case ev.Parted(source=source, room=room, reason=reason):
                src = prefix(source)
                if not reason:
                    return encode("PART", room, source=src, tags=self.tags())
                why = fit(f":{src} PART {room}", reason)
                return encode("PART", room, why, source=src, tags=self.tags(), colon=True)
            case ev.Quit(source=source, reason=reason, by_user=by_user):
                src = prefix(source)
                text = f"Quit: {reason}" if by_user else (reason or "Client quit")
                text = fit(f":{src} QUIT", text)
                return encode("QUIT", text, source=src, tags=self.tags(), colon=True)
            case ev.NickChanged(source=source, new=new):
                return encode("NICK", new, source=prefix(source), tags=self.tags())
            case ev.Kicked(source=source, room=room, nick=nick, reason=reason):
                src = prefix(source)
                why = fit(f":{src} KICK {room} {nick}", reason or source.nick)
                return encode("KICK", room, nick, why, source=src, tags=self.tags(), colon=True)
            case ev.TopicChanged(source=source, room=room, topic=topic):
                src = prefix(source)
                topic = fit(f":{src} TOPIC {room}", topic)
                return encode("TOPIC", room, topic, source=src, tags=self.tags(), colon=True)
            case ev.ModeChanged(source=source, room=room, changes=changes, args=args):
                return encode("MODE", room, changes, *args, source=prefix(source), tags=self.tags())
            case ev.Invited(source=source, nick=nick, room=room):
                if role is not Role.SUBJECT and not self.bits & INVITE_NOTIFY:
                    return b""
                return encode("INVITE", nick, room, source=prefix(source), tags=self.tags())
            case ev.AwayChanged(source=source, text=text):
                if not self.bits & AWAY_NOTIFY:
                    return b""
                if role is Role.WATCHER and not self.bits & EXTENDED_MONITOR:
                    return b""
                src = prefix(source)
                if not text:
                    return encode("AWAY", source=src, tags=self.tags())
                text = fit(f":{src} AWAY", text)
                return encode("AWAY", text, source=src, tags=self.tags(), colon=True)
            case ev.RealnameChanged(source=source, realname=realname):
                if not self.bits & SETNAME:
                    return b""
                if role is Role.WATCHER and not self.bits & EXTENDED_MONITOR:
                    return b""
                src = prefix(source)
                realname = fit(f":{src} SETNAME", realname)
                return encode("SETNAME", realname, source=src, tags=self.tags(), colon=True)
            case ev.CameOnline() | ev.WentOffline():
                return b""  # personal: see encode_for
            case ev.Wallops(source=source, text=text):
                src = prefix(source)
                text = fit(f":{src} WALLOPS", text)
                return encode("WALLOPS", text, source=src, tags=self.tags(), colon=True)
            case ev.ServerShutdown():
                return encode("ERROR", "Server shutting down", colon=True)
        raise TypeError(f"no IRC encoding for {event!r}")

    def encode_for(self, event: ev.Event, member: Any) -> bytes:
        """MONITOR's 730 RPL_MONONLINE / 731 RPL_MONOFFLINE for watcher ``member``."""
        session = member.session
        if session is None or member.nick is None:
            return b""
        server = session.server_name
        match event:
            case ev.CameOnline(source=source):
                return encode("730", member.nick, prefix(source), source=server, colon=True)
            case ev.WentOffline(nick=nick):
                return encode("731", member.nick, nick, source=server, colon=True)
        raise TypeError(f"no personal IRC encoding for {event!r}")

    def chat(
        self,
        src: str,
        target: str,
        texts: tuple[str, ...],
        kind: ev.ChatKind,
        client_tags: tuple[tuple[str, str], ...] = (),
        at: float = 0.0,
        msgid: str = "",
        bot: bool = False,
    ) -> bytes:
        """PRIVMSG/NOTICE lines for ``texts`` (each split to fit), or a TAGMSG."""
        if kind is ev.ChatKind.TAGMSG:
            if not self.bits & MESSAGE_TAGS:
                return b""
            tags = self.tags(at, msgid, client_tags, bot)
            return encode("TAGMSG", target, source=src, tags=tags)
        command = "NOTICE" if kind is ev.ChatKind.NOTICE else "PRIVMSG"
        head = f":{src} {command} {target} :"
        budget_prefix = len(head.encode())
        action = kind is ev.ChatKind.ACTION
        if action:
            budget_prefix += len("\x01ACTION \x01")
        lines: list[bytes] = []
        for i, text in enumerate(texts):
            tags = self.tags(
                at, f"{msgid}-{i}" if msgid and len(texts) > 1 else msgid, client_tags, bot
            )
            body = ctcp("ACTION", text) if action else text
            line = encode(command, target, body, source=src, colon=True)
            if len(line) <= LINE_LIMIT and not tags:
                lines.append(line)
                continue
            if len(line) <= LINE_LIMIT:  # the 512 bytes do not count the tags
                pieces = [text]
            else:
                pieces = split_text(budget_prefix, text)
            for piece in pieces:
                body = ctcp("ACTION", piece) if action else piece
                lines.append(encode(command, target, body, source=src, tags=tags, colon=True))
        return b"".join(lines)


_ENCODERS: dict[int, IrcEncoder] = {}


def encoder_for(caps: int) -> IrcEncoder:
    """The shared encoder of every IRC member whose capabilities include ``caps``' bits."""
    bits = caps & ENCODING_BITS
    encoder = _ENCODERS.get(bits)
    if encoder is None:
        encoder = _ENCODERS[bits] = IrcEncoder(bits)
    return encoder
