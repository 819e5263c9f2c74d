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

Long text from the line dialect (up to ``--max-line`` bytes) reaches this encoder already
cut by the hub into pieces that each fit IRC's 512-byte line (:func:`piece_budget` tells
the hub how much fits), each piece with its own ``msgid``; the encoder only renders ids
and times the hub minted. Other trailing parameters (a kick reason, a topic) are cut to
fit instead, as IRC servers do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.router import Handle
from chatd.dialects.irc.wire import ctcp, encode, split_text
from chatd.dialects.modestrings import mode_line

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession

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
    "draft/chathistory",
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
#: The ``ERROR`` text of a shutdown (SIGTERM, SIGINT). IRC clients reconnect after an
#: ERROR by themselves; the text tells their user to expect it: the server is back once
#: restarted, and on a cluster the other nodes are up already (README, Operations).
SHUTDOWN_TEXT = "Server shutting down: please reconnect"

LINE_LIMIT = 512
#: What a CTCP ACTION adds around its text: ``\x01ACTION `` and ``\x01``.
ACTION_OVERHEAD = len("\x01ACTION \x01")


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


def piece_budget(source: ev.Source, target: str, kind: ev.ChatKind) -> int | None:
    """The most text bytes one PRIVMSG/NOTICE from ``source`` to ``target`` can carry in
    IRC's 512-byte line (tags do not count); the hub cuts longer lines to this."""
    if kind is ev.ChatKind.TAGMSG:
        return None
    command = "NOTICE" if kind is ev.ChatKind.NOTICE else "PRIVMSG"
    head = len(f":{source.mask} {command} {target} :".encode()) + 2  # and CR LF
    if kind is ev.ChatKind.ACTION:
        head += ACTION_OVERHEAD
    return max(LINE_LIMIT - head, 4)


