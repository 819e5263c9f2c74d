"""Hub events as line-dialect lines (PROTOCOL.md's ``nick: text`` and ``* notice``)."""

from __future__ import annotations

from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.router import Handle
from chatd.dialects.line.notices import AUDIENCE, notice, reason_suffix
from chatd.dialects.modestrings import mode_line


class LineEncoder:
    """Renders hub events for line-dialect members; one instance serves them all."""

    __slots__ = ()

    def encode(self, event: ev.Event, role: Role) -> bytes:
        match event:
            case ev.Chat(source=source, kind=kind):
                if event.audience:
                    return self.status_chat(event)
                if kind is ev.ChatKind.TAGMSG:
                    return b""
                if kind is ev.ChatKind.ACTION:
                    prefix = "* " + source.nick + " "
                else:
                    prefix = source.nick + ": "
                lines = event.lines
                if len(lines) == 1:
                    return (prefix + lines[0].text + "\n").encode()
                return "".join([prefix + text + "\n" for text in ev.joined(lines)]).encode()
            case ev.PrivateChat(source=source, kind=kind):
                if kind is ev.ChatKind.TAGMSG:
                    return b""
                text = "".join(line.text for line in event.lines)
                if kind is ev.ChatKind.ACTION:
                    return f"* {source.nick} (private) {text}\n".encode()
                return f"{source.nick} (private): {text}\n".encode()
            case ev.Joined(source=source, room=room):
                if role is Role.ACTOR:
                    return b""  # the session renders "you joined" itself
                return notice("joined", nick=source.nick, room=room)
            case ev.Parted(source=source, room=room, reason=reason):
                if role is Role.ACTOR:
                    return b""
                return notice("left", nick=source.nick, room=room, reason=reason_suffix(reason))
            case ev.Quit(source=source, reason=reason):
                return notice("quit", nick=source.nick, reason=reason_suffix(reason))
            case ev.Killed(source=source, reason=reason):
                return notice("you_killed", by=source.nick, reason=reason_suffix(reason))
            case ev.NickChanged(source=source, new=new):
                return notice("renamed", old=source.nick, new=new)
            case ev.Kicked(source=source, room=room, victim=victim, reason=reason):
                why = reason_suffix(reason if reason != source.nick else "")
                if role is Role.SUBJECT:
                    return notice("you_kicked", room=room, by=source.nick, reason=why)
                return notice("kicked", nick=victim.nick, room=room, by=source.nick, reason=why)
            case ev.TopicChanged(source=source, room=room, topic=topic):
                if topic:
                    return notice("topic_set", by=source.nick, room=room, topic=topic)
                return notice("topic_cleared", by=source.nick, room=room)
            case ev.ModeChanged(source=source, room=room, changes=changes):
                modes, args = mode_line(changes)
                shown = " ".join((modes, *args))
                return notice("mode_set", by=source.nick, room=room, modes=shown)
            case ev.Invited(source=source, victim=victim, room=room):
                if role is Role.SUBJECT:
                    return notice("you_invited", by=source.nick, room=room)
                return notice("invited", by=source.nick, nick=victim.nick, room=room)
            case ev.ServerShutdown():
                return notice("shutdown")
            case (
                ev.AwayChanged()
                | ev.Wallops()
                | ev.RealnameChanged()
                | ev.UserModeChanged()
                | ev.Registered()
                | ev.RoomRestored()
            ):
                return b""  # IRC-only notifications, or nothing to show
            case ev.CameOnline() | ev.WentOffline():
                return b""  # personal: see encode_for
        raise TypeError(f"no line encoding for {event!r}")

    def encode_for(self, event: ev.Event, recipient: Handle) -> bytes:
        """A nickname the member monitors (``/monitor``) signed on or off."""
        match event:
            case ev.CameOnline(source=source):
                return notice("online", nick=source.nick)
            case ev.WentOffline(nick=nick):
                return notice("offline", nick=nick)
        raise TypeError(f"no personal line encoding for {event!r}")

    @staticmethod
    def status_chat(event: ev.Chat) -> bytes:
        """``* amy to the operators of #club: text``, one line per text."""
        audience = AUDIENCE[event.audience]
        out = []
        for text in ev.joined(event.lines):
            if event.kind is ev.ChatKind.ACTION:
                text = f"* {event.source.nick} {text}"
            out.append(
                notice(
                    "status_chat",
                    nick=event.source.nick,
                    audience=audience,
                    room=event.room,
                    text=text,
                )
            )
        return b"".join(out)


ENCODER = LineEncoder()
