"""What a reload (SIGHUP) changes: the settings that differ, which of them apply live.

Pure: it compares two :class:`~chatd.config.Config` and builds the one to run with. The
service applies it (:meth:`chatd.service.ChatService.reload`) and logs each change.

Live, and from when:

* server-wide limits (``max-clients``, the per-address limits and connect rate, the
  private-message rate, the room limits; rate buckets in use are retuned) and the
  allowed web origins: at once;
* the MOTD, the operators and the password: for every command from then on (``MOTD``,
  ``OPER``, and registrations not yet done: the password in force when one completes);
* per-connection limits: ``max-line`` and the flood bucket for connections accepted from
  then on; the timeouts and ``ping-interval`` for every connection at once (the service
  sets each one's deadline again); the output limits (``max-sendq``, the soft limit) at
  once;
* TLS: the files are loaded again on every reload, changed or not (a renewed certificate
  keeps its name); new handshakes use them, established sessions keep theirs;
* logging: level and format at once.

Everything else (addresses and ports, the engine, the server name, the default room, the
data dir and history limits, the cluster) needs a restart: a change to it is logged as
such, and the value in force is kept, so the running server stays self-consistent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from chatd.config import Config

#: Config fields a running server can take on.
LIVE = frozenset(
    {
        "password",
        "opers",
        "motd",
        "max_line",
        "max_sendq",
        "max_clients",
        "max_per_address",
        "connect_rate",
        "connect_burst",
        "exempt_loopback",
        "private_rate",
        "private_burst",
        "max_rooms",
        "max_rooms_per_address",
        "sendq_soft",
        "sendq_soft_seconds",
        "flood_rate",
        "flood_burst",
        "register_timeout",
        "idle_timeout",
        "ping_interval",
        "send_timeout",
        "tls_cert",
        "tls_key",
        "tls_handshake_timeout",
        "allowed_origins",
        "log_level",
        "log_format",
    }
)

#: Config fields (and the options of the same name) whose values are never shown: not in
#: a reload's log, not by ``--check-config``.
SECRET = frozenset({"password", "opers", "redis_password"})

#: A field's name as an option, where it is not the field's own with dashes.
_OPTION = {
    "listeners": "irc-port",
    "opers": "oper/oper-file",
    "motd": "motd",
    "password": "password/password-file",
    "allowed_origins": "allowed-origin",
    "redis_password": "redis-password-file",
}


@dataclass(frozen=True)
class Change:
    """One setting that differs between the running config and the one read again."""

    field: str
    old: object
    new: object
    #: Live in general, but not this time (TLS files named where no TLS listener is).
    needs_restart: bool = False

    @property
    def live(self) -> bool:
        return self.field in LIVE and not self.needs_restart

    @property
    def option(self) -> str:
        return _OPTION.get(self.field, self.field.replace("_", "-"))

    def describe(self) -> str:
        """``max-clients: 10000 -> 500``; secrets and long values are summarised."""
        if self.field in SECRET:
            return f"{self.option}: changed"
        return f"{self.option}: {_show(self.field, self.old)} -> {_show(self.field, self.new)}"


def changes(old: Config, new: Config) -> list[Change]:
    """Every field that differs, in the Config's order."""
    found = []
    for spec in dataclasses.fields(Config):
        before, after = getattr(old, spec.name), getattr(new, spec.name)
        if before != after:
            found.append(Change(spec.name, before, after))
    return found


def merged(old: Config, found: list[Change]) -> Config:
    """``old`` with the live changes of ``found`` applied, the others left as they are."""
    live: dict[str, Any] = {c.field: c.new for c in found if c.live}
    return dataclasses.replace(old, **live)


def _show(field: str, value: object) -> str:
    if field == "redis" and isinstance(value, str):
        from chatd.cluster.resp import redact_url

        return redact_url(value)
    if field == "motd" and isinstance(value, tuple):
        return f"{len(value)} lines"
    if field == "listeners" and isinstance(value, tuple):
        return ",".join(str(spec.port) for spec in value) or "none"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return "none" if value is None else str(value)
