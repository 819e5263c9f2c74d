"""Names and masks: casemapping, ``nick!user@host`` mask matching, nickname and room rules.

Pure functions, shared by the hub and both dialects (bans match line users too): the line
dialect's ``! invalid room name: ...`` and IRC's 479/403 can carry the same reason,
because the validators return a reason (``str``) or ``None`` instead of a bare bool.

Casemapping. ``ascii`` (chatd's default, what ergo and modern servers advertise) folds
``A-Z`` only; ``rfc1459`` also folds ``[]\\~`` to ``{}|^`` (the Scandinavian heritage of
RFC 1459); ``strict-rfc1459`` folds ``[]\\`` but not ``~``.

Masks. ``*`` matches any run of characters, ``?`` exactly one, ``\\`` makes the next
character literal (so ``\\*`` is a star); everything else matches itself after casefolding
both sides. :func:`normalize_ban_mask` completes a partial mask the way solanum and
InspIRCd do.
"""

from __future__ import annotations

import functools
import re
import unicodedata

CASEMAPPINGS = ("ascii", "rfc1459", "strict-rfc1459")

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_FOLD = {
    "ascii": str.maketrans(_UPPER, _LOWER),
    "rfc1459": str.maketrans(_UPPER + "[]\\~", _LOWER + "{}|^"),
    "strict-rfc1459": str.maketrans(_UPPER + "[]\\", _LOWER + "{}|"),
}


def casefold(name: str, casemapping: str = "ascii") -> str:
    """The form of ``name`` used to compare nicks and channels under ``casemapping``."""
    try:
        table = _FOLD[casemapping]
    except KeyError:
        raise ValueError(f"unknown casemapping {casemapping!r}") from None
    return name.translate(table)


# --------------------------------------------------------------------------- masks


class _Glob:
    """A compiled mask: the parts between its stars, each a fixed-length regex.

    Matching takes each middle part at its leftmost place after the previous one, which
    is exact for globs and never backtracks: a hostile ``*a*a*a*...*b`` ban costs one
    linear search per part, not the exponential time a ``.*``-regex could take.
    """

    __slots__ = ("mask", "parts", "lengths")

    def __init__(self, mask: str, casemapping: str) -> None:
        self.mask = mask
        parts: list[list[str]] = [[]]
        chars = iter(mask)
        for c in chars:
            if c == "*":
                parts.append([])
            elif c == "?":
                parts[-1].append(".")
            else:
                if c == "\\":  # escapes are read before casefolding (rfc1459 folds "\\")
                    c = next(chars, "\\")
                parts[-1].append(re.escape(casefold(c, casemapping)))
        self.parts = [re.compile("".join(p), re.DOTALL) for p in parts]
        self.lengths = [len(p) for p in parts]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Glob) and other.mask == self.mask

    def __hash__(self) -> int:
        return hash(self.mask)

    def __repr__(self) -> str:
        return f"<mask {self.mask!r}>"

    def match(self, target: str) -> bool:
        """Whether ``target``, already casefolded, matches."""
        parts = self.parts
        if len(parts) == 1:
            return parts[0].fullmatch(target) is not None
        tail = len(target) - self.lengths[-1]
        if tail < self.lengths[0] or not parts[0].match(target):
            return False
        pos = self.lengths[0]
        for part in parts[1:-1]:
            m = part.search(target, pos, tail)
            if m is None:
                return False
            pos = m.end()
        return parts[-1].fullmatch(target, tail) is not None


#: Compiled masks kept: more than every list of the rooms one JOIN line may name
#: (TARGMAX JOIN × 3 lists × MAX_LIST), so a JOIN never recompiles the masks it matches.
GLOB_CACHE = 8192


@functools.lru_cache(maxsize=GLOB_CACHE)
def _glob(mask: str, casemapping: str) -> _Glob:
    return _Glob(mask, casemapping)


Matcher = _Glob


def compile_mask(mask: str, casemapping: str = "ascii") -> Matcher:
    """The compiled form of ``mask``: keep it beside a mask that is matched often (a ban),
    so matching never waits on a compile. ``matcher.match(casefold(target))``."""
    return _glob(mask, casemapping)


def mask_match(mask: str, target: str, casemapping: str = "ascii") -> bool:
    """Whether ``target`` (``nick!user@host``, a nick, a channel) matches glob ``mask``."""
    return _glob(mask, casemapping).match(casefold(target, casemapping))


def normalize_ban_mask(mask: str) -> str:
    """Complete a ban/exception/invite mask to ``nick!user@host`` form.

    ``bob`` → ``bob!*@*``; ``bob!u`` → ``bob!u@*``; ``u@host`` and ``*@host`` →
    ``*!u@host``; a bare word with a ``.`` or ``:`` is a host (``example.org`` →
    ``*!*@example.org``, solanum's rule); an empty part becomes ``*``. A mask already
    complete is returned as given.
    """
    nick, bang, rest = mask.partition("!")
    if bang:
        user, at, host = rest.partition("@")
    elif "@" in mask:
        nick = "*"
        user, _, host = mask.partition("@")
    elif "." in mask or ":" in mask:
        nick, user, host = "*", "*", mask
    else:
        user = host = "*"
    return f"{nick or '*'}!{user or '*'}@{host or '*'}"


# --------------------------------------------------------------------------- nicknames

