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
        self.users: dict[str, Any] = {}
        self.tag = ""
        self.running = False
        self._reset_measurements()

    def _reset_measurements(self) -> None:
        self.hist = core.new_histogram()
        self.counters = dict.fromkeys(core.COUNTERS, 0)
        self.failures: dict[str, int] = {}
        self.saturated: set[str] = set()
        self.cpu_peak = 0.0
        self.max_late_send = 0.0
        self.senders_active = 0
        self.senders_peak = 0
        self.next_slot = 0
        self.next_serial = 0
        self.users_peak = 0
        self.started_wall = time.time()
        self.started_cpu = self._cpu_now()
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
        self._reset_measurements()
        self.remote.clear()
        self.users = {}
        self.running = True
        if self.sampler is not None:
            self.sampler.kill(block=False)
        self.process.cpu_percent(None)  # prime: the next call measures since now
        self.sampler = gevent.spawn(self._sample_cpu)

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

    def _sample_cpu(self) -> None:
        """Track peak CPU and the user count; flag saturation like Locust's cpu_warning."""
        while True:
            gevent.sleep(CPU_SAMPLE_S)
            pct = self.process.cpu_percent(None)
            self.cpu_peak = max(self.cpu_peak, pct)
            if pct >= CPU_WARNING_THRESHOLD:
                self.saturate(f"cpu sample >= {CPU_WARNING_THRESHOLD}%")
            runner = self.environment.runner if self.environment else None
            if runner is not None:
                self.users_peak = max(self.users_peak, runner.user_count)

    def saturate(self, reason: str) -> None:
        """Mark this process's measurements as possibly distorted by its own CPU load."""
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
        """This process's cumulative measurements (frozen once the test stopped)."""
        wall_end = self.stopped_wall if self.stopped_wall is not None else time.time()
        cpu_end = self.stopped_cpu if self.stopped_cpu is not None else self._cpu_now()
        wall = max(wall_end - self.started_wall, 0.0)
        cpu = max(cpu_end - self.started_cpu, 0.0)
        reasons = set(self.saturated)
        if wall >= 1.0 and 100.0 * cpu / wall >= CPU_WARNING_THRESHOLD:
            reasons.add(f"mean cpu >= {CPU_WARNING_THRESHOLD}%")
        return core.Snapshot(
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
            duration_s=send_end - self.started_wall,
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
    elif isinstance(runner, MasterRunner):
        runner.register_message(DRAINED_MSG, on_drained_message)


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
            return False
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
                counters["counted_lines"] += len(leftover)
                while True:
                    data = sock.recv(RECV_BYTES)
                    if not data:
                        break
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
        """Time and check a batch of lines that all arrived by ``now`` (epoch seconds)."""
        now_us = int(now * 1_000_000)
        counters = STATE.counters
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
        """
        schedule = core.SendSchedule(
            settings.rate, core.Arrivals(settings.arrivals), time.time(), self.rng
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
