"""Locust load test for chatd: broadcast latency over the line protocol.

Run ``locust -f loadtest/chat.py --host 127.0.0.1:4040`` (web UI) or add
``--headless -u 1000 -r 200 -t 60s``; ``loadtest/README.md`` explains every option and
number. Works against any server that speaks ``shared/PROTOCOL.md``.

How it fits together
--------------------
* Each Locust user is one chat client: it connects over TCP (Locust has gevent-patched
  ``socket``, so blocking calls yield), registers a unique nick, ``/join``s its room and then
  runs a *receiver greenlet* for the rest of the session while the user greenlet itself sends
  on a fixed schedule. The receiver is spawned outside the runner's user group, so Locust does
  not count it as a user; ``on_stop`` kills it.
* Latency is measured receiver-side from the message's *intended* send time (see
  ``chat_core``), reported to Locust as a ``broadcast`` request and recorded in a per-process
  HDR histogram. Locust's own statistics round to whole milliseconds below 100 ms; the
  histogram keeps microseconds and is what the JSON file and the benchmarks use.
* Only a sample of receivers parse and time (``--chat-timing-sample``); the rest count
  newlines, a ``recv`` and a ``bytes.count`` per read, and read only every
  ``COUNT_INTERVAL_S``. One Locust process can record a few tens of thousands of events per
  second, while a room of 1000 at 100 msg/s delivers about 100 000 lines per second.
* Measuring starts at a *gate* (``--chat-start-when-full``, on by default): once every
  spawned user has finished its first handshake -- the rooms are full -- plus
  ``--chat-warmup`` seconds. Until then senders wait (their schedules start at the gate)
  and receivers neither time nor count; the JSON's window, rates, counts and CPU start
  there, so the spawn and join storm is not mixed into steady-state figures. A single
  process decides by itself; with workers the master decides and tells them (see
  ``Collector.open_gate``). ``--chat-measure-time`` then ends the test after a fixed window.
* At test stop (``test_stopping``, before Locust kills the users) every process *drains*:
  senders stop, receivers keep reading until the room is quiet, and the messages some timing
  receiver never got are counted (``delivery`` in the JSON). A master tells its workers to
  drain with a custom message and waits for their acknowledgements.
* Workers send cumulative snapshots to the master with every stats report
  (``report_to_master``); the master keeps the newest per worker (``worker_report``), so
  merging is idempotent. The master (or the single local process) writes the JSON at test
  stop and again whenever a late worker report or the process exit brings newer data.

Code in this file does I/O and Locust plumbing only; decisions live in ``chat_core.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import socket
import string
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import gevent
import locust
import psutil
from gevent.event import Event
from locust import User, constant, events, task
from locust.env import Environment
from locust.runners import CPU_WARNING_THRESHOLD, MasterRunner, WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING

# isort: split
# The sibling module: Locust puts the locustfile's directory on sys.path while importing it.
import chat_core as core

log = logging.getLogger("chatd.loadtest")

#: Key under which workers attach their snapshot to Locust's stats report.
REPORT_KEY = "chatd_loadtest"
#: Request type shown in Locust's statistics for every event this file fires.
REQUEST_TYPE = "chat"
#: Bytes per ``recv``: large enough to drain a backlog of lines in one call when we lag.
RECV_BYTES = 65536
#: How often each process samples its own CPU use (seconds). Locust's own ``cpu_warning``
#: checks only every 10 s, too coarse for short runs.
CPU_SAMPLE_S = 2.0
#: Pause before reconnecting after a failed or dropped session, so a dead server produces
#: a steady trickle of failures rather than a busy loop.
RECONNECT_BACKOFF_S = 1.0
#: How early a sender's timer is set before the intended send time. libev rounds epoll
#: timeouts up to whole milliseconds, so timers overshoot by ~0.7 ms at the median; waking
#: 1 ms early sends most messages within a few hundred microseconds of their slot.
SEND_EARLY_S = 0.001
#: Pause after each read of a counting (non-timing) receiver. The server's writes land in
#: the kernel's socket buffer whether or not we read at once, so the server does the same
#: work either way; reading every 100 ms instead of on every line cuts the load generator's
#: reads (and greenlet switches) several-fold. 100 ms of a busy room is a few KiB, far below
#: the socket buffer, so the server never sees back-pressure from this. Must stay below
#: DRAIN_QUIET_S, or the drain could end between two reads.
COUNT_INTERVAL_S = 0.1
#: The drain polls this often, and ends once no receiver has read for DRAIN_QUIET_S.
DRAIN_POLL_S = 0.05
DRAIN_QUIET_S = 0.25
#: Extra time the master gives workers to acknowledge their drain (message round trip).
DRAIN_ACK_GRACE_S = 1.0
#: Custom Locust messages: master -> workers "drain now", worker -> master "drained".
DRAIN_MSG = "chatd_drain"
DRAINED_MSG = "chatd_drained"
#: How often a parked user checks whether Locust asked it to stop gracefully.
STOP_POLL_S = 0.2
#: Nick retries on one connection when the server says a nick is taken or invalid.
NICK_ATTEMPTS = 3
#: Custom Locust messages for the start gate: worker -> master "this many of my users
#: have finished their first handshake", master -> workers "start measuring now".
FILL_MSG = "chatd_fill"
START_MSG = "chatd_start"
#: How often the gate checks whether the rooms are full, and how often a worker reports
#: its join progress while they are not (only when it changed).
FILL_POLL_S = 0.05
#: Beyond --chat-handshake-timeout, how long the gate waits for stragglers before it opens
#: anyway: every user spawned before ``spawning_complete`` has settled (joined or failed)
#: within one handshake timeout, so this only covers message round trips.
FILL_GRACE_S = 2.0


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Settings:
    """The load test's options, read from ``environment.parsed_options`` at test start.

    Read at test start, not import, because the web UI can change them per run and workers
    receive the master's values with the spawn message.
    """

    room_size: int = 100
    rate: float = 1.0
    send_share: float = 0.1
    payload: int = 64
    timing_sample: float = 0.1
    hist_file: str = "chat-latency.json"
    arrivals: str = core.Arrivals.PERIODIC.value
    churn_messages: int = 5
    handshake_timeout: float = 30.0
    drain_timeout: float = 2.0
    start_when_full: bool = True
    warmup: float = 1.0
    measure_time: float = 0.0

    @classmethod
    def from_options(cls, options: Any) -> Settings:
        """Pick our options out of Locust's namespace, falling back to the defaults."""
        default = cls()
        values = {}
        for name in asdict(default):
            values[name] = getattr(options, f"chat_{name}", None)
            if values[name] is None:
                values[name] = getattr(default, name)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject options that would make the run meaningless, before any user starts."""
        if self.room_size < 1:
            raise ValueError("--chat-room-size must be at least 1")
        if self.rate <= 0:
            raise ValueError("--chat-rate must be positive")
        core.to_fraction(self.send_share)
        core.to_fraction(self.timing_sample)
        core.Arrivals(self.arrivals)
        if self.handshake_timeout <= 0:
            raise ValueError("--chat-handshake-timeout must be positive")
        if self.drain_timeout < 0:
            raise ValueError("--chat-drain-timeout must not be negative")
        if self.warmup < 0:
            raise ValueError("--chat-warmup must not be negative")
        if self.measure_time < 0:
            raise ValueError("--chat-measure-time must not be negative")


@events.init_command_line_parser.add_listener
def add_options(parser: Any, **_kw: Any) -> None:
    """Register the ``--chat-*`` options; each has a ``LOCUST_CHAT_*`` environment variable."""
    d = Settings()
    parser.add_argument(
        "--chat-room-size",
        type=int,
        default=d.room_size,
        env_var="LOCUST_CHAT_ROOM_SIZE",
        help="Users per room; 1000 users with 100 make ten rooms of 100 (default %(default)s)",
    )
    parser.add_argument(
        "--chat-rate",
        type=float,
        default=d.rate,
        env_var="LOCUST_CHAT_RATE",
        help="Messages per second per sending user (default %(default)s)",
    )
    parser.add_argument(
        "--chat-send-share",
        type=float,
        default=d.send_share,
        env_var="LOCUST_CHAT_SEND_SHARE",
        help="Share of ChatUsers that send, 0..1; the rest only read (default %(default)s)",
    )
    parser.add_argument(
        "--chat-payload",
        type=int,
        default=d.payload,
        env_var="LOCUST_CHAT_PAYLOAD",
        help="Bytes of chat text per message, header included (default %(default)s)",
    )
    parser.add_argument(
        "--chat-timing-sample",
        type=float,
        default=d.timing_sample,
        env_var="LOCUST_CHAT_TIMING_SAMPLE",
        help="Share of receivers that parse and time messages, 0..1; the rest only count "
        "lines (default %(default)s)",
    )
    parser.add_argument(
        "--chat-hist-file",
        type=str,
        default=d.hist_file,
        env_var="LOCUST_CHAT_HIST_FILE",
        help="Where to write the latency histogram JSON at test stop; empty disables "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--chat-arrivals",
        type=str,
        default=d.arrivals,
        env_var="LOCUST_CHAT_ARRIVALS",
        choices=[a.value for a in core.Arrivals],
        help="Send times: 'periodic' (random phase, fixed interval) or 'poisson' "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--chat-churn-messages",
        type=int,
        default=d.churn_messages,
        env_var="LOCUST_CHAT_CHURN_MESSAGES",
        help="Messages a ChurnUser sends per session before it quits (default %(default)s)",
    )
    parser.add_argument(
        "--chat-handshake-timeout",
        type=float,
        default=d.handshake_timeout,
        env_var="LOCUST_CHAT_HANDSHAKE_TIMEOUT",
        help="Seconds to connect, register and join before it counts as a failure "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--chat-drain-timeout",
        type=float,
        default=d.drain_timeout,
        env_var="LOCUST_CHAT_DRAIN_TIMEOUT",
        help="At test stop, stop sending and wait up to this many seconds for messages in "
        "flight before counting the undelivered ones; 0 skips the drain (default %(default)s)",
    )
    parser.add_argument(
        "--chat-start-when-full",
        action=argparse.BooleanOptionalAction,
        default=d.start_when_full,
        env_var="LOCUST_CHAT_START_WHEN_FULL",
        help="Start sending and measuring only once all users are spawned and have joined "
        "their rooms (then wait --chat-warmup); --no-chat-start-when-full measures from test "
        "start, join storm included (default %(default)s)",
    )
    parser.add_argument(
        "--chat-warmup",
        type=float,
        default=d.warmup,
        env_var="LOCUST_CHAT_WARMUP",
        help="Seconds to wait after the rooms are full (or after test start with "
        "--no-chat-start-when-full) before sending and measuring (default %(default)s)",
    )
    parser.add_argument(
        "--chat-measure-time",
        type=float,
        default=d.measure_time,
        env_var="LOCUST_CHAT_MEASURE_TIME",
        help="Stop the test this many seconds after measuring started, so every run "
        "measures the same window however long the rooms took to fill; --run-time stays "
        "an upper bound. 0: run until --run-time or a manual stop (default %(default)s)",
    )


# --------------------------------------------------------------------------- per-process state


class ChatFailure(Exception):
    """A failure we report to Locust. Messages are generic so Locust groups them by kind."""


class Collector:
    """Everything one Locust process measures, plus (on the master) the workers' snapshots.

    gevent runs one greenlet at a time, so plain counters need no locks.
    """

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.settings = Settings()
        self.send_share = core.to_fraction(self.settings.send_share)
        self.timing_sample = core.to_fraction(self.settings.timing_sample)
        self.process = psutil.Process()
        self.remote: dict[str, core.Snapshot] = {}
        self.sampler: gevent.Greenlet | None = None
        #: The greenlet that opens the start gate (or, on a worker, reports join progress).
        self.gate: gevent.Greenlet | None = None
        self.users: dict[str, Any] = {}
        self.tag = ""
        self.running = False
        #: Bumped per test, so a timer left over from an earlier web-UI run does nothing.
        self.generation = 0
        self._reset_measurements()

    def _reset_measurements(self) -> None:
        self.hist = core.new_histogram()
        self.counters = dict.fromkeys(core.COUNTERS, 0)
        self.failures: dict[str, int] = {}
        #: Saturation signs in the measured window, and before it (the join storm).
        self.saturated: set[str] = set()
        self.warmup_saturated: set[str] = set()
        self.cpu_peak = 0.0
        self.max_late_send = 0.0
        self.senders_active = 0
        self.senders_peak = 0
        self.next_slot = 0
        self.next_serial = 0
        self.users_peak = 0
        self.started_wall = time.time()
        self.started_cpu = self._cpu_now()
        #: The start gate: set when this process starts measuring (senders wait for it).
        self.measuring = Event()
        #: Wall time the gate opened; None while warming up.
        self.measure_started: float | None = None
        #: CPU time at the gate, and CPU used before it.
        self.window_cpu_start = self.started_cpu
        self.warmup_cpu = 0.0
        #: Join progress of this process (and, on a master, of every worker).
        self.fill = core.Fill()
        #: This process's users that finished their first handshake, and those that joined.
        self.settled = 0
        self.joined_first = 0
        #: Wall time the gate saw the rooms full (or gave up waiting); None before.
        self.full_at: float | None = None
        #: Whether every user had settled at that moment (False: the wait timed out).
        self.was_full = False
        self.stopped_wall: float | None = None
        self.stopped_cpu: float | None = None
        #: Wall time the drain began (sending stopped); None while sending.
        self.drain_started: float | None = None
        #: Set once the drain is over: parked users start watching for Locust's stop.
        self.drained = Event()
        self.drain_s = 0.0
        self.delivery: core.Delivery | None = None
        self.drain_acks: set[str] = set()
        #: Wall time of the newest read by any receiver: the drain waits for quiet.
        self.last_arrival = 0.0
        #: Sessions whose receiver times messages, for the end-of-test accounting.
        self.timing_sessions: set[Session] = set()
        #: Messages sent per sender nick (all sender sessions of this run in this process).
        self.sent_by: dict[str, int] = {}

    def _cpu_now(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    # ----------------------------------------------------------------- lifecycle

    def start(self, environment: Environment) -> None:
        """Reset for a new test (web UI runs can repeat) and start the CPU sampler."""
        self.environment = environment
        if self.process.pid != os.getpid():
            # --processes forks the workers after this module was imported.
            self.process = psutil.Process()
        try:
            self.settings = Settings.from_options(environment.parsed_options)
        except ValueError as exc:  # only the web UI can get here; the CLI was checked at init
            log.error("invalid option, keeping the previous settings: %s", exc)
        self.send_share = core.to_fraction(self.settings.send_share)
        self.timing_sample = core.to_fraction(self.settings.timing_sample)
        self.tag = "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
        self._kill_gate()
        self._reset_measurements()
        self.remote.clear()
        self.users = {}
        self.running = True
        self.generation += 1
        if self.sampler is not None:
            self.sampler.kill(block=False)
        self.process.cpu_percent(None)  # prime: the next call measures since now
        self.sampler = gevent.spawn(self._sample_cpu)
        if not self.settings.start_when_full:
            # Each process on its own clock: nothing to wait for but the warm-up.
            if self.settings.warmup <= 0:
                self.open_gate()
            else:
                self.gate = gevent.spawn(self._open_after, self.settings.warmup, self.generation)
        elif isinstance(environment.runner, WorkerRunner):
            self.gate = gevent.spawn(self._report_fill, self.generation)
        # A local runner or a master waits for ``spawning_complete`` (on_spawning_complete).

    def stop(self) -> None:
        """Freeze wall and CPU time at test stop so later reports carry the same figures."""
        if not self.running:
            return
        self.running = False
        self.stopped_wall = time.time()
        self.stopped_cpu = self._cpu_now()
        if self.sampler is not None:
            self.sampler.kill(block=False)
            self.sampler = None
        self._kill_gate()
        if not self.measuring.is_set():
            log.warning(
                "the test stopped before measuring started (rooms not full, or still in the "
                "warm-up): nothing was measured; raise --run-time"
            )

    def _kill_gate(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None and gate is not gevent.getcurrent():
            gate.kill(block=False)

    # ----------------------------------------------------------------- start gate

    def user_settled(self, joined: bool) -> None:
        """A user of this process finished its first handshake (``joined`` or failed)."""
        self.settled += 1
        self.joined_first += int(joined)
        if not isinstance(self.environment.runner if self.environment else None, WorkerRunner):
            self.fill.update("local", self.settled, self.joined_first)

    def on_spawning_complete(self, user_count: int) -> None:
        """Local runner or master: every user exists now; wait for their joins, then start.

        Locust fires this once per ramp (again when the web UI changes the user count);
        only the first one of a test arms the gate. Workers ignore it: their master
        fires it only after hearing from all of them, and opens their gates itself.
        """
        runner = self.environment.runner if self.environment else None
        if (
            not self.running
            or not self.settings.start_when_full
            or isinstance(runner, WorkerRunner)
            or self.gate is not None
            or self.measuring.is_set()
        ):
            return
        self.fill.expected = user_count
        self.gate = gevent.spawn(self._fill_then_open, self.generation)

    def _fill_then_open(self, generation: int) -> None:
        """Wait (bounded) until every user has joined or failed, warm up, open the gate."""
        deadline = time.time() + self.settings.handshake_timeout + FILL_GRACE_S
        while not self.fill.full and time.time() < deadline:
            gevent.sleep(FILL_POLL_S)
            if self.generation != generation or self.draining or not self.running:
                return
        self.full_at = time.time()
        self.was_full = self.fill.full
        fill_s = self.full_at - self.started_wall
        if self.was_full:
            log.info(
                "rooms full after %.2f s (%d users joined); measuring in %.1f s",
                fill_s,
                self.fill.total_joined,
                self.settings.warmup,
            )
        else:
            log.warning(
                "only %d of %s users had finished joining after %.1f s; measuring anyway",
                self.fill.total_settled,
                self.fill.expected,
                fill_s,
            )
        self._open_after(self.settings.warmup, generation)

    def _open_after(self, delay: float, generation: int) -> None:
        if delay > 0:
            gevent.sleep(delay)
        if self.generation == generation and self.running and not self.draining:
            self.open_gate()

    def _report_fill(self, generation: int) -> None:
        """Worker: tell the master how many of our users have settled, until it says start.

        Only changes are sent, at most every ``FILL_POLL_S``: a few dozen small messages
        over a join storm. The counts are cumulative, so a lost or repeated one is harmless.
        """
        runner = self.environment.runner if self.environment else None
        last = None
        while self.generation == generation and self.running and not self.measuring.is_set():
            now = (self.settled, self.joined_first)
            if now != last and runner is not None:
                runner.send_message(FILL_MSG, {"settled": now[0], "joined": now[1]})
                last = now
            gevent.sleep(FILL_POLL_S)

    def open_gate(self) -> None:
        """Start measuring in this process now. Idempotent.

        Window counters and the histogram start from zero (only join notices can have
        been read so far: senders wait at the gate), the CPU window starts here, and
        waiting senders wake with their schedules starting now. A master first tells
        its workers, each of which opens its own gate on receipt; their windows thus
        start within a message round trip of each other (milliseconds on one machine),
        and nothing depends on the processes' clocks agreeing. Only the process that
        writes the report (master or local) arms the ``--chat-measure-time`` stop.
        """
        if self.measuring.is_set():
            return
        runner = self.environment.runner if self.environment else None
        now = time.time()
        if isinstance(runner, MasterRunner) and self.settings.start_when_full:
            runner.send_message(START_MSG, {})
        cpu = self._cpu_now()
        self.measure_started = now
        self.warmup_cpu = cpu - self.started_cpu
        self.window_cpu_start = cpu
        for key in core.WINDOW_COUNTERS:
            self.counters[key] = 0
        self.hist = core.new_histogram()
        self.max_late_send = 0.0
        self.cpu_peak = 0.0
        self.process.cpu_percent(None)  # the next CPU sample covers the window only
        self.measuring.set()
        if not isinstance(runner, WorkerRunner) and self.settings.measure_time > 0:
            gevent.spawn_later(self.settings.measure_time, self._end_window, self.generation)

    def _end_window(self, generation: int) -> None:
        """``--chat-measure-time`` is up: stop the test as Locust's ``--run-time`` would."""
        env = self.environment
        if self.generation != generation or not self.running or env is None or not env.runner:
            return
        log.info("measured for %.1f s (--chat-measure-time), stopping", self.settings.measure_time)
        if getattr(env.parsed_options, "headless", False):
            env.runner.quit()
        else:
            env.runner.stop()

    def _sample_cpu(self) -> None:
        """Track peak CPU and the user count; flag saturation like Locust's cpu_warning."""
        while True:
            gevent.sleep(CPU_SAMPLE_S)
            pct = self.process.cpu_percent(None)
            if self.measuring.is_set():
                self.cpu_peak = max(self.cpu_peak, pct)
            if pct >= CPU_WARNING_THRESHOLD:
                self.saturate(f"cpu sample >= {CPU_WARNING_THRESHOLD}%")
            runner = self.environment.runner if self.environment else None
            if runner is not None:
                self.users_peak = max(self.users_peak, runner.user_count)

    def saturate(self, reason: str) -> None:
        """Mark this process's measurements as possibly distorted by its own CPU load.

        Before the gate only the join storm is affected, which is not measured: such signs
        are kept apart (``warmup.saturation_reasons``) and do not mark the run saturated.
        """
        if not self.measuring.is_set():
            self.warmup_saturated.add(reason)
            return
        if reason not in self.saturated:
            log.warning("load generator saturated: %s", reason)
        self.saturated.add(reason)

    @property
    def draining(self) -> bool:
        return self.drain_started is not None

    def drain(self) -> None:
        """Stop all sending, wait for what is in flight, then take the delivery accounting.

        Locust kills users at stop, so without a drain every message still in flight would
        vanish unmeasured, and a server that stalls near the end would look better than one
        that delivers. Waits until no receiver has read anything for ``DRAIN_QUIET_S`` or
        ``--chat-drain-timeout`` passes. Idempotent.
        """
        if self.draining:
            return
        if self.settings.drain_timeout <= 0:
            self.drained.set()
            return
        self.drain_started = start = time.time()
        deadline = start + self.settings.drain_timeout
        while True:
            gevent.sleep(DRAIN_POLL_S)
            now = time.time()
            if now >= deadline or now - max(self.last_arrival, start) >= DRAIN_QUIET_S:
                break
        self.drain_s = time.time() - start
        seen: dict[str, int] = {}
        received: dict[str, int] = {}
        for session in self.timing_sessions:
            for sender, n in session.tracker.received_counts().items():
                seen[sender] = seen.get(sender, 0) + 1
                received[sender] = received.get(sender, 0) + n
        self.delivery = core.Delivery(seen, received, dict(self.sent_by), self.drain_s)
        self.drained.set()

    # ----------------------------------------------------------------- identities

    def assign_slot(self) -> tuple[int, int]:
        """(slot, global index) of a newly created user (see ``chat_core``)."""
        runner = self.environment.runner if self.environment else None
        worker_index = max(getattr(runner, "worker_index", 0), 0)
        workers = 1
        if isinstance(runner, WorkerRunner) and self.environment is not None:
            workers = int(getattr(self.environment.parsed_options, "expect_workers", 1) or 1)
        slot = self.next_slot
        self.next_slot += 1
        return slot, core.global_index(slot, worker_index, workers)

    def new_nick(self) -> str:
        """A nick no other session of this run uses: tag, worker index and serial."""
        runner = self.environment.runner if self.environment else None
        self.next_serial += 1
        return core.make_nick(self.tag, getattr(runner, "worker_index", 0), self.next_serial)

    # ----------------------------------------------------------------- events

    def fire(
        self, name: str, response_time: float, length: int = 0, exception: Exception | None = None
    ) -> None:
        """Fire a Locust ``request`` event of our request type."""
        if self.environment is None:
            return
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=response_time,
            response_length=length,
            exception=exception,
            context={},
        )

    def fail(self, kind: str, detail: str, response_time: float = 0.0) -> None:
        """Count a failure of ``kind`` and show it in Locust as a failed ``kind`` request."""
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.fire(kind, response_time, exception=ChatFailure(detail))

    def record_latency(self, latency_us: int) -> None:
        """Add one broadcast latency; clamp (and count) values outside the histogram range."""
        if not self.hist.record_value(latency_us):
            self.counters["out_of_range"] += 1
            clamped = core.HDR_LOWEST_US if latency_us < core.HDR_LOWEST_US else core.HDR_HIGHEST_US
            self.hist.record_value(clamped)

    def sender_started(self) -> None:
        self.counters["senders"] += 1
        self.senders_active += 1
        self.senders_peak = max(self.senders_peak, self.senders_active)

    def sender_stopped(self, sent: int, intended: int) -> None:
        self.senders_active -= 1
        self.counters["intended"] += max(intended, sent)

    # ----------------------------------------------------------------- reporting

    def snapshot(self, role: str) -> core.Snapshot:
        """This process's cumulative measurements (frozen once the test stopped).

        CPU and wall time cover the measured window (gate to stop); before the gate opens
        the window is empty and everything so far counts as warm-up.
        """
        wall_end = self.stopped_wall if self.stopped_wall is not None else time.time()
        cpu_end = self.stopped_cpu if self.stopped_cpu is not None else self._cpu_now()
        if self.measure_started is None:
            wall = cpu = 0.0
            warmup_cpu = max(cpu_end - self.started_cpu, 0.0)
        else:
            wall = max(wall_end - self.measure_started, 0.0)
            cpu = max(cpu_end - self.window_cpu_start, 0.0)
            warmup_cpu = self.warmup_cpu
        reasons = set(self.saturated)
        if wall >= 1.0 and 100.0 * cpu / wall >= CPU_WARNING_THRESHOLD:
            reasons.add(f"mean cpu >= {CPU_WARNING_THRESHOLD}%")
        return core.Snapshot(
            measure_started=self.measure_started,
            warmup_cpu_seconds=warmup_cpu,
            warmup_saturated=sorted(self.warmup_saturated),
            delivery=self.delivery,
            hist=self.hist.encode().decode("ascii") if self.hist.get_total_count() else "",
            counters=dict(self.counters),
            failures=dict(self.failures),
            cpu_seconds=cpu,
            cpu_peak_percent=self.cpu_peak,
            wall_seconds=wall,
            saturated=sorted(reasons),
            max_late_send_ms=self.max_late_send * 1000.0,
            senders_peak=self.senders_peak,
            role=role,
            pid=os.getpid(),
        )

    def write_report(self, final: bool = False) -> None:
        """Write the merged JSON (master or local process only); atomic via rename."""
        env = self.environment
        path = self.settings.hist_file
        if env is None or not path or isinstance(env.runner, WorkerRunner):
            return
        is_master = isinstance(env.runner, MasterRunner)
        snaps = [self.snapshot("master" if is_master else "local"), *self.remote.values()]
        wall_end = self.stopped_wall if self.stopped_wall is not None else time.time()
        send_end = self.drain_started if self.drain_started is not None else wall_end
        measure = self.measure_started
        duration = max(send_end - measure, 0.0) if measure is not None else 0.0
        waited = self.settings.start_when_full
        warmup = {
            "start_when_full": waited,
            "extra_s": self.settings.warmup,
            # test start -> every user spawned and past its first handshake
            "fill_s": round(self.full_at - self.started_wall, 3) if self.full_at else None,
            # every user had settled when the gate opened (null: the gate did not wait)
            "full": self.was_full if waited else None,
            "users_expected": self.fill.expected,
            "users_joined": self.fill.total_joined if waited else None,
        }
        options = asdict(self.settings)
        options.update(
            users=getattr(env.parsed_options, "num_users", None),
            spawn_rate=getattr(env.parsed_options, "spawn_rate", None),
            run_time=getattr(env.parsed_options, "run_time", None),
            processes=getattr(env.parsed_options, "processes", None),
            user_classes=[cls.__name__ for cls in env.user_classes],
        )
        users = {"peak": self.users_peak, "by_class": self.users.get("by_class", {})}
        report = core.build_report(
            snaps,
            duration_s=duration,
            measure_started_at=measure,
            warmup=warmup,
            drain_s=max((s.delivery.drain_s for s in snaps if s.delivery), default=0.0),
            options=options,
            host=env.host or "",
            started_at=self.started_wall,
            stopped_at=wall_end,
            users=users,
            rate_per_sender=self.settings.rate,
            cpu_count=os.cpu_count(),
            locust_version=locust.__version__,
        )
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
        lat = report["latency_us"]
        logger = log.info if final else log.debug
        logger(
            "wrote %s: %d broadcast samples, p50 %s us, p99 %s us, %d failures%s",
            path,
            lat["count"],
            lat["p50"],
            lat["p99"],
            report["failures"]["total"],
            ", SATURATED" if report["load_generator"]["saturated"] else "",
        )


