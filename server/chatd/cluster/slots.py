"""Redis Cluster's key slots: which shard holds a key or a shard channel.

A Redis Cluster splits the key space into 16384 slots, ``CRC16(key) mod 16384`` (of the
key's hash tag, the part between the first ``{`` and the next ``}``, when there is one)
and gives each master a set of slot ranges (``CLUSTER SLOTS``). Shard channels
(``SSUBSCRIBE``/``SPUBLISH``) hash the same way. chatd names every key and channel with
a hash tag (``{chatd:g}`` for the cluster's state, ``{chatd:r:<room>}`` for a room), so
each Lua script touches one slot, and a room's stream and channel sit on one shard.
"""

from __future__ import annotations

import ipaddress

SLOTS = 16384


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the one Redis Cluster uses."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc


def keyslot(key: str | bytes) -> int:
    """The slot of ``key`` (of its hash tag, if it has a non-empty one)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc16(data) % SLOTS


Address = tuple[str, int]


def parse_slots(reply: object) -> list[tuple[int, int, Address]]:
    """``CLUSTER SLOTS``' reply as ``(first slot, last slot, master address)`` ranges.

    ``ValueError`` for a reply that is not one, or a master named by a host name (a
    reactor resolves no names once it runs).
    """
    if not isinstance(reply, list) or not reply:
        raise ValueError(f"not a CLUSTER SLOTS reply: {reply!r}"[:200])
    ranges = []
    for entry in reply:
        first, last, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        ipaddress.ip_address(host)  # ValueError for a name
        ranges.append((first, last, (host, int(master[1]))))
    return ranges


def slot_map(ranges: list[tuple[int, int, Address]]) -> tuple[list[Address], list[int]]:
    """The masters, and for each slot the index of its master among them."""
    masters: list[Address] = []
    owner = [0] * SLOTS
    for first, last, address in ranges:
        if address not in masters:
            masters.append(address)
        index = masters.index(address)
        for slot in range(first, last + 1):
            owner[slot] = index
    return masters, owner
