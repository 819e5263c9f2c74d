"""Every notice the line dialect sends, and the rules that keep clients from forging them.

Every notice the server sends is a template in :data:`NOTICES`, and that one table is
also the rule that keeps clients from forging them (issue: a nick ``server`` doing
``/me shutting down`` printed ``* server shutting down``):

* a template that starts with a fixed word (``server shutting down``, ``pong``,
  ``you are ...``) reserves that word as a nickname;
* a template that starts with a nickname (``{nick} quit{reason}``) refuses the actions
  whose rendering ``* NICK TEXT`` it would match.

So no client line can ever produce the bytes of a notice, and a new template is covered
the day it is added.
"""

from __future__ import annotations

import re

from chatd.core.names import NICK_RE, valid_nick

#: Longest line of a listing the server sends (``/who``, ``/rooms``), terminator
#: included: one 145 KB line for a room of 5,000 would be one unbounded write.
REPLY_LINE_MAX = 512


#: Every ``* `` notice the server sends, by name. ``{nick}``-like fields are nicknames,
#: ``{room}`` a room name, ``{reason}`` either empty or `` (text)``, anything else text.
NOTICES = {
    "welcome": "welcome to {server}",
    "choose": "please choose a nickname",
    "password": "this server needs a password: send /pass PASSWORD first",
    "registered": "you are {nick}, in {room} ({members} here); /help lists commands",
    "registered_no_room": "you are {nick}; /join ROOM to enter a room",
    "you_joined": "you joined {room} ({members} here)",
    "joined": "{nick} joined {room}",
    "left": "{nick} left {room}{reason}",
    "quit": "{nick} quit{reason}",
    "renamed": "{old} is now known as {new}",
    "kicked": "{nick} was kicked from {room} by {by}{reason}",
    "you_kicked": "you were kicked from {room} by {by}{reason}",
    "topic_set": "{by} set the topic of {room} to: {topic}",
    "topic_cleared": "{by} cleared the topic of {room}",
    "topic": "topic of {room}: {topic}",
    "no_topic": "{room} has no topic",
    "mode_set": "{by} set mode {modes} on {room}",
    "modes": "modes of {room}: {modes}",
    "invited": "{by} invited {nick} to {room}",
    "you_invited": "{by} invited you to {room} (/join {room})",
    "invite_sent": "invited {nick} to {room}",
    "sent": "-> {nick}: {text}",
    "who": "{room} ({members}): {nicks}",
    "rooms": "rooms ({count}): {listing}",
    "pong": "pong{token}",
    "stats": "stats: {counters}",
    "away": "you are marked away: {text}",
    "back": "you are no longer marked away",
    "bye": "bye{reason}",
    # A server operator disconnected you (IRC KILL works on line users too).
    "you_killed": "you were disconnected by {by}{reason}",
    # The server stops (SIGTERM, SIGINT): come back, to it once restarted or, on a
    # cluster, to another node (README, Operations).
    "shutdown": "server shutting down: please reconnect",
    "help": "commands:",
    "bans": "bans of {room}: {masks}",
    # A room name first: no nickname starts with "#", so no action can read as these.
    "excepts": "{room} ban exceptions: {masks}",
    "invexes": "{room} invite exceptions: {masks}",
    # IRC's STATUSMSG (PRIVMSG @#room): a line only the room's operators (or voiced
    # members and operators) were sent.
    "status_chat": "{nick} to the {audience} of {room}: {text}",
    # MONITOR (shared with IRC): a watched nickname signing on or off, and the list.
    "online": "{nick} is online",
    "offline": "{nick} is offline",
    "monitoring": "you monitor ({count}): {listing}",
    "unmonitored": "you no longer monitor: {nicks}",
    # /history [N] (a replay, sent only when asked for): a first line, one line per
    # stored line, a last line. The stored lines start with the room's name, which no
    # nickname can, so neither an action nor live chat ever reads as one of them.
    "history": "history of {room} ({lines}, times in UTC):",
    "history_say": "{room} {when} {nick}: {text}",
    "history_action": "{room} {when} * {nick} {text}",
    "history_end": "end of history of {room}",
}

#: How a Chat event's ``audience`` reads in ``status_chat``.
AUDIENCE = {"o": "operators", "v": "voiced members"}
#: ``/msg @#room`` and ``/msg +#room``: the audience of the room they name.
STATUS = {"@#": "o", "+#": "v"}
#: List-mode letter → the notice listing it.
LIST_NOTICES = {"b": "bans", "e": "excepts", "I": "invexes"}

