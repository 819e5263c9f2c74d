"""Nicknames and room names: what is valid, and when two names are the same.

One rule for every dialect, since nicknames are unique across dialects and a room is the
same room whether a line user or an IRC user names it.

* **Nicknames** are PROTOCOL.md's: 1 to 30 of ASCII letters, digits and ``_-[]\\^{}|```,
  not starting with a digit or ``-``. That is also a valid IRC nickname, so every line
  user can be shown to IRC clients as is.
* **Case** folds in ASCII only (IRC's ``CASEMAPPING=ascii``), for nicknames and rooms
  alike: ``str.lower`` would fold the Kelvin sign ``K`` (U+212A) to ``k`` and let
  ``#\\u212aitchen`` capture ``/join #kitchen``.
* **Room names** are ``#`` and 1 to 49 more characters (IRC's ``CHANNELLEN=50``). They
  may be any Unicode a person can read and type, but not what makes two different names
  look alike or rewrites a screen: white space, ``,`` and ``:`` (IRC's separators),
  control and format characters (``Cc``, ``Cf``: ZWSP, ZWJ, BOM and the bidi controls
  among them), the IRC formatting codes (which are controls), names that change under
  NFKC (the Kelvin sign, full-width letters, decomposed accents), and names whose
  letters come from more than one script (a Cyrillic ``о`` inside ``#lobby``; an
  all-Cyrillic ``#лобби`` is fine; UTS #39's Japanese, Chinese and Korean mixes too).
"""

from __future__ import annotations

import functools
import re

from chatd.core.masks import channel_error

#: PROTOCOL.md's nickname rule.
NICK_RE = re.compile(r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\-\[\]\\^{}|`]{0,29}")
NICKLEN = 30
#: "#" plus up to 49 characters.
CHANNELLEN = 50

_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

NICK_RULE = "1-30 of letters, digits and _-[]\\^{}|`, not starting with a digit or -"


def fold(name: str) -> str:
    """The key two names are compared by: ASCII letters lower-cased, nothing else."""
    return name.translate(_ASCII_FOLD)


def nick_problem(nick: str) -> str | None:
    """Why ``nick`` is not a valid nickname, or ``None`` if it is."""
    if NICK_RE.fullmatch(nick) is None:
        return f"invalid nickname: {nick} ({NICK_RULE})"
    return None


def valid_nick(nick: str) -> bool:
    return NICK_RE.fullmatch(nick) is not None


@functools.lru_cache(maxsize=4096)
def room_problem(name: str) -> str | None:
    """Why ``name`` (with its leading ``#``) is not a valid room name, or ``None``.

    The rule and its reasons are :func:`chatd.core.masks.channel_error`'s. Cached (a
    pure function of the name): every join asks, and the scripts check costs tens of
    microseconds, which a join storm pays thousands of times for one name.
    """
    return channel_error(name)


def normalize_room(name: str) -> str:
    """``lobby`` → ``#lobby``; other names unchanged (validity is :func:`room_problem`'s)."""
    return name if name.startswith("#") else "#" + name