#: Nick length chatd advertises (NICKLEN) and the line dialect's PROTOCOL.md allows.
DEFAULT_NICKLEN = 30
#: Characters allowed in nicknames (PROTOCOL.md and RFC 2812 ``special``).
NICK_SPECIALS = "_-[]\\^{}|`"
_NICK_CHARS = frozenset(_UPPER + _LOWER + "0123456789" + NICK_SPECIALS)


def nick_error(nick: str, nicklen: int = DEFAULT_NICKLEN) -> str | None:
    """Why ``nick`` is not a valid nickname, or ``None`` if it is.

    The rule is PROTOCOL.md's: 1 to ``nicklen`` (default 30) of ASCII letters, digits and
    ``_-[]\\^{}|``` ``, not starting with a digit or ``-``. IRC answers a reason with
    432 ERR_ERRONEUSNICKNAME.
    """
    if not nick:
        return "empty nickname"
    if len(nick) > nicklen:
        return f"longer than {nicklen} characters"
    for c in nick:
        if c not in _NICK_CHARS:
            return f"{_describe(c)} is not allowed in a nickname"
    if nick[0].isdigit() or nick[0] == "-":
        return "must not start with a digit or '-'"
    return None


# --------------------------------------------------------------------------- channels

#: Longest channel name chatd allows (CHANNELLEN), the ``#`` included, in characters.
DEFAULT_CHANNELLEN = 50
DEFAULT_CHANTYPES = "#"
#: Characters IRC itself reserves in channel names (RFC 2812 ``chanstring``, plus ``:``,
#: which would make the name look like a trailing parameter).
_RESERVED = {",": "','", ":": "':'"}
#: mIRC formatting codes: bold, colour, reset, reverse, italic, strikethrough, underline.
_FORMATTING = {
    "\x02": "bold",
    "\x03": "colour",
    "\x0f": "reset",
    "\x16": "reverse",
    "\x1d": "italic",
    "\x1e": "strikethrough",
    "\x1f": "underline",
}
#: Scripts that one name may mix, after UTS #39's "highly restrictive" level: Japanese
#: writes Han with both kanas, Chinese with Bopomofo, Korean with Hangul, each with Latin.
_SCRIPT_SETS = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)
#: ``unicodedata.name`` first words that are not a script name of their own.
_SCRIPT_ALIASES = {"KATAKANA-HIRAGANA": "KATAKANA"}


def channel_error(
    name: str,
    channellen: int = DEFAULT_CHANNELLEN,
    chantypes: str = DEFAULT_CHANTYPES,
) -> str | None:
    """Why ``name`` is not an acceptable channel (room) name, or ``None`` if it is.

    Checked in this order, the first failure being the reason:

    1. it starts with one of ``chantypes`` and has something after it;
    2. at most ``channellen`` characters (code points), prefix included;
    3. no white space (any Unicode ``isspace``), ``,`` or ``:``;
    4. no IRC formatting code, control character (Cc: NUL, BEL, CR, LF, ...), format
       character (Cf: zero-width space and joiner, BOM, bidi overrides), surrogate,
       private-use or unassigned code point: each would make two names look alike or
       rewrite how a client shows the line;
    5. the name is in NFKC form (``#\\u212a`` with the Kelvin sign is not: it stands for
       ``#K``);
    6. its letters come from one script (or one of UTS #39's allowed mixes), where a
       letter's script is the first word of its Unicode name: ``#lоbby`` with a Cyrillic
       ``о`` is refused, ``#лобби`` is fine, digits and punctuation count for none.
    """
    if not name or name[0] not in chantypes:
        return f"must start with {' or '.join(repr(t) for t in chantypes)}"
    if len(name) == 1:
        return "empty name"
    if len(name) > channellen:
        return f"longer than {channellen} characters"
    for c in name:
        if c in _FORMATTING:  # before isspace(), which holds for U+001C..U+001F
            return f"{_describe(c)} (IRC {_FORMATTING[c]} code) is not allowed"
        if c.isspace():
            return f"{_describe(c)} (white space) is not allowed"
        if c in _RESERVED:
            return f"{_RESERVED[c]} is not allowed"
        category = unicodedata.category(c)
        if category == "Cc":
            return f"{_describe(c)} (control character) is not allowed"
        if category == "Cf":
            return f"{_describe(c)} (invisible format character) is not allowed"
        if category in ("Cs", "Co", "Cn"):
            return f"{_describe(c)} (unassigned or private-use) is not allowed"
    if unicodedata.normalize("NFKC", name) != name:
        odd = next((c for c in name if unicodedata.normalize("NFKC", c) != c), name[0])
        return f"not in Unicode NFKC form ({_describe(odd)})"
    scripts = sorted(_scripts(name))
    if len(scripts) > 1 and not any(set(scripts) <= allowed for allowed in _SCRIPT_SETS):
        return f"mixes scripts ({', '.join(scripts)})"
    return None


def _scripts(name: str) -> set[str]:
    """The scripts of the letters in ``name`` (modifier letters count for none)."""
    scripts = set()
    for c in name:
        if unicodedata.category(c) in ("Lu", "Ll", "Lt", "Lo"):
            word = unicodedata.name(c, "UNKNOWN").split()[0]
            scripts.add(_SCRIPT_ALIASES.get(word, word))
    return scripts


def _describe(c: str) -> str:
    """``'é'`` → ``"U+00E9 LATIN SMALL LETTER E WITH ACUTE"``; printable ASCII quoted."""
    if " " < c < "\x7f":
        return repr(c)
    return f"U+{ord(c):04X} {unicodedata.name(c, '')}".rstrip()
