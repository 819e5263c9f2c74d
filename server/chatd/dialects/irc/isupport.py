"""RPL_ISUPPORT (005): tokens from a dict, split into lines clients accept.

modern.ircdocs.horse: a 005 reply carries 1 to 13 tokens, ``KEY``, ``KEY=value`` or
``-KEY``; values escape ``\\``, space and ``=`` as ``\\x5C``, ``\\x20``, ``\\x3D``. Each
line must also fit the 512-byte limit, which a long ``CHANMODES`` or ``TARGMAX`` can
make bind before 13 does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chatd.dialects.irc import wire
from chatd.dialects.irc.numerics import Numeric

#: Most tokens in one RPL_ISUPPORT line (modern.ircdocs.horse).
MAX_TOKENS_PER_LINE = 13
_PARAMETER = re.compile(r"[A-Z0-9./]{1,20}", re.IGNORECASE)
_VALUE_ESCAPES = str.maketrans({"\\": "\\x5C", " ": "\\x20", "=": "\\x3D"})


def tokens(support: Mapping[str, str | int | bool | None]) -> list[str]:
    """``{"NICKLEN": 30, "SAFELIST": None, "EXCEPTS": True, "X": False}`` →
    ``["NICKLEN=30", "SAFELIST", "EXCEPTS", "-X"]`` (dict order kept).

    ``None``, ``True`` and ``""`` give the bare key; ``False`` negates it (a server
    withdrawing a token). A key outside the ABNF is a bug of ours: ``ValueError``.
    """
    out = []
    for key, value in support.items():
        if not _PARAMETER.fullmatch(key):
            raise ValueError(f"bad ISUPPORT parameter {key!r}")
        if value is False:
            out.append("-" + key)
        elif value is None or value is True or value == "":
            out.append(key)
        else:
            out.append(f"{key}={str(value).translate(_VALUE_ESCAPES)}")
    return out


def rpl_isupport_lines(
    server: str,
    nick: str,
    support: Mapping[str, str | int | bool | None],
    limit: int = wire.DEFAULT_MAX_LINE,
) -> list[bytes]:
    """The 005 lines for ``nick``: each at most 13 tokens and ``limit`` bytes, in order.

    Raises ``ValueError`` when one token alone cannot fit a line (our configuration).
    """
    text = Numeric.RPL_ISUPPORT.text
    assert text is not None

    def line(group: list[str]) -> bytes:
        return wire.encode(Numeric.RPL_ISUPPORT.code, nick, *group, text, source=server)

    lines: list[bytes] = []
    group: list[str] = []
    for token in tokens(support):
        candidate = [*group, token]
        if len(candidate) <= MAX_TOKENS_PER_LINE and len(line(candidate)) <= limit:
            group = candidate
            continue
        if not group:
            raise ValueError(f"ISUPPORT token {token[:40]!r}... does not fit one line")
        lines.append(line(group))
        group = [token]
        if len(line(group)) > limit:
            raise ValueError(f"ISUPPORT token {token[:40]!r}... does not fit one line")
    if group:
        lines.append(line(group))
    return lines
