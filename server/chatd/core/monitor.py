"""Who monitors which nicknames (IRCv3 MONITOR, the line dialect's ``/monitor``).

A monitor list is a subscription of one connection, not a fact about the chat: it is
kept here, by member id, and changes by plain calls rather than by events (a later node
keeps the lists of its own members). The hub publishes :class:`~chatd.core.events.CameOnline`
and :class:`~chatd.core.events.WentOffline` to :class:`~chatd.core.targets.ToWatchers`
when a watched nickname is claimed or released; the router asks this index who that is.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatd.core.names import fold, nick_problem

#: Nicknames one member may monitor.
MAX_WATCH = 100


class Monitor:
    """Watch lists of every member, and the reverse index the router resolves."""

    __slots__ = ("watchers", "watching")

    def __init__(self) -> None:
        #: Folded nick → ids of the members who monitor it, whether or not it is in use.
        self.watchers: dict[str, set[str]] = {}
        #: Member id → its list: folded nick → the nick as it was asked for.
        self.watching: dict[str, dict[str, str]] = {}

    def watch(self, uid: str, nicks: Iterable[str]) -> tuple[list[str], list[str]]:
        """Add nicknames to ``uid``'s list, as far as :data:`MAX_WATCH` allows.

        Returns the nicks added (or already there) and those refused because the list
        is full. A nick that is not a valid nickname (a mask) is never added: the
        dialect reports it; here it is silently left out.
        """
        added: list[str] = []
        refused: list[str] = []
        watching = self.watching.get(uid)
        for nick in nicks:
            if nick_problem(nick):
                continue
            key = fold(nick)
            if watching is not None and key in watching:
                added.append(nick)
                continue
            if watching is not None and len(watching) >= MAX_WATCH:
                refused.append(nick)
                continue
            if watching is None:
                watching = self.watching[uid] = {}
            watching[key] = nick
            self.watchers.setdefault(key, set()).add(uid)
            added.append(nick)
        return added, refused

    def unwatch(self, uid: str, nicks: Iterable[str]) -> list[str]:
        """Remove nicknames from ``uid``'s list; returns those that were on it."""
        watching = self.watching.get(uid)
        if watching is None:
            return []
        removed = []
        for nick in nicks:
            key = fold(nick)
            if watching.pop(key, None) is not None:
                self._drop(key, uid)
                removed.append(nick)
        if not watching:
            del self.watching[uid]
        return removed

    def clear(self, uid: str) -> list[str]:
        """Empty ``uid``'s list (MONITOR C, and when the connection ends)."""
        watching = self.watching.pop(uid, None)
        if watching is None:
            return []
        for key in watching:
            self._drop(key, uid)
        return list(watching.values())

    def listing(self, uid: str) -> list[str]:
        """``uid``'s list, the nicks as they were asked for."""
        return list(self.watching.get(uid, {}).values())

    def size(self, uid: str) -> int:
        return len(self.watching.get(uid, ()))

    def _drop(self, key: str, uid: str) -> None:
        watchers = self.watchers.get(key)
        if watchers is not None:
            watchers.discard(uid)
            if not watchers:
                del self.watchers[key]
