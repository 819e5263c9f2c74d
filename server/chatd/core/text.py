"""One text policy for everything the hub stores or publishes, whatever dialect sent it.

A text written by one member is shown to others on screens chatd does not control: a
line user's terminal, an IRC client, later a browser. Some characters act on those
screens instead of being shown: ESC starts a terminal escape sequence (``\\x1b]0;...\\x07``
retitles a terminal), BEL rings, BS and CR rewrite what is already there, U+009B is a
one-character CSI on terminals that read C1 controls, and U+2028/U+2029 (line and
paragraph separators) end a line in a client that splits on them, so the rest reads
as a new ``nick: text`` line nobody sent. So the hub applies one rule to chat, private
messages, topics, part, kick, quit and kill reasons, away messages, real names and the
arguments of room modes:

* **Forbidden:** the C0 controls except TAB, the CTCP delimiter ``\\x01`` and the IRC
  formatting codes; DEL; the C1 controls U+0080..U+009F; U+2028 and U+2029.
* **Allowed:** every other character, the formatting codes included (bold ``\\x02``,
  colour ``\\x03``, reset ``\\x0f``, reverse ``\\x16``, italic ``\\x1d``, strikethrough
  ``\\x1e``, underline ``\\x1f``): terminals ignore them and IRC clients render them.

A request whose text breaks the rule is refused (:class:`~chatd.core.errors.InvalidText`,
rendered by each dialect) before anything changes; where refusing is impossible (a QUIT
reason: the member is leaving anyway) the text is :func:`cleaned` instead, each
forbidden character replaced by U+FFFD.

The line dialect refuses these characters earlier, in its decoder, for whole lines
(commands and nicknames included) and also refuses ``\\x01`` there (a line user cannot
send a CTCP request); the IRC dialect relies on this module alone.
"""

from __future__ import annotations

import re

#: The forbidden characters (see the module docstring).
FORBIDDEN = re.compile("[\x00\x04-\x08\x0a-\x0e\x10-\x15\x17-\x1c\x7f-\x9f\u2028\u2029]")
#: What :func:`cleaned` puts in place of each forbidden character.
REPLACEMENT = "\ufffd"


def text_problem(text: str) -> str | None:
    """Why ``text`` may not be shown to others, or ``None`` when it may."""
    found = FORBIDDEN.search(text)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} (a control character) is not allowed"


def cleaned(text: str) -> str:
    """``text`` with every forbidden character replaced by U+FFFD."""
    return FORBIDDEN.sub(REPLACEMENT, text)


def split_utf8(text: str, budget: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``budget`` UTF-8 bytes, in order, losing nothing.

    A piece is the longest run of whole characters that fits; when text remains after
    it and the piece has a space in its last quarter, it ends just after that space
    instead, so most words stay whole (the space stays at the end of the earlier
    piece). ``"".join(pieces) == text``; empty text gives ``[]``. Raises ``ValueError``
    for a budget under 4 bytes, which might not hold one character.
    """
    if budget < 4:
        raise ValueError(f"a budget of {budget} bytes may not hold one character")
    data = text.encode("utf-8")
    if len(data) <= budget:
        return [text] if text else []
    pieces: list[str] = []
    start = 0
    n = len(data)
    while n - start > budget:
        cut = start + budget
        while data[cut] & 0xC0 == 0x80:  # a continuation byte: back to a boundary
            cut -= 1
        space = data.rfind(b" ", start + budget * 3 // 4, cut)
        if space >= 0:
            cut = space + 1
        pieces.append(data[start:cut].decode("utf-8"))
        start = cut
    if start < n:
        pieces.append(data[start:].decode("utf-8"))
    return pieces


# --------------------------------------------------------------------------- lengths

#: Longest topic, part/kick/quit/kill reason, away message and real name, in characters:
#: the same for every dialect (IRC advertises them as TOPICLEN, KICKLEN, AWAYLEN), so
#: that what one member sets fits the narrowest frame any other member reads it in.
TOPICLEN = 390
REASONLEN = 390
AWAYLEN = 390
REALNAMELEN = 390
#: Longest ban, exception or invite-exception mask, and room key, in characters.
MASKLEN = 150
KEYLEN = 32
