"""Hub events as IRC lines, once per set of capabilities that changes the bytes.

Most of what an IRC client receives from other people is the same for every recipient:
``:amy!line@127.0.0.1 PRIVMSG #lobby :hi``. Four IRCv3 capabilities change those bytes:
``server-time`` adds a ``time`` tag, ``message-tags`` adds ``msgid`` and the sender's
client-only tags, ``away-notify`` and ``invite-notify`` decide whether AWAY and INVITE
lines are sent at all. :func:`encoder_for` interns one :class:`IrcEncoder` per
combination of those four, so the router encodes an event at most sixteen times for
IRC however many IRC clients are in the room, and usually once.

Long text from the line dialect (up to ``--max-line`` bytes) is split at UTF-8 character
boundaries into several PRIVMSGs that each fit IRC's 512-byte line, in order, never
truncated (:func:`~chatd.dialects.irc.wire.split_text`). Other trailing parameters (a
kick reason, a topic) are cut to fit instead, as IRC servers do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

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
#: The bits that change how a relayed event is encoded.
ENCODING_BITS = SERVER_TIME | MESSAGE_TAGS | AWAY_NOTIFY | INVITE_NOTIFY

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
        self, at: float = 0.0, msgid: str = "", client: tuple[tuple[str, str], ...] = ()
    ) -> dict[str, str] | None:
        """The tags a relayed line carries for these capabilities (``None``: no tags)."""
        bits = self.bits
        if not bits & (SERVER_TIME | MESSAGE_TAGS):
            return None
        tags: dict[str, str] = {}
        if bits & SERVER_TIME:
            tags["time"] = server_time(at or self.clock())
        if bits & MESSAGE_TAGS:
            if msgid:
                tags["msgid"] = msgid
            tags.update(client)
        return tags or None

    def encode(self, event: ev.Event, role: Role) -> bytes:
        match event:
            case ev.Chat(source=source, room=room, texts=texts, kind=kind):
                return self.chat(
                    prefix(source), room, texts, kind, event.tags, event.at, event.msgid
                )
            case ev.PrivateChat(source=source, target=target, text=text, kind=kind):
                return self.chat(
                    prefix(source), target, (text,), kind, event.tags, event.at, event.msgid
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
                src = prefix(source)
                if not text:
                    return encode("AWAY", source=src, tags=self.tags())
                text = fit(f":{src} AWAY", text)
                return encode("AWAY", text, source=src, tags=self.tags(), colon=True)
            case ev.Wallops(source=source, text=text):
                src = prefix(source)
                text = fit(f":{src} WALLOPS", text)
                return encode("WALLOPS", text, source=src, tags=self.tags(), colon=True)
            case ev.ServerShutdown():
                return encode("ERROR", "Server shutting down", colon=True)
        raise TypeError(f"no IRC encoding for {event!r}")

    def chat(
        self,
        src: str,
        target: str,
        texts: tuple[str, ...],
        kind: ev.ChatKind,
        client_tags: tuple[tuple[str, str], ...] = (),
        at: float = 0.0,
        msgid: str = "",
    ) -> bytes:
        """PRIVMSG/NOTICE lines for ``texts`` (each split to fit), or a TAGMSG."""
        if kind is ev.ChatKind.TAGMSG:
            if not self.bits & MESSAGE_TAGS:
                return b""
            return encode("TAGMSG", target, source=src, tags=self.tags(at, msgid, client_tags))
        command = "NOTICE" if kind is ev.ChatKind.NOTICE else "PRIVMSG"
        head = f":{src} {command} {target} :"
        budget_prefix = len(head.encode())
        action = kind is ev.ChatKind.ACTION
        if action:
            budget_prefix += len("\x01ACTION \x01")
        lines: list[bytes] = []
        for i, text in enumerate(texts):
            tags = self.tags(at, f"{msgid}-{i}" if msgid and len(texts) > 1 else msgid, client_tags)
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