_FIELD = re.compile(r"\{(\w+)\}")
_NICK_FIELDS = {"nick", "old", "new", "by"}
_FIELD_PATTERNS = {
    "room": r"#\S+",
    "audience": "(?:" + "|".join(AUDIENCE.values()) + ")",
    "reason": r"(?: \(.*\))?",
    "token": r"(?: .*)?",
    "members": r"\d+",
    "count": r"\d+",
}


def _field_pattern(name: str) -> str:
    if name in _NICK_FIELDS:
        return NICK_RE.pattern
    return _FIELD_PATTERNS.get(name, r".*")


def _template_regex(template: str) -> str:
    out = []
    pos = 0
    for match in _FIELD.finditer(template):
        out.append(re.escape(template[pos : match.start()]))
        out.append(_field_pattern(match.group(1)))
        pos = match.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


def _forgery_rules() -> tuple[frozenset[str], re.Pattern[str]]:
    """Reserved nicks, and one regex matching every action text that reads as a notice."""
    reserved: set[str] = set()
    actions: list[str] = []
    for template in NOTICES.values():
        first = _FIELD.match(template)
        if first and first.group(1) in _NICK_FIELDS:
            # "{nick} quit{reason}": the action "quit (connection reset)" by anyone.
            actions.append(_template_regex(template[first.end() :].removeprefix(" ")))
        else:
            word = re.split(r"[ :({]", template, maxsplit=1)[0]
            if valid_nick(word):
                reserved.add(word)
    return frozenset(reserved), re.compile("|".join(f"(?:{a})" for a in actions))


RESERVED_NICKS, _FORGED_ACTION = _forgery_rules()


def action_forgeable(nick: str, text: str) -> bool:
    """Would ``* NICK TEXT`` be byte-identical to one of :data:`NOTICES`?"""
    return _FORGED_ACTION.fullmatch(text) is not None


def notice(name: str, **fields: object) -> bytes:
    return ("* " + NOTICES[name].format(**fields) + "\n").encode()


def error(text: str) -> bytes:
    return ("! " + text + "\n").encode()


def reason_suffix(reason: str) -> str:
    return f" ({reason})" if reason else ""


def listing(prefix: str, words: list[str], limit: int = REPLY_LINE_MAX) -> list[str]:
    """``prefix`` + space-separated ``words`` in lines of at most ``limit`` bytes (with ``\\n``).

    A reply of any size becomes several lines, each a complete notice on its own.
    """
    room = limit - len(prefix.encode()) - 1
    lines: list[str] = []
    current: list[str] = []
    size = 0
    for word in words:
        cost = len(word.encode()) + (1 if current else 0)
        if current and size + cost > room:
            lines.append(prefix + " ".join(current))
            current, size = [], 0
            cost = len(word.encode())
        current.append(word)
        size += cost
    lines.append(prefix + " ".join(current))
    return lines


HELP_LINES = (
    "commands:",
    "/nick NEW         change your nickname",
    "/join ROOM [KEY]  leave this room and enter ROOM (created on demand)",
    "/who              list the members of your room",
    "/history [N]      your room's last N lines, with times (default 20, max 100)",
    "/rooms            list the rooms and how many are in each",
    "/msg NICK TEXT    send a private message (@#ROOM: to the room's operators)",
    "/me TEXT          act: shown to the room as '* NICK TEXT'",
    "/topic [TEXT]     show or set the room's topic",
    "/mode [CHANGES]   show or change room modes: +i +k KEY +l N +m +n +t +s +C",
    "                  +o/+v NICK, +b/+e/+I MASK (ban, ban exception, invite exception)",
    "/invite NICK      invite NICK to your room",
    "/kick NICK [WHY]  remove NICK from your room (room operators)",
    "/away [TEXT]      mark yourself away (no text: back)",
    "/monitor [NICK..] be told when NICK comes online or goes (no NICK: your list)",
    "/unmonitor NICK.. stop that (* for every nick)",
    "/ping [TOKEN]     the server answers '* pong'",
    "/stats            server counters",
    "/quit [REASON]    leave",
    "/help             this list",
    "//TEXT            sends chat that starts with /",
)
