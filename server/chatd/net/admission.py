"""Who may connect: the server-wide cap, and caps and rates per address.

One instance per server, consulted by every engine at accept and released by the session
when the connection is gone, so the rules are the same whatever the I/O model.

* ``--max-clients``: connections held at once; one more is refused ("server full").
* ``--max-per-address``: connections held at once from one IP address (IRC servers'
  ``MaxConnectionsIP``), so one address cannot take every slot. 0 disables it.
* ``--connect-rate``/``--connect-burst``: new connections per second from one address.
  A connection over the rate is accepted but not *read* until its turn comes, which
  throttles registrations (and the join notices they cost every member) without
  refusing anyone who waits; one whose turn is more than :data:`MAX_DELAY` seconds away
  is refused. 0 disables it.
* Loopback addresses are exempt from the per-address rules by default, so local tests,
  bouncers and benchmarks work; ``--no-exempt-loopback`` applies them there too.

Per-address entries are dropped once their address holds no connection and its rate
bucket has refilled, so the table is as large as the set of addresses connected now.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from chatd.core.limits import TokenBucket

#: Longest a connection over the address' rate is kept waiting before it is refused.
MAX_DELAY = 10.0

SERVER_FULL = "server full"
TOO_MANY = "too many connections from your address"
TOO_FAST = "connecting too fast from your address; try again later"


@dataclass(frozen=True, slots=True)
class Refused:
    """Turned away at accept; ``text`` is what the dialect tells the client."""

    text: str
    #: The counter: ``server_full`` or ``address_limit``.
    reason: str


class _Address:
    __slots__ = ("count", "bucket")

    def __init__(self, bucket: TokenBucket | None) -> None:
        self.count = 0
        self.bucket = bucket


@functools.lru_cache(maxsize=1024)
def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address as accepted) is a loopback address.

    Cached: it is asked for every connection and every join (per-address limits), and
    parsing an address costs tens of microseconds, a join storm's largest single item.
    """
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Admission:
    def __init__(
        self,
        max_clients: int,
        max_per_address: int = 0,
        connect_rate: float = 0.0,
        connect_burst: int = 1,
        exempt_loopback: bool = True,
    ) -> None:
        self.clients = 0
        self.addresses: dict[str, _Address] = {}
        self._admitted = 0
        self.retune(max_clients, max_per_address, connect_rate, connect_burst, exempt_loopback, 0.0)

    def retune(
        self,
        max_clients: int,
        max_per_address: int,
        connect_rate: float,
        connect_burst: int,
        exempt_loopback: bool,
        now: float,
    ) -> None:
        """Set the limits (at start, and at a reload for the addresses already known
        too: their rate buckets take the new rate, are made, or are dropped)."""
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.connect_rate = connect_rate
        self.connect_burst = max(connect_burst, 1)
        self.exempt_loopback = exempt_loopback
        for entry in self.addresses.values():
            if not connect_rate:
                entry.bucket = None
            elif entry.bucket is None:
                entry.bucket = TokenBucket(connect_rate, self.connect_burst, now)
            else:
                entry.bucket.retune(connect_rate, self.connect_burst)

    def admit(self, host: str, now: float) -> Refused | float:
        """Count a new connection from ``host``: a refusal, or the seconds before reading."""
        if self.clients >= self.max_clients:
            return Refused(SERVER_FULL, "server_full")
        delay = 0.0
        if (self.max_per_address or self.connect_rate) and not (
            self.exempt_loopback and is_loopback(host)
        ):
            self._admitted += 1
            if self._admitted % 1024 == 0:
                self._purge(now)
            entry = self.addresses.get(host)
            if entry is None:
                bucket = (
                    TokenBucket(self.connect_rate, self.connect_burst, now)
                    if self.connect_rate
                    else None
                )
                entry = self.addresses[host] = _Address(bucket)
            if self.max_per_address and entry.count >= self.max_per_address:
                return Refused(TOO_MANY, "address_limit")
            bucket = entry.bucket
            if bucket is not None:
                delay = bucket.wait(now)
                if delay > MAX_DELAY:
                    return Refused(TOO_FAST, "address_limit")
                bucket.charge(now, 1.0)
            entry.count += 1
        self.clients += 1
        return delay

    def release(self, host: str) -> None:
        """A connection admitted from ``host`` is gone."""
        self.clients -= 1
        entry = self.addresses.get(host)
        if entry is None:
            return
        entry.count -= 1
        if entry.count <= 0 and (entry.bucket is None or entry.bucket.tokens >= 0):
            # Keep an entry whose bucket is in debt: forgetting it would reset the rate.
            del self.addresses[host]

    def _purge(self, now: float) -> None:
        """Forget idle addresses whose rate bucket has paid its debt back."""
        stale = [
            host
            for host, entry in self.addresses.items()
            if entry.count <= 0 and (entry.bucket is None or entry.bucket.wait(now) == 0.0)
        ]
        for host in stale:
            del self.addresses[host]