STATE = Collector()


@events.init.add_listener
def on_init(environment: Environment, **_kw: Any) -> None:
    """Default user selection, and validate options early so a typo fails before the run.

    With no user classes named on the command line (and no class picker), run only
    ``ChatUser``; the scenario classes are opt-in by name.
    """
    STATE.environment = environment
    opts = environment.parsed_options
    if opts is not None:
        try:
            Settings.from_options(opts)
        except ValueError as exc:
            sys.exit(f"loadtest/chat.py: {exc}")  # SystemExit passes through Locust's fire()
        picked = getattr(opts, "user_classes", None) or getattr(opts, "class_picker", False)
        if not picked and not isinstance(environment.runner, WorkerRunner):
            environment.user_classes[:] = [ChatUser]
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(DRAIN_MSG, on_drain_message, concurrent=True)
        runner.register_message(START_MSG, on_start_message)
    elif isinstance(runner, MasterRunner):
        runner.register_message(DRAINED_MSG, on_drained_message)
        runner.register_message(FILL_MSG, on_fill_message)


def on_fill_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Master: a worker's join progress (cumulative counts of its users)."""
    data = msg.data or {}
    STATE.fill.update(str(msg.node_id), int(data.get("settled", 0)), int(data.get("joined", 0)))


def on_start_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Worker: the master saw every room full and the warm-up pass: start measuring."""
    if STATE.running:
        STATE.open_gate()


def on_drain_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Worker: the master asks every worker to drain before it stops them."""
    STATE.drain()
    environment.runner.send_message(DRAINED_MSG, {"client_id": environment.runner.client_id})


