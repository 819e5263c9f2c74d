"""What the IRC dialect enforces and advertises: lengths, target counts, mode letters.

One leaf module, imported by every command module, so that a number that appears in
005 (``TOPICLEN=390``) and the code that cuts a topic to it are the same constant.
"""

from __future__ import annotations

from chatd import __version__
from chatd.core import modes as hub
from chatd.core import text

VERSION = f"chatd-{__version__}"
NETWORK = "chatd"
#: Longest username kept from USER (after the ``~`` chatd adds, it is ``USERLEN + 1``).
USERLEN = 10
#: The hub's lengths (:mod:`chatd.core.text`), the same for every dialect.
TOPICLEN = text.TOPICLEN
AWAYLEN = text.AWAYLEN
KICKLEN = text.REASONLEN
#: Longest realname (USER, SETNAME): what a 311 line still fits with a long nick and host.
NAMELEN = text.REALNAMELEN
#: Targets one PRIVMSG/NOTICE/KICK/NAMES may name (TARGMAX).
MAX_TARGETS = 4
#: Rooms one JOIN or PART may name (TARGMAX): each JOIN target is checked against the
#: room's bans, so one line's matching work is bounded by this times the list sizes.
MAX_JOIN_TARGETS = 10
#: Client-only tags (``+typing``...) relayed from one message; the rest are dropped, so
#: that one line's encoding work does not grow with what the client packs into 4 KB.
MAX_CLIENT_TAGS = 16
#: Most lines one CHATHISTORY returns (005 ``CHATHISTORY=``; a larger limit gets this many).
CHATHISTORY_MAX = 100
#: 005 ``MSGREFTYPES``: the CHATHISTORY references understood, preferred first.
MSGREFTYPES = "timestamp,msgid"
#: RFC 1459's line limit, CR LF included, tags excluded.
LINE_LIMIT = 512
#: Texts of the PING-based keepalive.
PING_TIMEOUT_TEXT = "Ping timeout"

#: Mode letters, from the hub's tables so that a mode the hub learns is advertised.
USER_MODES = "".join(sorted(hub.USER_MODES))
CHAN_MODES = "".join(
    sorted(hub.LIST_MODES + hub.KEY_MODES + hub.LIMIT_MODES + hub.FLAG_MODES + hub.PREFIX_MODES)
)
#: 004's last field: the channel modes that take a parameter (when set).
CHAN_MODES_WITH_ARG = "".join(
    sorted(hub.LIST_MODES + hub.KEY_MODES + hub.LIMIT_MODES + hub.PREFIX_MODES)
)
#: 005 CHANMODES: list modes, always-parameter, set-only parameter, flags.
CHANMODES_TOKEN = ",".join((hub.LIST_MODES, hub.KEY_MODES, hub.LIMIT_MODES, hub.FLAG_MODES))
