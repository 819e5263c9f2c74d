"""Tab completion for the interactive client: commands, nicks and rooms.

Pure: given the text before the cursor and what the tracker knows, it returns the
candidates as ``(replacement, start)`` pairs, where ``start`` (zero or negative) says
how many characters before the cursor the replacement overwrites, as prompt_toolkit's
``Completion(text, start_position)`` wants. The adapter in :mod:`chatd.client.tui` only
wraps these in ``Completion`` objects.

Conventions are IRC clients' (irssi, weechat): a nick completed as the first word gets
``": "`` after it, which addresses that person; anywhere else it gets a space.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatd.client.tracker import Tracker, key

#: The commands of PROTOCOL.md and of the server's /help, for completion only: the
#: client sends every command as typed, so a server with more commands still works.
COMMANDS = (
    "/help",
    "/history",
    "/join",
    "/me",
    "/msg",
    "/nick",
    "/ping",
    "/quit",
    "/rooms",
    "/stats",
    "/who",
)


def _matching(word: str, names: Iterable[str], suffix: str) -> list[tuple[str, int]]:
    prefix = key(word)
    return [(name + suffix, -len(word)) for name in names if key(name).startswith(prefix)]


def candidates(before_cursor: str, tracker: Tracker) -> list[tuple[str, int]]:
    """Completions for the word that ends at the cursor."""
    words = before_cursor.split(" ")
    word = words[-1]
    if len(words) == 1:
        if word.startswith("/") and not word.startswith("//"):
            return _matching(word, COMMANDS, " ")
        return _matching(word, tracker.others(), ": ") if word else []
    command = words[0].lower()
    if len(words) == 2 and command == "/join":
        return _matching(word, sorted(tracker.rooms.values(), key=key), " ")
    if len(words) == 2 and command == "/msg":
        names = {key(n): n for n in (*tracker.correspondents.values(), *tracker.others())}
        names.pop(key(tracker.nick or ""), None)
        return _matching(word, sorted(names.values(), key=key), " ")
    if len(words) == 2 and command == "/nick":
        return []
    return _matching(word, tracker.others(), " ") if word else []