def on_drained_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Master: a worker finished its drain."""
    STATE.drain_acks.add(str(msg.node_id))


def drain_workers(runner: MasterRunner) -> None:
    """Master: have all workers drain at once, and wait (bounded) until they have.

    Done before Locust sends ``stop``/``quit``: after ``quit`` the master waits only
    0.5 s for the workers' final reports, far less than a drain may take.
    """
    workers = runner.worker_count
    if workers == 0 or STATE.settings.drain_timeout <= 0 or STATE.draining:
        return
    STATE.drain_started = time.time()
    STATE.drain_acks.clear()
    runner.send_message(DRAIN_MSG, {})
    deadline = time.time() + STATE.settings.drain_timeout + DRAIN_ACK_GRACE_S
    while len(STATE.drain_acks) < workers and time.time() < deadline:
        gevent.sleep(DRAIN_POLL_S)
    STATE.drain_s = time.time() - STATE.drain_started


@events.test_start.add_listener
def on_test_start(environment: Environment, **_kw: Any) -> None:
    STATE.start(environment)


@events.spawning_complete.add_listener
def on_spawning_complete(user_count: int, **_kw: Any) -> None:
    STATE.on_spawning_complete(user_count)


@events.test_stopping.add_listener
def on_test_stopping(environment: Environment, **_kw: Any) -> None:
    """Capture the user mix while users still exist, then drain before Locust kills them."""
    runner = environment.runner
    if runner is None:
        return
    counts = getattr(runner, "reported_user_classes_count", None) or runner.user_classes_count
    STATE.users["by_class"] = {k: v for k, v in counts.items() if v}
    STATE.users_peak = max(STATE.users_peak, runner.user_count)
    if isinstance(runner, MasterRunner):
        drain_workers(runner)
    else:
        STATE.drain()


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_kw: Any) -> None:
    STATE.stop()
    STATE.write_report(final=True)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_kw: Any) -> None:
    """Last write: on a master, the workers' final reports arrive after its ``test_stop``."""
    if STATE.environment is not None and STATE.stopped_wall is not None:
        STATE.write_report(final=True)