class IrcEncoder:
    """Renders hub events for the IRC members whose capabilities have ``bits``."""

    __slots__ = ("bits", "__weakref__")

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def tags(
        self,
        at: float,
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
        if bits & SERVER_TIME and at:
            tags["time"] = server_time(at)
        if bits & MESSAGE_TAGS:
            if msgid:
                tags["msgid"] = msgid
            if bot:
                tags["bot"] = ""
            tags.update(client)
        return tags or None

    def encode(self, event: ev.Event, role: Role) -> bytes:
        match event:
            case ev.Chat(source=source, room=room, lines=lines, kind=kind):
                if event.audience:
                    room = STATUS_PREFIX[event.audience] + room
                return self.chat(source, room, lines, kind, event.tags)
            case ev.PrivateChat(source=source, target=target, lines=lines, kind=kind):
                return self.chat(source, target, lines, kind, event.tags)
            case ev.Joined(source=source, room=room, away=away, at=at):
                src = source.mask
                line = encode("JOIN", room, source=src, tags=self.tags(at))
                if away and role is Role.OTHER and self.bits & AWAY_NOTIFY:
                    away = fit(f":{src} AWAY", away)
                    line += encode("AWAY", away, source=src, tags=self.tags(at), colon=True)
                return line
            case ev.Parted(source=source, room=room, reason=reason, at=at):
                src = source.mask
                if not reason:
                    return encode("PART", room, source=src, tags=self.tags(at))
                why = fit(f":{src} PART {room}", reason)
                return encode("PART", room, why, source=src, tags=self.tags(at), colon=True)
            case ev.Quit(source=source, reason=reason, by_user=by_user, at=at):
                src = source.mask
                text = f"Quit: {reason}" if by_user else (reason or "Client quit")
                text = fit(f":{src} QUIT", text)
                return encode("QUIT", text, source=src, tags=self.tags(at), colon=True)
            case ev.Killed(source=source, victim=victim, reason=reason):
                if role is not Role.SUBJECT:
                    return b""
                text = f"Closing Link: {victim.host} (Killed ({source.nick} ({reason})))"
                return encode("ERROR", fit("ERROR", text), colon=True)
            case ev.NickChanged(source=source, new=new, at=at):
                return encode("NICK", new, source=source.mask, tags=self.tags(at))
            case ev.Kicked(source=source, room=room, victim=victim, reason=reason, at=at):
                src = source.mask
                why = fit(f":{src} KICK {room} {victim.nick}", reason or source.nick)
                tags = self.tags(at)
                return encode("KICK", room, victim.nick, why, source=src, tags=tags, colon=True)
            case ev.TopicChanged(source=source, room=room, topic=topic, at=at):
                src = source.mask
                topic = fit(f":{src} TOPIC {room}", topic)
                return encode("TOPIC", room, topic, source=src, tags=self.tags(at), colon=True)
            case ev.ModeChanged(source=source, room=room, changes=changes, at=at):
                modes, args = mode_line(changes)
                return encode("MODE", room, modes, *args, source=source.mask, tags=self.tags(at))
            case ev.UserModeChanged(source=source, changes=changes, at=at):
                if role is not Role.ACTOR:
                    return b""
                nick = source.nick
                return encode("MODE", nick, changes, source=nick, tags=self.tags(at))
            case ev.Invited(source=source, victim=victim, room=room, at=at):
                if role is not Role.SUBJECT and not self.bits & INVITE_NOTIFY:
                    return b""
                tags = self.tags(at)
                return encode("INVITE", victim.nick, room, source=source.mask, tags=tags)
            case ev.AwayChanged(source=source, text=text, at=at):
                if not self.bits & AWAY_NOTIFY:
                    return b""
                if role is Role.WATCHER and not self.bits & EXTENDED_MONITOR:
                    return b""
                src = source.mask
                if not text:
                    return encode("AWAY", source=src, tags=self.tags(at))
                text = fit(f":{src} AWAY", text)
                return encode("AWAY", text, source=src, tags=self.tags(at), colon=True)
            case ev.RealnameChanged(source=source, realname=realname, at=at):
                if not self.bits & SETNAME:
                    return b""
                if role is Role.WATCHER and not self.bits & EXTENDED_MONITOR:
                    return b""
                src = source.mask
                realname = fit(f":{src} SETNAME", realname)
                return encode("SETNAME", realname, source=src, tags=self.tags(at), colon=True)
            case ev.CameOnline() | ev.WentOffline():
                return b""  # personal: see encode_for
            case ev.Registered() | ev.RoomRestored():
                return b""
            case ev.Wallops(source=source, text=text, at=at):
                src = source.mask
                text = fit(f":{src} WALLOPS", text)
                return encode("WALLOPS", text, source=src, tags=self.tags(at), colon=True)
            case ev.ServerShutdown():
                # ERROR, as real servers end a connection; clients reconnect on their own.
                return encode("ERROR", SHUTDOWN_TEXT, colon=True)
        raise TypeError(f"no IRC encoding for {event!r}")

    def encode_for(self, event: ev.Event, recipient: Handle) -> bytes:
        """MONITOR's 730 RPL_MONONLINE / 731 RPL_MONOFFLINE for watcher ``recipient``."""
        session: IrcSession = recipient  # type: ignore[assignment]  # IRC's own handles
        if session.member is None:
            return b""
        server = session.server_name
        me = session.me
        match event:
            case ev.CameOnline(source=source):
                return encode("730", me, source.mask, source=server, colon=True)
            case ev.WentOffline(nick=nick):
                return encode("731", me, nick, source=server, colon=True)
        raise TypeError(f"no personal IRC encoding for {event!r}")

    def chat(
        self,
        source: ev.Source,
        target: str,
        lines: tuple[ev.ChatLine, ...],
        kind: ev.ChatKind,
        client_tags: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        """One PRIVMSG/NOTICE per line (each with its own ``msgid``), or a TAGMSG."""
        src = source.mask
        bot = source.bot
        if kind is ev.ChatKind.TAGMSG:
            if not self.bits & MESSAGE_TAGS:
                return b""
            first = lines[0]
            tags = self.tags(first.at, first.msgid, client_tags, bot)
            return encode("TAGMSG", target, source=src, tags=tags)
        command = "NOTICE" if kind is ev.ChatKind.NOTICE else "PRIVMSG"
        action = kind is ev.ChatKind.ACTION
        out: list[bytes] = []
        for line in lines:
            tags = self.tags(line.at, line.msgid, client_tags, bot)
            body = ctcp("ACTION", line.text) if action else line.text
            data = encode(command, target, body, source=src, tags=tags, colon=True)
            if len(data) - _tags_length(data) > LINE_LIMIT:
                # The hub cut the text to piece_budget(); only a mismatch between the two
                # (a bug) gets here. Never send an overlong line: cut it again.
                data = self._split(command, src, target, line.text, action, tags)
            out.append(data)
        return out[0] if len(out) == 1 else b"".join(out)

    @staticmethod
    def _split(
        command: str,
        src: str,
        target: str,
        text: str,
        action: bool,
        tags: dict[str, str] | None,
    ) -> bytes:
        head = len(f":{src} {command} {target} :".encode())
        if action:
            head += ACTION_OVERHEAD
        out = []
        for piece in split_text(head, text):
            body = ctcp("ACTION", piece) if action else piece
            out.append(encode(command, target, body, source=src, tags=tags, colon=True))
        return b"".join(out)


def _tags_length(line: bytes) -> int:
    """Bytes of the tag section of an encoded line, the space after it included."""
    if not line.startswith(b"@"):
        return 0
    return line.index(b" ") + 1


_ENCODERS: dict[int, IrcEncoder] = {}


def encoder_for(caps: int) -> IrcEncoder:
    """The shared encoder of every IRC member whose capabilities include ``caps``' bits."""
    bits = caps & ENCODING_BITS
    encoder = _ENCODERS.get(bits)
    if encoder is None:
        encoder = _ENCODERS[bits] = IrcEncoder(bits)
    return encoder
