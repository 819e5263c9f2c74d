"""Server settings shared by every engine (the command line fills one in)."""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("reactor", "threaded", "asyncio")


@dataclass(frozen=True)
class Config:
    """Every limit the server enforces; the defaults are PROTOCOL.md's and README's."""

    host: str = "127.0.0.1"
    port: int = 4040
    engine: str = "reactor"
    #: Room a newly registered client starts in.
    room: str = "#lobby"
    #: Longest accepted line in bytes, not counting the terminator.
    max_line: int = 4096
    #: Hard output-buffer limit per connection: past it the client is dropped at once.
    max_sendq: int = 1 << 20
    #: Connections held at once; one more gets "! server full".
    max_clients: int = 10000
    #: Soft output limit: a client above it for ``sendq_soft_seconds`` is dropped.
    #: 0 disables it.
    sendq_soft: int = 256 * 1024
    sendq_soft_seconds: float = 10.0
    #: Lines per second a client may send on average (token bucket); 0 disables.
    flood_rate: float = 10.0
    #: Lines a client may send at once before the rate applies.
    flood_burst: int = 40
    #: Seconds a connection may stay without a nickname.
    register_timeout: float = 30.0
    #: Seconds a registered client may stay silent; 0 disables.
    idle_timeout: float = 0.0
    #: threaded engine: seconds one blocking send may take before the client is dropped.
    send_timeout: float = 5.0
    #: asyncio engine: use uvloop's event loop.
    uvloop: bool = False
    #: Name shown in the greeting.
    server_name: str = "chatd"

    @property
    def soft_limit(self) -> int:
        """The soft output limit in force: 0 when off or not below the hard limit."""
        return self.sendq_soft if 0 < self.sendq_soft < self.max_sendq else 0

    @property
    def write_threshold(self) -> int:
        """Output size past which an engine must check the limits."""
        return self.soft_limit or self.max_sendq
