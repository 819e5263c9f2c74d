"""Chat commands: PRIVMSG, NOTICE, TAGMSG, and the batching of consecutive PRIVMSGs.

Consecutive plain PRIVMSGs to one channel from one read are collected in the session
(``batch_room``, ``batch``) and published as one hub event by :func:`flush_batch`, so K
lines that arrived together cost each recipient one append instead of K.

A target may be a nick, a channel, or a channel with STATUSMSG prefixes (``@#chan``: its
operators; ``+#chan``: its voiced members and operators; with several prefixes the
widest audience counts). A CTCP request other than ACTION is flagged to the hub, which
refuses it in a ``+C`` channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.names import fold
from chatd.core.text import text_problem
from chatd.dialects.irc import encoder as enc
from chatd.dialects.irc.limits import LINE_LIMIT, MAX_CLIENT_TAGS, MAX_TARGETS
from chatd.dialects.irc.numerics import Numeric as N
from chatd.dialects.irc.wire import Message, parse_ctcp

if TYPE_CHECKING:
    from chatd.dialects.irc.session import IrcSession


def client_tags(message: Message) -> tuple[tuple[str, str], ...]:
    """The client-only (``+``) tags of a message, which are relayed to tag-aware clients:
    the first :data:`~chatd.dialects.irc.limits.MAX_CLIENT_TAGS` of them."""
    if not message.tags:
        return ()
    tags = [(k, v) for k, v in message.tags.items() if k.startswith("+")]
    return tuple(tags[:MAX_CLIENT_TAGS])


def tags_size(tags: tuple[tuple[str, str], ...]) -> int:
    """Bytes the client tags add to each relayed line (about: before escaping)."""
    return sum(len(k) + len(v.encode()) + 2 for k, v in tags)


#: Bytes of relayed client tags per extra flood token a message costs its sender (a
#: room hears every byte of them, once per member).
TAG_BYTES_PER_TOKEN = 512


def privmsg(s: IrcSession, message: Message) -> int:
    return _message(s, message, ev.ChatKind.SAY)


def notice(s: IrcSession, message: Message) -> int:
    return _message(s, message, ev.ChatKind.NOTICE)


#: STATUSMSG prefix → the hub's audience; the ISUPPORT token lists the keys.
STATUSMSG = {"@": "o", "+": "v"}


def tagmsg(s: IrcSession, message: Message) -> int:
    if not message.params:
        return 0
    tags = client_tags(message)
    _deliver(s, message.params[0], "", ev.ChatKind.TAGMSG, tags, quiet=True)
    return tags_size(tags) // TAG_BYTES_PER_TOKEN


def _audience(target: str) -> tuple[str, str]:
    """``"@#chan"`` → ``("#chan", "o")``; ``"+@#chan"`` → ``("#chan", "v")``; else as is."""
    audience = ""
    while target[:1] in STATUSMSG and target[1:2] in ("#", *STATUSMSG):
        wanted = STATUSMSG[target[0]]
        if audience != "v":
            audience = wanted
        target = target[1:]
    return target, audience


def _message(s: IrcSession, message: Message, kind: ev.ChatKind) -> int:
    quiet = kind is ev.ChatKind.NOTICE  # NOTICE never gets an automatic reply
    params = message.params
    if not params or not params[0]:
        if not quiet:
            s.numeric(N.ERR_NORECIPIENT, command=message.command)
        return 0
    if len(params) < 2 or params[1] == "":
        if not quiet:
            s.numeric(N.ERR_NOTEXTTOSEND)
        return 0
    text = params[1]
    # The hub applies the one text policy too; checking here refuses this line alone
    # rather than the batch it would have joined.
    problem = text_problem(text)
    if problem:
        if not quiet:
            s.fail(message.command, "INVALID_TEXT", text=f"Invalid chat: {problem}")
        return 0
    tags = client_tags(message)
    longest = max(params[0].split(","), key=len)
    assert s.member is not None
    relayed = f":{s.member.mask} {message.command} {longest} :{text}\r\n"
    if len(relayed.encode()) > LINE_LIMIT:
        # Relayed with our prefix it would not fit one line; IRC peers would have to
        # truncate it. Refuse it whole instead (417 is meant for exactly this).
        if not quiet:
            s.numeric(N.ERR_INPUTTOOLONG)
        return 0
    ctcp = parse_ctcp(text)
    if ctcp is not None and ctcp[0] == "ACTION" and kind is ev.ChatKind.SAY:
        kind, text = ev.ChatKind.ACTION, ctcp[1]
    # Each target once (a repeated one would be the same delivery again), empty ones
    # ("PRIVMSG #a, :hi") skipped.
    targets = list({fold(t): t for t in params[0].split(",") if t}.values())[:MAX_TARGETS]
    if not targets:
        if not quiet:
            s.numeric(N.ERR_NORECIPIENT, command=message.command)
        return 0
    if (
        len(targets) == 1
        and kind is ev.ChatKind.SAY
        and not tags
        and ctcp is None
        and targets[0].startswith("#")
        and not s.caps & enc.ECHO_MESSAGE
    ):
        # Consecutive PRIVMSGs to one channel from one read go out as one event.
        room = targets[0]
        if s.batch_room is not None and s.batch_room != room:
            flush_batch(s)
        if s.batch is None:
            s.batch_room, s.batch = room, [text]
        else:
            s.batch.append(text)
        return 0
    flush_batch(s)  # what came before this message goes out before it
    request = ctcp is not None and kind is not ev.ChatKind.ACTION
    for target in targets:
        _deliver(s, target, text, kind, tags, quiet, request)
    return len(targets) * tags_size(tags) // TAG_BYTES_PER_TOKEN


def flush_batch(s: IrcSession) -> None:
    room, texts = s.batch_room, s.batch
    if room is None or texts is None:
        return
    s.batch_room, s.batch = None, None
    s.ctx.stats["messages_in"] += len(texts)
    try:
        s.ctx.hub.say(s.uid, room, texts)
    except err.HubError as exc:
        for _ in texts:
            _message_error(s, exc, room)


def _message_error(s: IrcSession, exc: err.HubError, target: str) -> None:
    if isinstance(exc, err.NoSuchRoom):
        s.numeric(N.ERR_NOSUCHCHANNEL, target)
    elif isinstance(exc, err.NotInRoom):
        s.numeric(N.ERR_CANNOTSENDTOCHAN, target, text="Cannot send to channel (+n)")
    else:
        s.hub_error(exc, "PRIVMSG")


def _deliver(
    s: IrcSession,
    target: str,
    text: str,
    kind: ev.ChatKind,
    tags: tuple[tuple[str, str], ...],
    quiet: bool,
    ctcp: bool = False,
) -> None:
    hub = s.ctx.hub
    stats = s.ctx.stats
    room, audience = _audience(target)
    try:
        if room.startswith("#"):
            stats["messages_in"] += 1
            event: ev.Chat | ev.PrivateChat = hub.say(
                s.uid, room, (text,), kind, tags, audience=audience, ctcp=ctcp
            )
        else:
            stats["private_in"] += 1
            # What the recipient is sent: the text, the client tags and the prefix.
            cost = len(text.encode()) + tags_size(tags) + 64
            capture = s.capture
            recipient = hub.find(target)
            if capture is not None and recipient is not None and recipient.uid == s.uid:
                # To oneself: the delivery is a message, not the labeled response.
                capture.passthrough = True
            try:
                event = hub.private(s.uid, target, text, kind, cost, tags)
            finally:
                if capture is not None:
                    capture.passthrough = False
            if not quiet and recipient is not None and recipient.away:
                s.numeric(N.RPL_AWAY, recipient.nick, text=recipient.away)
    except err.HubError as exc:
        if not quiet:
            _message_error(s, exc, target)
        return
    if s.caps & enc.ECHO_MESSAGE:
        s.write(s.encoder.encode(event, Role.ACTOR))