@events.cpu_warning.add_listener
def on_cpu_warning(environment: Environment, cpu_usage: float, **_kw: Any) -> None:
    STATE.saturate(f"locust cpu_warning ({cpu_usage:.0f}%)")


@events.report_to_master.add_listener
def on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data[REPORT_KEY] = STATE.snapshot("worker").to_wire()


@events.worker_report.add_listener
def on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    """Keep each worker's newest snapshot; after stop, rewrite the file with late data."""
    if REPORT_KEY not in data:
        return
    STATE.remote[client_id] = core.Snapshot.from_wire(data[REPORT_KEY])
    if STATE.stopped_wall is not None:
        STATE.write_report()


# --------------------------------------------------------------------------- users


class HandshakeError(Exception):
    """Connecting, registering or joining failed; ``stage`` says which."""

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"{stage}: {detail}")
        self.stage = stage
        self.detail = detail


class Session:
    """One connection: socket, receiver greenlet and the flags they share."""

    def __init__(self, sock: socket.socket, nick: str) -> None:
        self.sock = sock
        self.nick = nick
        #: Set when the receiver saw the connection end (or a fatal error).
        self.closed = Event()
        #: Set before we close on purpose, so the receiver does not report it as a failure.
        self.closing = False
        self.receiver: gevent.Greenlet | None = None
        #: Per session: after a reconnect the messages missed meanwhile are not "lost".
        self.tracker = core.SequenceTracker()
        #: Wall time the join was confirmed: a sender's schedule starts at the later of
        #: this and the gate.
        self.joined_at = 0.0

    def shutdown(self) -> None:
        """Kill the receiver and close the socket; safe to call twice."""
        self.closing = True
        STATE.timing_sessions.discard(self)
        if self.receiver is not None:
            self.receiver.kill(block=True, timeout=2.0)
            self.receiver = None
        with contextlib.suppress(OSError):
            self.sock.close()
        self.closed.set()


