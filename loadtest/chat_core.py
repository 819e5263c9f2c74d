"""Sans-IO core of the chat load test: identities, schedules, the start gate and the report.

Nothing here touches a socket, a clock or Locust. ``chat_client.py`` does the I/O and feeds
bytes and timestamps in; this module and the load library ``chatload`` (the stamp, line
splitting, sequence checks and the dialects, shared with bench's lean driver) decide what
they mean. Keeping the two apart lets ``tests/test_loadtest.py`` exercise the
measurement logic without importing Locust, which monkey-patches ``socket``, ``threading``
and ``selectors`` the moment it is imported.

Theory of operation
-------------------
* Every user gets a per-process ``slot`` (0, 1, 2, ... in spawn order) and a *global index*
  ``g = slot * workers + worker_index`` that is unique across all Locust worker processes.
  Locust deals users to workers round-robin, so the indices of a run are (almost) contiguous.
  The room is ``g // room_size``. Roles are picked from the slot: a default user sends if
  ``spread(slot, send_share)`` and times its messages if ``spread_early(slot, timing_sample)``.
  Picking by slot gives every worker the same share of senders and timing receivers (picking
  by ``g`` would put every tenth index, all odd, on one of two workers), and rooms still get
  the same count to within one per worker. ``spread`` picks the end of each period and
  ``spread_early`` its start, so senders and timing receivers are mostly different users.
  No coordination between processes is needed.
* A chat message's text is ``chatload``'s stamp, ``LT <sender> <seq> <stamp_us> <padding>``,
  in either dialect (plain ASCII, so it survives any IRC daemon). ``stamp_us`` is the
  wall-clock time (microseconds since the epoch) at which the sender's schedule *meant* to
  send it -- or the real write time if the sender's timer released it a little early, but
  never a later write time. Latency is measured from that instant, so a stalled server (or a
  stalled load generator) shows up as latency rather than as a quietly slower sender. This
  is the coordinated-omission correction popularised by wrk2.
* Per sender, each timing receiver expects ``seq`` to grow by exactly one. The first message
  seen from a sender only sets the baseline (the receiver may have joined mid-stream); after
  that a jump is ``lost`` and a step back (or a repeat) is ``reordered``.
* Measurement starts at a *gate*. By default it opens once every user has finished its first
  handshake (the rooms are full) plus a warm-up delay: senders wait at the gate, receivers
  ignore what arrives before it, and the report's window, rates and counts start there. The
  spawn and join storm is thus not mixed into steady-state latency. ``Fill`` below sums the
  join progress of all processes; ``chat.py`` does the waiting and the messaging.
* ``--host`` may list several hosts (the nodes of a cluster), comma-separated. User ``g``
  connects to entry ``g % len(hosts)`` (``host_index``), so every process deals its users
  out the same way and a run is reproducible. With several hosts the roles are picked from
  the user's *host slot* instead of its slot: its position (0, 1, 2, ...) among this
  process's users of the same host. Every host then gets its exact share of senders and
  timing receivers (picking by slot would put every sender at share 0.1 -- slots 9, 19,
  ... -- on one host of two, and every timing receiver on the other). With one host the
  host slot is the slot: nothing changes.
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from hdrh.histogram import HdrHistogram

from chatload import LineKind, Message

#: Version tag of the JSON written at test stop. Bump it only on incompatible changes; adding
#: keys is compatible. ``bench/`` checks it.
SCHEMA = "chatd-loadtest/1"

#: Histogram range: 1 us to 1 hour at 3 significant digits (0.1% resolution). An hour covers
#: any latency a 60 s run with coordinated-omission correction can produce; a value outside
#: the range is clamped and counted in ``out_of_range`` rather than dropped.
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 3_600_000_000
HDR_DIGITS = 3

#: Percentiles reported in the JSON, as (key suffix, percentile).
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
    ("p99_99", 99.99),
)

#: Longest nick the load test generates: RFC 2812's NICKLEN, and ngircd's default. A server
#: announces its own limit only in ISUPPORT (005), which comes after registration, too late
#: for the first NICK; nine characters fit every server.
NICK_MAX = 9
#: Length of the random per-process tag in a nick (base 36).
NICK_TAG_LEN = 3

_NICK_CHARS = r"A-Za-z0-9_\-\[\]\\^{}|`"
_NICK_RE = re.compile(rf"^[A-Za-z_\[\]\\^{{}}|`][{_NICK_CHARS}]{{0,29}}$")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# --------------------------------------------------------------------------- options


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``30``, ``30s``, ``1.5s``, ``250ms``, ``2m``, ``1h``, ``1m30s`` (or a number).

    Locust's own ``--run-time`` takes ``30s``; the load test's time options take the same
    (plus fractions and ``ms``), so a bare number still means seconds. Negative or
    malformed values raise ``ValueError``.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"negative duration {text!r}")
        return float(text)
    rest = str(text).strip().lower().replace(" ", "")
    if not rest:
        raise ValueError("empty duration")
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _DURATION_RE.match(rest, pos)
        number, unit = match.groups() if match else (None, None)
        if match is None or (unit is None and (pos or match.end() != len(rest))):
            raise ValueError(f"not a duration: {text!r} (use e.g. 30, 30s, 250ms, 2m, 1m30s)")
        total += float(number) * _DURATION_UNITS[unit or "s"]
        pos = match.end()
    return total


# --------------------------------------------------------------------------- identities


#: ``--host`` URL schemes of the WebSocket transport (``--chat-transport ws``), and whether
#: each means TLS (which ``--chat-tls`` must then say too).
WS_SCHEMES: dict[str, bool] = {"ws": False, "wss": True}


def parse_host(
    host: str | None,
    default_port: int = 4040,
    what: str = "--host",
    *,
    transport: str = "tcp",
    tls: bool = False,
) -> tuple[str, int]:
    """Split one ``--host`` entry into (address, port); ``ValueError`` says what is wrong.

    Locust was built for URLs, so accept ``tcp://h:p`` (any scheme) as well as the plain
    ``h:p`` the README uses, ``[v6]:p`` for IPv6, and a bare host meaning ``default_port``
    (the dialect's: 4040 for chatd's line protocol, 6667 for IRC). Anything else -- a path,
    a port that is not a number from 1 to 65535, spaces, a comma -- is refused here, once,
    rather than by every user's connect. ``what`` names the value in the error (an entry
    of a list says which one: ``parse_hosts``).

    With ``transport="ws"`` (``--chat-transport ws``) the entry is an HTTP listener: the
    scheme may only be ``ws://`` or ``wss://`` and must agree with ``tls``
    (``--chat-tls``), and a path may follow (``ws://h:p/irc``; ``ws_path`` returns it).
    Over TCP a ``ws://`` or ``wss://`` entry is refused: it names a WebSocket endpoint.
    """
    if not host or not host.strip():
        raise ValueError("no --host given; use e.g. --host 127.0.0.1:4040")
    rest = host.strip()
    scheme = ""
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        scheme = scheme.lower()
    if transport == "ws":
        if scheme and scheme not in WS_SCHEMES:
            raise ValueError(
                f"malformed {what} {host!r}: with --chat-transport ws use HOST:PORT, "
                f"ws://HOST:PORT or wss://HOST:PORT"
            )
        if scheme and WS_SCHEMES[scheme] != tls:
            raise ValueError(
                f"{what} {host!r}: ws:// is not TLS; use wss:// with --chat-tls"
                if tls
                else f"{what} {host!r}: wss:// needs --chat-tls"
            )
        rest, _, path = rest.partition("/")
        if any(c.isspace() for c in path):
            raise ValueError(f"malformed {what} {host!r}: a path without spaces, e.g. /irc")
    elif scheme in WS_SCHEMES:
        raise ValueError(f"{what} {host!r} is a WebSocket URL: add --chat-transport ws")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        addr, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ValueError(f"malformed {what} {host!r}: expected [IPV6]:PORT")
        port_text = tail[1:] if tail else None
    elif rest.count(":") == 1:
        addr, port_text = rest.split(":")
        addr = addr or "127.0.0.1"
    elif ":" in rest:
        raise ValueError(f"malformed {what} {host!r}: put an IPv6 address in brackets, [::1]:PORT")
    else:
        addr, port_text = rest, None
    if not addr or any(c in addr for c in " /\t?#@,"):
        raise ValueError(f"malformed {what} {host!r}: expected HOST:PORT, e.g. 127.0.0.1:4040")
    if port_text is None:
        return addr, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"malformed {what} {host!r}: the port must be a number from 1 to 65535")
    return addr, int(port_text)


def ws_path(entry: str, default: str) -> str:
    """The path of a WebSocket ``--host`` entry (``ws://h:p/irc`` gives ``/irc``), or
    ``default`` (the dialect's endpoint) when it names none. ``parse_host`` has checked
    the rest of the entry."""
    rest = entry.strip()
    if "://" in rest:
        rest = rest.split("://", 1)[1]
    _, slash, path = rest.partition("/")
    return "/" + path if slash and path else default


def host_label(address: str, port: int) -> str:
    """``HOST:PORT`` (``[v6]:PORT``): how reports and messages name a target."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class Target:
    """One entry of ``--host``: as given, and where it points."""

    #: The entry as given (stripped), e.g. ``tcp://127.0.0.1:4040``; what the client parses.
    entry: str
    address: str
    port: int

    @property
    def label(self) -> str:
        """``HOST:PORT``, the entry's name in the report (see ``host_label``)."""
        return host_label(self.address, self.port)


def parse_hosts(
    hosts: str | None, default_port: int = 4040, *, transport: str = "tcp", tls: bool = False
) -> tuple[Target, ...]:
    """The targets of a ``--host`` list: entries separated by commas, each one ``parse_host``
    accepts. ``ValueError`` names the first bad entry (its position too, in a list of more
    than one): an empty entry (a stray comma), a malformed one, or one naming the same
    address and port as an earlier entry (the report counts users per host, and a host
    listed twice would be two hosts in the load but one in the counts). One entry gives
    exactly ``parse_host``'s messages.
    """
    if not hosts or not hosts.strip():
        raise ValueError("no --host given; use e.g. --host 127.0.0.1:4040")
    entries = [entry.strip() for entry in hosts.split(",")]
    targets: list[Target] = []
    seen: dict[tuple[str, int], int] = {}
    for number, entry in enumerate(entries, 1):
        what = f"--host entry {number} of {len(entries)}" if len(entries) > 1 else "--host"
        if not entry:
            raise ValueError(
                f"{what} is empty in {hosts.strip()!r}: list HOST:PORT entries separated by "
                f"commas, e.g. --host 127.0.0.1:4040,127.0.0.1:4041"
            )
        address, port = parse_host(entry, default_port, what, transport=transport, tls=tls)
        if (address, port) in seen:
            raise ValueError(
                f"{what} {entry!r} repeats entry {seen[address, port]}: list each host once"
            )
        seen[address, port] = number
        targets.append(Target(entry, address, port))
    return tuple(targets)


def host_index(index: int, hosts: int) -> int:
    """The ``--host`` entry of the user with global index ``index``: round-robin, ``index %
    hosts``. The global index interleaves the workers, so every worker process deals its
    users out the same way and a run (and a rerun) puts the same users on the same hosts."""
    return index % max(hosts, 1)


class HostSlots:
    """One process's dealing of users to targets: which target, and the user's host slot.

    The host slot is the user's position among this process's users of the same target
    (0, 1, 2, ...); roles are picked from it (see the module docstring), so every target
    gets its exact share of senders and timing receivers whatever the number of hosts. With
    one target it is the user's slot.
    """

    __slots__ = ("users",)

    def __init__(self) -> None:
        #: Users dealt to each target so far, by ``Target.label`` (the next host slot).
        self.users: dict[str, int] = {}

    def assign(self, targets: Sequence[Target], index: int) -> tuple[Target, int]:
        """(target, host slot) of the next user of this process, with global ``index``."""
        target = targets[host_index(index, len(targets))]
        slot = self.users.get(target.label, 0)
        self.users[target.label] = slot + 1
        return target, slot


def to_fraction(share: float) -> Fraction:
    """A share in [0, 1] as an exact fraction, so ``spread`` never suffers rounding drift."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within [0, 1], got {share}")
    return Fraction(share).limit_denominator(1_000_000)


def spread(index: int, share: Fraction) -> bool:
    """True for an evenly spaced ``share`` of the indices 0, 1, 2, ...

    Bresenham-style: among any N consecutive indices exactly floor or ceil of N * share are
    chosen, so 1000 users at share 0.1 have exactly 100 senders and every room of 100 has
    exactly 10, however Locust deals the users out.
    """
    num, den = share.numerator, share.denominator
    return (index + 1) * num // den > index * num // den


def spread_early(index: int, share: Fraction) -> bool:
    """Like ``spread`` but picks the first index of each period instead of the last.

    Index ``i`` is picked when a multiple of ``1/share`` falls in ``[i, i + 1)`` (``spread``:
    in ``(i, i + 1]``), so at share 0.1 ``spread`` picks 9, 19, ... and this 0, 10, ...; the
    same exact-count guarantee holds.
    """
    num, den = share.numerator, share.denominator
    if num == 0:
        return False
    first = -(-index * num // den)  # ceil(index * share)
    return first * den < (index + 1) * num


def global_index(slot: int, worker_index: int, workers: int) -> int:
    """Interleave per-process user slots into one sequence unique across all workers."""
    workers = max(workers, worker_index + 1, 1)
    return slot * workers + max(worker_index, 0)


def room_for(index: int, room_size: int, prefix: str = "load") -> str:
    """The room of the user with global index ``index``: consecutive blocks of ``room_size``."""
    return f"#{prefix}{index // max(room_size, 1)}"


def base36(number: int) -> str:
    """``number`` (>= 0) in lower-case base 36: the densest alphabet every nick syntax allows."""
    if number < 0:
        raise ValueError("negative number")
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_B36[digit])
        if number == 0:
            return "".join(reversed(digits))


def make_nick(tag: str, worker_index: int, serial: int, workers: int = 1) -> str:
    """``l<tag><id>``: a nick unique per process, worker and run, at most ``NICK_MAX`` long.

    ``tag`` is ``NICK_TAG_LEN`` random base-36 characters per process, so two runs against
    one server, or connections of an earlier run the server has not reaped yet, do not
    collide (and if they do, the server says so and the client takes the next serial).
    ``id`` interleaves the per-process ``serial`` over the workers like ``global_index``,
    in base 36: nine characters leave room for 60 million sessions per run. Lower-case
    letters and digits only, starting with a letter, so the nick is valid on chatd and on
    every IRC server and compares equal under any IRC case mapping.
    """
    if len(tag) != NICK_TAG_LEN or any(c not in _B36 for c in tag):
        raise ValueError(f"nick tag must be {NICK_TAG_LEN} base-36 characters, got {tag!r}")
    nick = f"l{tag}{base36(global_index(serial, worker_index, workers))}"
    if len(nick) > NICK_MAX:
        raise ValueError(f"nick serials exhausted: {nick!r} is longer than {NICK_MAX}")
    if not _NICK_RE.match(nick):
        raise ValueError(f"generated an invalid nickname {nick!r}")
    return nick


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True, slots=True)
class Incoming:
    """One line as ``ChatClient.receive`` hands it to a scenario."""

    kind: LineKind
    #: The parsed load-test message, for ``LineKind.MESSAGE``.
    message: Message | None
    #: The raw line without its terminator.
    line: bytes
    #: Wall time of the read that completed the line (epoch seconds).
    arrived: float


# --------------------------------------------------------------------------- checks


class Arrivals(enum.Enum):
    """How a sender spaces its messages."""

    #: Every 1/rate seconds after a random phase: steady load, no lockstep between senders.
    PERIODIC = "periodic"
    #: Exponential gaps with mean 1/rate: a Poisson process, bursty like real chat.
    POISSON = "poisson"


class SendSchedule:
    """The intended send times of one sender: ``t0 + k / rate`` or a Poisson process.

    The schedule is fixed in advance and never waits for the sender, so a sender that falls
    behind sends the overdue messages back to back with their original intended times.
    """

    __slots__ = ("_mode", "_next", "_rate", "_rng", "_t0", "index")

    def __init__(self, rate: float, mode: Arrivals, start: float, rng: random.Random) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._mode = mode
        self._rng = rng
        #: Number of messages consumed from the schedule so far (the next seq).
        self.index = 0
        if mode is Arrivals.PERIODIC:
            self._t0 = start + rng.random() / rate
            self._next = self._t0
        else:
            self._t0 = start
            self._next = start + rng.expovariate(rate)

    def peek(self) -> float:
        """Intended time of the next message."""
        return self._next

    def advance(self) -> None:
        """Consume the next message."""
        self.index += 1
        if self._mode is Arrivals.PERIODIC:
            self._next = self._t0 + self.index / self._rate
        else:
            self._next += self._rng.expovariate(self._rate)

    def due_by(self, now: float) -> int:
        """How many messages the schedule meant to have sent by ``now`` (consumed or not)."""
        if self._mode is Arrivals.PERIODIC:
            if now < self._t0:
                return self.index
            return max(self.index, math.floor((now - self._t0) * self._rate) + 1)
        count, t = self.index, self._next
        while t <= now:
            count += 1
            t += self._rng.expovariate(self._rate)
        return count


# --------------------------------------------------------------------------- start gate


@dataclass
class Fill:
    """How far the join storm has got, summed over processes: may measuring start?

    ``expected`` is the number of users the runner spawned in total, known once Locust's
    ``spawning_complete`` fired (None before). Every process reports how many of *its*
    users have *settled* (finished their first handshake, joined or failed) and how many
    joined; the newest report per process replaces the previous one, so repeated reports
    never double-count. The rooms are full when every expected user has settled. A failed
    handshake counts as settled, or one refused user would hold the gate shut forever; the
    failure itself is reported and spoils the run on its own.
    """

    expected: int | None = None
    settled: dict[str, int] = field(default_factory=dict)
    joined: dict[str, int] = field(default_factory=dict)

    def update(self, source: str, settled: int, joined: int) -> None:
        """Record ``source``'s newest cumulative counts."""
        self.settled[source] = settled
        self.joined[source] = joined

    @property
    def total_settled(self) -> int:
        return sum(self.settled.values())

    @property
    def total_joined(self) -> int:
        return sum(self.joined.values())

    @property
    def full(self) -> bool:
        """All users spawned and every one of them past its first handshake."""
        return self.expected is not None and self.total_settled >= self.expected


# --------------------------------------------------------------------------- measurements


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds with the schema's fixed range."""
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_DIGITS)


def decode_histogram(encoded: str) -> HdrHistogram:
    """Decode the ``latency_us.hdr`` string of a report (or a worker snapshot)."""
    hist = new_histogram()
    if encoded:
        hist.decode_and_add(encoded)
    return hist


@dataclass
class Delivery:
    """End-of-test delivery accounting of one process, taken after the drain.

    ``seen[s]`` timing receivers (sessions alive at the end) had heard from sender ``s``,
    and ``received[s]`` sums their ``last seq + 1`` for it. ``sent[s]`` is how many ``s``
    sent, known only to the process that ran ``s``. Merged across processes,
    ``seen[s] * sent[s] - received[s]`` counts the messages of ``s`` that some receiver was
    still waiting for when the test stopped: the tail that no later message can reveal as
    a gap (gaps before the newest message are already reported as ``lost``).
    """

    seen: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    drain_s: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "seen": dict(self.seen),
            "received": dict(self.received),
            "sent": dict(self.sent),
            "drain_s": self.drain_s,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Delivery:
        def ints(key: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in dict(data.get(key, {})).items()}

        return cls(ints("seen"), ints("received"), ints("sent"), float(data.get("drain_s", 0)))


def undelivered(parts: Iterable[Delivery]) -> tuple[int, int]:
    """Merge processes' delivery accounting: (messages still missing, receiver-sender pairs).

    Senders nobody in the run sent (another client's nick) are ignored. Per sender the
    shortfall cannot be negative; a negative one would mean stale data and is clamped.
    """
    seen: dict[str, int] = {}
    received: dict[str, int] = {}
    sent: dict[str, int] = {}
    for part in parts:
        for src, dst in ((part.seen, seen), (part.received, received), (part.sent, sent)):
            for sender, n in src.items():
                dst[sender] = dst.get(sender, 0) + n
    missing = pairs = 0
    for sender, n_seen in seen.items():
        if sender in sent:
            pairs += n_seen
            missing += max(n_seen * sent[sender] - received.get(sender, 0), 0)
    return missing, pairs


#: Counters every process keeps. Summed across processes; all are totals since test start.
COUNTERS: tuple[str, ...] = (
    "connects",  # sessions registered (also the number of successful ``connect`` events)
    "joins",  # sessions that confirmed their /join
    "sessions",  # connection attempts
    "sent",  # chat messages written to the socket
    "intended",  # messages the schedules meant to send by the time their sender stopped
    "late_sends",  # messages written more than LATE_SEND_S after their intended time
    "timed",  # messages parsed and timed by timing receivers
    "counted_lines",  # lines counted, unparsed, by counting receivers
    "notices",  # ``* `` lines seen by timing receivers
    "other_lines",  # non-load-test chat lines seen by timing receivers
    "lost_messages",  # messages missing from sequence gaps (sum over gaps)
    "out_of_range",  # latencies clamped into the histogram range
    "timing_receivers",  # sessions whose receiver parsed and timed
    "counting_receivers",  # sessions whose receiver only counted lines
    "senders",  # sessions that sent
    "early_messages",  # messages a timing receiver got before its process opened the gate
)

#: Counters of traffic in the measured window. Zeroed when the gate opens, so that lines
#: read during the join storm (join notices, mostly) do not count as window traffic. The
#: others (connects, joins, receivers, ...) describe the whole run and are never zeroed.
WINDOW_COUNTERS: tuple[str, ...] = (
    "sent",
    "intended",
    "late_sends",
    "timed",
    "counted_lines",
    "notices",
    "other_lines",
    "lost_messages",
    "out_of_range",
)

#: A send this late (seconds after its intended time) counts as ``late_sends``: a sign the
#: load generator, not the server, is falling behind.
LATE_SEND_S = 0.010


@dataclass
class Snapshot:
    """One process's measurements: what a worker reports to the master.

    Everything is cumulative, so the master keeps only the newest snapshot per worker and
    a late or repeated report can never double-count. Traffic, latency, CPU and saturation
    cover the measured window (from the process's gate to its stop); the ``warmup_*``
    fields cover test start to the gate.
    """

    hist: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    cpu_peak_percent: float = 0.0
    wall_seconds: float = 0.0
    saturated: list[str] = field(default_factory=list)
    max_late_send_ms: float = 0.0
    senders_peak: int = 0
    role: str = "local"
    pid: int = 0
    #: End-of-test accounting, present once the process has drained.
    delivery: Delivery | None = None
    #: Wall time this process opened its gate (started measuring); None: not yet.
    measure_started: float | None = None
    #: CPU seconds and saturation signs from test start to the gate (the join storm).
    warmup_cpu_seconds: float = 0.0
    warmup_saturated: list[str] = field(default_factory=list)
    #: Per target (``Target.label``): users this process assigned to it, and sessions that
    #: registered there (the whole run, like ``connects``).
    host_users: dict[str, int] = field(default_factory=dict)
    host_connects: dict[str, int] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """Plain dict for Locust's msgpack transport."""
        return {
            "hist": self.hist,
            "counters": dict(self.counters),
            "failures": dict(self.failures),
            "cpu_seconds": self.cpu_seconds,
            "cpu_peak_percent": self.cpu_peak_percent,
            "wall_seconds": self.wall_seconds,
            "saturated": list(self.saturated),
            "max_late_send_ms": self.max_late_send_ms,
            "senders_peak": self.senders_peak,
            "role": self.role,
            "pid": self.pid,
            "delivery": self.delivery.to_wire() if self.delivery else None,
            "measure_started": self.measure_started,
            "warmup_cpu_seconds": self.warmup_cpu_seconds,
            "warmup_saturated": list(self.warmup_saturated),
            "host_users": dict(self.host_users),
            "host_connects": dict(self.host_connects),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Snapshot:
        """Inverse of ``to_wire``; unknown keys are ignored for forward compatibility."""
        return cls(
            hist=str(data.get("hist", "")),
            counters={str(k): int(v) for k, v in dict(data.get("counters", {})).items()},
            failures={str(k): int(v) for k, v in dict(data.get("failures", {})).items()},
            cpu_seconds=float(data.get("cpu_seconds", 0.0)),
            cpu_peak_percent=float(data.get("cpu_peak_percent", 0.0)),
            wall_seconds=float(data.get("wall_seconds", 0.0)),
            saturated=[str(s) for s in data.get("saturated", [])],
            max_late_send_ms=float(data.get("max_late_send_ms", 0.0)),
            senders_peak=int(data.get("senders_peak", 0)),
            role=str(data.get("role", "worker")),
            pid=int(data.get("pid", 0)),
            delivery=Delivery.from_wire(data["delivery"]) if data.get("delivery") else None,
            measure_started=(
                float(data["measure_started"]) if data.get("measure_started") is not None else None
            ),
            warmup_cpu_seconds=float(data.get("warmup_cpu_seconds", 0.0)),
            warmup_saturated=[str(s) for s in data.get("warmup_saturated", [])],
            host_users={str(k): int(v) for k, v in dict(data.get("host_users", {})).items()},
            host_connects={str(k): int(v) for k, v in dict(data.get("host_connects", {})).items()},
        )


def _rnd(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def latency_summary(hist: HdrHistogram) -> dict[str, Any]:
    """The ``latency_us`` object: count, min/max/mean/stddev, percentiles and the HDR blob."""
    count = hist.get_total_count()
    out: dict[str, Any] = {"count": count}
    if count:
        out.update(
            min=hist.get_min_value(),
            max=hist.get_max_value(),
            mean=_rnd(hist.get_mean_value()),
            stddev=_rnd(hist.get_stddev()),
        )
        for key, pct in PERCENTILES:
            out[key] = hist.get_value_at_percentile(pct)
    else:
        out.update(min=None, max=None, mean=None, stddev=None)
        out.update({key: None for key, _ in PERCENTILES})
    out["hdr"] = hist.encode().decode("ascii")
    out["hdr_lowest_us"] = HDR_LOWEST_US
    out["hdr_highest_us"] = HDR_HIGHEST_US
    out["hdr_significant_digits"] = HDR_DIGITS
    return out


def hosts_summary(snapshots: Iterable[Snapshot], hosts: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The report's ``hosts``: per target, users assigned and sessions registered, summed
    over processes. ``hosts`` (the ``--host`` list's labels) gives the order and lists
    every entry, even one no user went to; targets only the snapshots know (a custom user
    class's own ``host``) follow, sorted."""
    users: dict[str, int] = dict.fromkeys(hosts, 0)
    connects: dict[str, int] = dict.fromkeys(hosts, 0)
    for snap in snapshots:
        for src, dst in ((snap.host_users, users), (snap.host_connects, connects)):
            for label, n in src.items():
                dst[label] = dst.get(label, 0) + n
    extra = sorted((set(users) | set(connects)) - set(hosts))
    return [
        {"host": label, "users": users.get(label, 0), "connects": connects.get(label, 0)}
        for label in [*dict.fromkeys(hosts), *extra]
    ]


def build_report(
    snapshots: Iterable[Snapshot],
    *,
    duration_s: float,
    options: Mapping[str, Any],
    host: str,
    started_at: float,
    stopped_at: float,
    drain_s: float = 0.0,
    users: Mapping[str, Any],
    rate_per_sender: float,
    extra_saturation: Iterable[str] = (),
    cpu_count: int | None = None,
    locust_version: str = "",
    measure_started_at: float | None = None,
    warmup: Mapping[str, Any] | None = None,
    label: str = "",
    dialect: str = "line",
    transport: str = "tcp",
    hosts: Sequence[str] = (),
) -> dict[str, Any]:
    """Merge per-process snapshots into the JSON document described in ``loadtest/README.md``.

    ``duration_s`` is the measured window as the writing process saw it (its gate,
    ``measure_started_at``, to the start of the drain, or to test stop without one); rates
    divide by it. ``drain_s`` is how long the end-of-test drain took. ``warmup`` describes
    the start gate (``chat.py`` fills it in); the warm-up's CPU and saturation are added
    here from the snapshots. ``measure_started_at`` None means the gate never opened:
    nothing was measured. ``label`` names the target (``--chat-label``: its name or
    engine; "" becomes null), ``dialect`` the wire dialect the clients spoke and
    ``transport`` how (``tcp``, or ``ws``: WebSocket). ``host``
    is ``--host`` as given; ``hosts`` its entries' labels, in order (see ``hosts_summary``).
    """
    snaps = list(snapshots)
    hist = new_histogram()
    counters = dict.fromkeys(COUNTERS, 0)
    failures: dict[str, int] = {}
    reasons: list[str] = list(extra_saturation)
    processes = []
    for snap in snaps:
        if snap.hist:
            hist.decode_and_add(snap.hist)
        for key, value in snap.counters.items():
            counters[key] = counters.get(key, 0) + value
        for kind, value in snap.failures.items():
            failures[kind] = failures.get(kind, 0) + value
        reasons.extend(snap.saturated)
        processes.append(
            {
                "role": snap.role,
                "pid": snap.pid,
                "cpu_seconds": _rnd(snap.cpu_seconds),
                "cpu_percent": _rnd(100.0 * snap.cpu_seconds / snap.wall_seconds, 1)
                if snap.wall_seconds > 0
                else 0.0,
                "cpu_peak_percent": _rnd(snap.cpu_peak_percent, 1),
                "warmup_cpu_seconds": _rnd(snap.warmup_cpu_seconds),
                "measure_started_at": (
                    _rnd(snap.measure_started) if snap.measure_started is not None else None
                ),
            }
        )
    cpu_seconds = sum(s.cpu_seconds for s in snaps)
    warmup_reasons = sorted({r for s in snaps for r in s.warmup_saturated})
    dur = max(duration_s, 1e-9)
    latency = latency_summary(hist)
    latency["out_of_range"] = counters["out_of_range"]
    senders_peak = sum(s.senders_peak for s in snaps)
    parts = [s.delivery for s in snaps if s.delivery is not None]
    with_users = [s for s in snaps if s.role != "master"]
    checked = bool(with_users) and all(s.delivery is not None for s in with_users)
    missing, pairs = undelivered(parts)
    return {
        "schema": SCHEMA,
        "host": host,
        "hosts": hosts_summary(snaps, hosts),
        "label": label or None,
        "dialect": dialect,
        "transport": transport,
        "started_at": _rnd(started_at),
        "stopped_at": _rnd(stopped_at),
        "duration_s": _rnd(duration_s),
        "drain_s": _rnd(drain_s),
        "measure_started_at": (
            _rnd(measure_started_at) if measure_started_at is not None else None
        ),
        "warmup_s": (
            _rnd(measure_started_at - started_at) if measure_started_at is not None else None
        ),
        "warmup": {
            **dict(warmup or {}),
            "cpu_seconds": _rnd(sum(s.warmup_cpu_seconds for s in snaps)),
            "saturated": bool(warmup_reasons),
            "saturation_reasons": warmup_reasons,
        },
        "latency_us": latency,
        "connect": {
            "count": counters["connects"],
            "joins": counters["joins"],
            "sessions": counters["sessions"],
            "failures": failures.get("connect", 0) + failures.get("join", 0),
        },
        "failures": {
            "total": sum(failures.values()),
            "by_kind": dict(sorted(failures.items())),
            "lost_messages": counters["lost_messages"],
        },
        "messages": {
            "intended": counters["intended"],
            "sent": counters["sent"],
            "intended_rate": _rnd(counters["intended"] / dur, 2),
            "achieved_rate": _rnd(counters["sent"] / dur, 2),
            "rate_per_sender": rate_per_sender,
            "senders": counters["senders"],
            "senders_peak": senders_peak,
            "nominal_rate": _rnd(senders_peak * rate_per_sender, 2),
            "late_sends": counters["late_sends"],
            "max_late_send_ms": _rnd(max((s.max_late_send_ms for s in snaps), default=0.0)),
        },
        "received": {
            "timed": counters["timed"],
            "counted_lines": counters["counted_lines"],
            "notices": counters["notices"],
            "other_lines": counters["other_lines"],
            "timing_receivers": counters["timing_receivers"],
            "counting_receivers": counters["counting_receivers"],
            "early_messages": counters["early_messages"],
        },
        "delivery": {
            "checked": checked,
            "undelivered": missing if checked else None,
            "pairs": pairs,
        },
        "load_generator": {
            "cpu_seconds": _rnd(cpu_seconds),
            "cpu_percent": _rnd(100.0 * cpu_seconds / dur, 1),
            "cpu_peak_percent": _rnd(max((s.cpu_peak_percent for s in snaps), default=0.0), 1),
            "cpu_count": cpu_count,
            "processes": processes,
            "saturated": bool(reasons),
            "saturation_reasons": sorted(set(reasons)),
        },
        "users": dict(users),
        "options": dict(options),
        "locust_version": locust_version,
    }