class ChatUser(User):
    """A chat client; whether it sends is decided per user by ``--chat-send-share``.

    The default user class. Subclasses fix the role for scenarios. Every user also reads,
    except ``SlowReaderUser``. Senders use the rate and arrival pattern options.
    """

    wait_time = constant(0)
    #: True/False force sending; None lets ``--chat-send-share`` decide per user.
    sends: bool | None = None
    #: False: stop reading once joined (the slow-reader scenario).
    reads: bool = True
    #: Messages per session before ``/quit``; None: chat until the test stops.
    session_messages: int | None = None

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.slot, self.index = STATE.assign_slot()
        self.rng = random.Random()
        self.session: Session | None = None
        #: Whether this user's first handshake is over (the start gate counts them).
        self.settled = False

    # ----------------------------------------------------------------- roles

    @property
    def room(self) -> str:
        return core.room_for(self.index, STATE.settings.room_size)

    def will_send(self) -> bool:
        if self.sends is not None:
            return self.sends
        return core.spread(self.slot, STATE.send_share)

    def will_time(self) -> bool:
        return core.spread_early(self.slot, STATE.timing_sample)

    # ----------------------------------------------------------------- main loop

    @task
    def chat(self) -> None:
        """Run sessions back to back until Locust stops the user.

        Returns only when Locust asks for a graceful stop (``--stop-timeout``); otherwise
        Locust kills the greenlet and ``on_stop`` cleans up. Once the test drains, the user
        parks in ``wait_session`` with its receiver still reading.
        """
        while not self.stopping():
            ok = self.run_session()
            if self.stopping():
                return
            self.end_session()
            if not ok:
                gevent.sleep(RECONNECT_BACKOFF_S * (0.5 + self.rng.random()))
            else:
                self.between_sessions()

    def stopping(self) -> bool:
        """Locust asked this user to stop gracefully (it waits ``--stop-timeout`` for us)."""
        return self._state == LOCUST_STATE_STOPPING

    def wait_session(self, session: Session | None) -> None:
        """Block until the session ends or Locust asks us to stop gracefully.

        Locust's graceful stop (``--stop-timeout``) only flags the user; it does not wake it.
        Polling the flag all test long would cost every idle user five wake-ups a second, so
        users sleep until the session ends or the drain is over (``STATE.drained``), and
        poll only after that, when the stop is imminent. Without ``--stop-timeout`` Locust
        simply kills the greenlet in this wait.
        """
        waits = [STATE.drained] if session is None else [STATE.drained, session.closed]
        while not self.stopping():
            if session is not None and session.closed.is_set():
                return
            if STATE.drained.is_set():
                # The stop is near: only now is polling worth its wake-ups.
                gevent.sleep(STOP_POLL_S)
            else:
                gevent.wait(waits, count=1)

    def settle(self, joined: bool) -> None:
        """Count this user's first handshake as over, once, for the start gate."""
        if not self.settled:
            self.settled = True
            STATE.user_settled(joined)

    def between_sessions(self) -> None:
        """Pause after a session that ended normally (only churn sessions end normally)."""
        gevent.sleep(RECONNECT_BACKOFF_S * (0.5 + self.rng.random()))

    def on_stop(self) -> None:
        self.end_session()

    def end_session(self) -> None:
        if self.session is not None:
            self.session.shutdown()
            self.session = None

    def run_session(self) -> bool:
        """Connect, register, join, then read and/or send. False if it ended in a failure."""
        settings = STATE.settings
        if STATE.draining:
            self.wait_session(None)  # the test is ending: no new sessions
            return True
        STATE.counters["sessions"] += 1
        try:
            session, leftover = self.open_session(settings)
        except HandshakeError:
            self.settle(joined=False)
            return False
        self.settle(joined=True)
        self.session = session
        sends = self.will_send()
        if self.reads:
            timing = self.will_time()
            STATE.counters["timing_receivers" if timing else "counting_receivers"] += 1
            if timing:
                STATE.timing_sessions.add(session)
            session.receiver = gevent.spawn(self.receive, session, leftover, timing)
        if sends:
            return self.send_loop(session, settings)
        self.wait_session(session)  # a reader reads until the connection ends or we stop
        return session.closing or self.stopping()

    # ----------------------------------------------------------------- handshake

    def open_session(self, settings: Settings) -> tuple[Session, list[bytes]]:
        """Connect, register a nick and join the room; return lines read past the join.

        Waits for the server's confirmations by reading, under one deadline. Fires
        ``connect`` (TCP connect to registration confirmed) and ``join`` (``/join`` to its
        confirmation); a failure fires the failing stage's event with the exception.
        """
        host, port = core.parse_host(self.host or self.environment.host)
        nick = STATE.new_nick()
        room = self.room
        start = time.perf_counter()
        deadline = time.monotonic() + settings.handshake_timeout
        try:
            sock = socket.create_connection((host, port), timeout=settings.handshake_timeout)
        except OSError as exc:
            STATE.fail("connect", f"connect failed: {type(exc).__name__}", _ms_since(start))
            raise HandshakeError("connect", str(exc)) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session(sock, nick)
        self.session = session
        splitter = core.LineSplitter()
        stage = "connect"
        try:
            sock.sendall(f"{nick}\n".encode("ascii"))
            attempts = 1
            lines = self.read_until(session, splitter, deadline, stage, registered_check(nick))
            while lines is None:  # nick refused: try another on the same connection
                if attempts >= NICK_ATTEMPTS:
                    raise HandshakeError(stage, "nickname refused")
                attempts += 1
                nick = session.nick = STATE.new_nick()
                sock.sendall(f"{nick}\n".encode("ascii"))
                lines = self.read_until(session, splitter, deadline, stage, registered_check(nick))
            STATE.counters["connects"] += 1
            STATE.fire("connect", _ms_since(start))
            stage = "join"
            join_start = time.perf_counter()
            sock.sendall(f"/join {room}\n".encode("ascii"))
            try:
                rest = self.scan(lines, joined_check(nick, room))
            except _Refused as exc:
                raise HandshakeError(stage, "join refused") from exc
            if rest is None:
                rest = self.read_until(session, splitter, deadline, stage, joined_check(nick, room))
            if rest is None:
                raise HandshakeError(stage, "join refused")
            STATE.counters["joins"] += 1
            STATE.fire("join", _ms_since(join_start))
            session.joined_at = time.time()
            sock.settimeout(None)
            return session, rest
        except HandshakeError as exc:
            STATE.fail(exc.stage, f"{exc.stage} failed: {exc.detail}", _ms_since(start))
            raise
        except (OSError, core.ProtocolError) as exc:
            STATE.fail(stage, f"{stage} failed: {type(exc).__name__}", _ms_since(start))
            raise HandshakeError(stage, str(exc)) from exc

    def scan(self, lines: list[bytes], check: Any) -> list[bytes] | None:
        """Look for the confirmation in already-read ``lines``; return what follows it.

        Raise on a ``! `` line (the server refused the step); None if not found yet.
        """
        for i, raw in enumerate(lines):
            text = raw.decode("utf-8", "replace")
            if text.startswith("! "):
                raise _Refused(text)
            if check(text):
                return lines[i + 1 :]
        return None

    def read_until(
        self, session: Session, splitter: core.LineSplitter, deadline: float, stage: str, check: Any
    ) -> list[bytes] | None:
        """Read until a line satisfies ``check``; return the lines after it.

        None when the server answered with a ``! `` line, which for a nickname means "taken
        or invalid, send another". Raises ``HandshakeError`` on timeout or EOF.
        """
        sock = session.sock
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeError(stage, "timed out waiting for confirmation")
            sock.settimeout(remaining)
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError as exc:
                raise HandshakeError(stage, "timed out waiting for confirmation") from exc
            if not data:
                raise HandshakeError(stage, "server closed the connection")
            try:
                found = self.scan(splitter.feed(data), check)
            except _Refused:
                return None
            if found is not None:
                return found

    # ----------------------------------------------------------------- receiving

    def receive(self, session: Session, leftover: list[bytes], timing: bool) -> None:
        """Receiver greenlet: read until EOF; a timing receiver parses and times each line.

        Errors become Locust failures, never tracebacks: an unexpected EOF is
        ``disconnected``, a socket or framing error ``recv_error``. A close we asked for
        (``session.closing``) is not a failure.
        """
        sock = session.sock
        counters = STATE.counters
        measuring = STATE.measuring
        try:
            if timing:
                splitter = core.LineSplitter()
                if leftover:
                    self.on_lines(session, leftover, time.time())
                while True:
                    data = sock.recv(RECV_BYTES)
                    if not data:
                        break
                    now = STATE.last_arrival = time.time()
                    lines = splitter.feed(data)
                    if lines:
                        self.on_lines(session, lines, now)
            else:
                if measuring.is_set():
                    counters["counted_lines"] += len(leftover)
                while True:
                    data = sock.recv(RECV_BYTES)
                    if not data:
                        break
                    if measuring.is_set():  # before the gate: join notices, not traffic
                        counters["counted_lines"] += data.count(b"\n")
                    STATE.last_arrival = time.time()
                    gevent.sleep(COUNT_INTERVAL_S)
            if not session.closing:
                STATE.fail("disconnected", "server closed the connection")
        except (OSError, core.ProtocolError) as exc:
            if not session.closing:
                STATE.fail("recv_error", f"receive failed: {type(exc).__name__}")
        finally:
            session.closed.set()

    def on_lines(self, session: Session, lines: list[bytes], now: float) -> None:
        """Time and check a batch of lines that all arrived by ``now`` (epoch seconds).

        Before this process's gate opens nothing is timed, counted or sequence-checked:
        only join notices arrive then, plus (with ``--processes``) the first messages of a
        worker whose gate opened a few milliseconds earlier, which are counted as
        ``early_messages``. The sequence baseline is then the first message after the gate.
        """
        counters = STATE.counters
        if not STATE.measuring.is_set():
            for raw in lines:
                kind, _msg = core.classify(raw)
                if kind is core.LineKind.MESSAGE:
                    counters["early_messages"] += 1
                elif kind is core.LineKind.ERROR:
                    STATE.fail("server_error", "unexpected ! line from the server")
            return
        now_us = int(now * 1_000_000)
        tracker = session.tracker
        fire = STATE.environment.events.request.fire if STATE.environment else None
        for raw in lines:
            kind, msg = core.classify(raw)
            if msg is not None:
                latency_us = now_us - msg.intended_us
                STATE.record_latency(latency_us)
                counters["timed"] += 1
                if fire is not None:
                    fire(
                        request_type=REQUEST_TYPE,
                        name="broadcast",
                        response_time=latency_us / 1000.0,
                        response_length=len(raw),
                        exception=None,
                        context={},
                    )
                if msg.sender != msg.stamped:
                    STATE.fail("forged", "message text names another sender than the stamp")
                verdict, missing = tracker.observe(msg.sender, msg.seq)
                if verdict is core.Verdict.LOST:
                    counters["lost_messages"] += missing
                    STATE.fail("lost", "gap in a sender's sequence")
                elif verdict is core.Verdict.REORDERED:
                    STATE.fail("reordered", "sequence number went back or repeated")
            elif kind is core.LineKind.NOTICE:
                counters["notices"] += 1
            elif kind is core.LineKind.ERROR:
                STATE.fail("server_error", "unexpected ! line from the server")
            else:
                counters["other_lines"] += 1

    # ----------------------------------------------------------------- sending

    def send_loop(self, session: Session, settings: Settings) -> bool:
        """Send on the schedule until stopped, disconnected or ``session_messages`` are out.

        Each message is stamped with the earlier of its intended send time and the moment it
        is written. A late send is thus charged from when it should have gone out
        (coordinated omission), and a sender that falls behind catches up with back-to-back
        sends rather than shifting its schedule. Because gevent's timers fire ~0.7 ms late
        (libev rounds its epoll timeout up to whole milliseconds), the sender wakes
        ``SEND_EARLY_S`` early; an early send is stamped with its real write time, so the
        margin removes the timer's bias without ever making a latency look smaller.

        Nothing is sent before the start gate opens. The schedule starts at the gate (or
        at the join, for a session that joined later), so intended send times, and with
        them ``intended``, cover the measured window only.
        """
        if not STATE.measuring.is_set():
            gevent.wait([STATE.measuring, STATE.drained, session.closed], count=1)
        if session.closed.is_set():
            return session.closing
        if not STATE.measuring.is_set() or STATE.draining or self.stopping():
            self.wait_session(session)  # the test ended before measuring started
            return session.closing or self.stopping()
        start = max(STATE.measure_started or 0.0, session.joined_at)
        schedule = core.SendSchedule(
            settings.rate, core.Arrivals(settings.arrivals), start, self.rng
        )
        limit = self.session_messages
        sock = session.sock
        STATE.sender_started()
        try:
            while limit is None or schedule.index < limit:
                intended = schedule.peek()
                delay = intended - time.time() - SEND_EARLY_S
                if delay > 0 and session.closed.wait(delay):
                    return session.closing
                if session.closed.is_set():
                    return session.closing
                drain = STATE.drain_started
                if (drain is not None and intended > drain) or self.stopping():
                    # The test is ending: send nothing that was not due before the drain.
                    self.wait_session(session)
                    return session.closing or self.stopping()
                now = time.time()
                stamp = min(intended, now)
                line = core.encode_message(
                    session.nick, schedule.index, int(stamp * 1_000_000), settings.payload
                )
                sock.sendall(line)
                schedule.advance()
                STATE.sent_by[session.nick] = schedule.index
                STATE.counters["sent"] += 1
                late = now - intended
                if late > core.LATE_SEND_S:
                    STATE.counters["late_sends"] += 1
                    STATE.max_late_send = max(STATE.max_late_send, late)
            self.finish_session(session)
            return True
        except OSError as exc:
            if not session.closing and not session.closed.is_set():
                STATE.fail("send_error", f"send failed: {type(exc).__name__}")
            return False
        finally:
            end = time.time()
            if STATE.drain_started is not None:
                end = min(end, STATE.drain_started)
            due = schedule.due_by(end)
            if limit is not None:
                due = min(due, limit)
            STATE.sender_stopped(schedule.index, due)

    def finish_session(self, session: Session) -> None:
        """Leave politely after a bounded session: ``/quit``, then wait for the server's close."""
        session.closing = True
        session.sock.sendall(b"/quit\n")
        session.closed.wait(STATE.settings.handshake_timeout)


class ChatterUser(ChatUser):
    """Always sends (and reads), whatever ``--chat-send-share`` says."""

    sends = True


class LurkerUser(ChatUser):
    """Only reads: the audience that makes a broadcast expensive."""

    sends = False


class SlowReaderUser(ChatUser):
    """Joins, then never reads again: its output buffer on the server grows until dropped.

    On the threaded engine one such client holds up the broadcast for everyone (blocking
    sends) until the send timeout drops it; the reactor should not notice. One per run by
    default (``fixed_count``).
    """

    sends = False
    reads = False
    fixed_count = 1


class ChurnUser(ChatUser):
    """Connects, chats briefly (``--chat-churn-messages``), quits, and does it again."""

    sends = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.session_messages = STATE.settings.churn_messages


class _Refused(Exception):
    """The server answered a handshake step with a ``! `` line."""


def registered_check(nick: str) -> Any:
    return lambda text: core.confirms_registration(text, nick)


def joined_check(nick: str, room: str) -> Any:
    return lambda text: core.confirms_join(text, nick, room)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
