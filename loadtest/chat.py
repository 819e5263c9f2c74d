"""Locust load test for chatd (and any IRC server): broadcast latency, loss and a verdict.

Run ``locust -f loadtest/chat.py --host 127.0.0.1:4040`` (web UI) or add
``--headless -u 1000 -r 200 -t 60s``; add ``--chat-dialect irc`` to speak IRC to chatd's
IRC listener, ngircd or InspIRCd. ``loadtest/README.md`` explains every option and number.

How it fits together
--------------------
* Each Locust user owns one ``chat_client.ChatClient`` (``self.client``): it connects over
  TCP (Locust has gevent-patched ``socket``, so blocking calls yield) to its entry of
  ``--host`` (a list spreads the users round-robin over a cluster's nodes), registers a unique
  nick, joins its room and then runs a *receiver greenlet* for the rest of the session
  while the user greenlet itself sends on a fixed schedule. The receiver is spawned outside
  the runner's user group, so Locust does not count it as a user; ``on_stop`` kills it.
  ``ChatClientUser`` is the abstract base: a custom scenario subclasses it and writes
  ordinary ``@task`` methods calling ``self.client.say()`` with a ``wait_time``.
* Latency is measured receiver-side from the message's *intended* send time (see
  ``chat_core``), reported to Locust as a ``broadcast`` request and recorded in a per-process
  HDR histogram. Locust's own statistics round to whole milliseconds below 100 ms; the
  histogram keeps microseconds and is what the JSON file and the benchmarks use.
* Only a sample of receivers parse and time (``--chat-timing-sample``); the rest count
  newlines (and answer IRC ``PING``s), one ``recv`` per ``COUNT_INTERVAL_S``.
* Measuring starts at a *gate* (``--chat-start-when-full``, on by default): once every
  spawned user has finished its first handshake -- the rooms are full -- plus
  ``--chat-warmup``. Until then senders wait and receivers neither time nor count. A single
  process decides by itself; with workers the master decides and tells them (see
  ``Collector.open_gate``). If no user could join at all, the run ends there with one line
  asking whether anything listens on the target.
* At test stop (``test_stopping``, before Locust kills the users) every process *drains*:
  senders stop, receivers keep reading until the room is quiet, and the messages some timing
  receiver never got are counted (``delivery`` in the JSON). A master tells its workers to
  drain with a custom message and waits for their acknowledgements.
* Workers send cumulative snapshots to the master with every stats report; the master
  keeps the newest per worker, so merging is idempotent. The master (or the single local
  process) writes the JSON, prints the verdict block (``chat_verdict``) and sets Locust's
  ``process_exit_code`` when the verdict fails; the web UI shows the same verdict in its
  "Chat verdict" tab (``chat_webui``).

This file is Locust plumbing and the user classes; the I/O is ``chat_client.py``, the
per-process state ``chat_collector.py``, the decisions the sans-IO modules ``chat_core``,
``chat_options`` and ``chat_verdict`` and the load library ``chatload``.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from typing import Any

import gevent
from locust import User, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING

# isort: split
# Sibling modules: Locust puts the locustfile's directory on sys.path while importing it.
import chat_core as core
import chat_webui
from chat_client import CLIENTS, ChatClient, HandshakeError, IrcChatClient, LineChatClient
from chat_collector import DRAIN_POLL_S, FILL_MSG, START_MSG, STATE, host_problem
from chat_options import Settings, add_options

__all__ = [
    "ChatClient",
    "ChatClientUser",
    "ChatUser",
    "ChatterUser",
    "ChurnUser",
    "IrcChatClient",
    "LineChatClient",
    "LurkerUser",
    "SlowReaderUser",
]

#: Key under which workers attach their snapshot to Locust's stats report.
REPORT_KEY = "chatd_loadtest"
#: Pause before reconnecting after a failed or dropped session, so a dead server produces
#: a steady trickle of failures rather than a busy loop.
RECONNECT_BACKOFF_S = 1.0
#: How early a sender's timer is set before the intended send time. libev rounds epoll
#: timeouts up to whole milliseconds, so timers overshoot by ~0.7 ms at the median; waking
#: 1 ms early sends most messages within a few hundred microseconds of their slot.
SEND_EARLY_S = 0.001
#: Extra time the master gives workers to acknowledge their drain (message round trip).
DRAIN_ACK_GRACE_S = 1.0
#: Custom Locust messages: master -> workers "drain now", worker -> master "drained".
DRAIN_MSG = "chatd_drain"
DRAINED_MSG = "chatd_drained"
#: How often a parked user checks whether Locust asked it to stop gracefully.
STOP_POLL_S = 0.2

log = logging.getLogger("chatd.loadtest")
#: Kinds of unexpected session errors already logged with their traceback.
_logged_errors: set[str] = set()


# --------------------------------------------------------------------------- Locust events


@events.init_command_line_parser.add_listener
def on_command_line_parser(parser: Any, **_kw: Any) -> None:
    add_options(parser)


@events.init.add_listener
def on_init(environment: Environment, **_kw: Any) -> None:
    """Validate options and ``--host`` early, pick the default users, install the UI tab.

    A typo or a bad ``--host`` ends the run here with one line, before any user starts
    (headless without ``--host`` too; the web UI may still get the host in its form). With
    no user classes named on the command line (and no class picker), this file runs only
    ``ChatUser``; the scenario classes are opt-in by name.
    """
    STATE.environment = environment
    runner = environment.runner
    opts = environment.parsed_options
    if opts is not None:
        try:
            settings = Settings.from_options(opts)
        except ValueError as exc:
            sys.exit(f"loadtest/chat.py: {exc}")  # SystemExit passes through Locust's fire()
        if not isinstance(runner, WorkerRunner) and (environment.host or opts.headless):
            problem = host_problem(environment, settings)
            if problem:
                sys.exit(f"loadtest/chat.py: {problem}")
        picked = getattr(opts, "user_classes", None) or getattr(opts, "class_picker", False)
        classes = environment.user_classes
        if not picked and not isinstance(runner, WorkerRunner) and ChatUser in classes:
            classes[:] = [ChatUser]
    if isinstance(runner, WorkerRunner):
        runner.register_message(DRAIN_MSG, on_drain_message, concurrent=True)
        runner.register_message(START_MSG, on_start_message)
    elif isinstance(runner, MasterRunner):
        runner.register_message(DRAINED_MSG, on_drained_message)
        runner.register_message(FILL_MSG, on_fill_message)
    if environment.web_ui is not None:
        chat_webui.install(environment.web_ui, STATE.web_rows)


def on_fill_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Master: a worker's join progress (cumulative counts of its users)."""
    data = msg.data or {}
    STATE.fill.update(str(msg.node_id), int(data.get("settled", 0)), int(data.get("joined", 0)))


def on_start_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Worker: the master saw every room full and the warm-up pass: start measuring."""
    if STATE.running:
        STATE.open_gate()


def on_drain_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Worker: the master asks every worker to drain before it stops them.

    The acknowledgement carries the worker's snapshot with its delivery accounting: Locust
    waits only 0.5 s for the workers' final stats reports after ``quit``, which a busy
    machine can miss, and the drained figures must not depend on that.
    """
    STATE.drain()
    environment.runner.send_message(
        DRAINED_MSG,
        {"client_id": environment.runner.client_id, REPORT_KEY: STATE.snapshot("worker").to_wire()},
    )


def on_drained_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    """Master: a worker finished its drain; its snapshot is the newest (messages keep order)."""
    node = str(msg.node_id)
    STATE.drain_acks.add(node)
    data = msg.data or {}
    if REPORT_KEY in data:
        STATE.remote[node] = core.Snapshot.from_wire(data[REPORT_KEY])


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
    STATE.finish()


@events.quitting.add_listener
def on_quitting(environment: Environment, **_kw: Any) -> None:
    """Last write and the verdict: on a master, workers' final reports come after test_stop."""
    if STATE.environment is not None and STATE.stopped_wall is not None:
        STATE.finish(final=True)


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
        STATE.finish()


# --------------------------------------------------------------------------- users


class ChatClientUser(User):
    """The base of every chat user: one ``ChatClient`` in ``self.client``, nothing else.

    Subclass it for a custom scenario: ordinary ``@task`` methods and a ``wait_time``::

        class Talker(ChatClientUser):
            wait_time = between(0.5, 1.5)

            @task
            def talk(self):
                self.client.say()      # joins first if needed; fires "say"

    ``self.client`` speaks ``--chat-dialect`` (or ``client_class``) to the user's entry of
    ``--host`` (round-robin over a list of several), joins the user's room
    (``--chat-room-size`` blocks of users) on first use and reads in the background,
    timing messages if ``--chat-timing-sample`` picks the user (or ``timing`` says so):
    its broadcasts, losses and failures go into the same report and verdict as the
    built-in users'. Set ``receive_in_background = False`` to read with
    ``self.client.receive()`` in the tasks instead.
    """

    abstract = True
    #: The client class; None: the one for ``--chat-dialect``.
    client_class: type[ChatClient] | None = None
    #: True/False: this user's receiver times messages or only counts them; None: decided
    #: by ``--chat-timing-sample``.
    timing: bool | None = None
    #: Start a background receiver once joined; False: the tasks call ``client.receive()``.
    receive_in_background: bool = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.slot, self.index = STATE.assign_slot()
        #: The ``--host`` entry this user connects to (entry ``index % len(hosts)``), and
        #: its host slot, which picks its role (see ``chat_core``; the slot for one host).
        self.target_host, self.host_slot = STATE.assign_host(
            self.index, self.slot, self.host or self.environment.host
        )
        self.rng = random.Random()
        #: Whether this user's first handshake is over (the start gate counts them).
        self.settled = False
        self.client = self.new_client()

    def new_client(self) -> ChatClient:
        """The user's client: ``client_class`` or the ``--chat-dialect`` one."""
        cls = self.client_class or CLIENTS[STATE.settings.dialect]
        return cls(
            self.target_host,
            room=self.room,
            timeout=STATE.settings.handshake_timeout,
            settle=self.settle,
            timing=self.will_time(),
            background=self.receive_in_background,
            tls=STATE.settings.tls_context(),
            transport=STATE.settings.transport,
        )

    @property
    def room(self) -> str:
        return core.room_for(self.index, STATE.settings.room_size)

    def will_time(self) -> bool:
        if self.timing is not None:
            return self.timing
        return core.spread_early(self.host_slot, STATE.timing_sample)

    def settle(self, joined: bool) -> None:
        """Count this user's first handshake as over, once, for the start gate."""
        if not self.settled:
            self.settled = True
            STATE.user_settled(joined)

    def on_stop(self) -> None:
        self.client.close()


class ChatUser(ChatClientUser):
    """A chat client; whether it sends is decided per user by ``--chat-send-share``.

    The default user class. Subclasses fix the role for scenarios. Every user also reads,
    except ``SlowReaderUser``. Senders use the rate and arrival pattern options.
    """

    wait_time = constant(0)
    #: True/False force sending; None lets ``--chat-send-share`` decide per user.
    sends: bool | None = None
    #: False: stop reading once joined (the slow-reader scenario).
    reads: bool = True
    #: Messages per session before quitting; None: chat until the test stops.
    session_messages: int | None = None

    def will_send(self) -> bool:
        if self.sends is not None:
            return self.sends
        return core.spread(self.host_slot, STATE.send_share)

    # ----------------------------------------------------------------- main loop

    @task
    def chat(self) -> None:
        """Run sessions back to back until Locust stops the user.

        Returns only when Locust asks for a graceful stop (``--stop-timeout``); otherwise
        Locust kills the greenlet and ``on_stop`` cleans up. Once the test drains, the user
        parks in ``wait_session`` with its receiver still reading.
        """
        while not self.stopping():
            try:
                ok = self.run_session()
            except Exception as exc:
                # A bug here would otherwise make Locust restart the task at once, forever,
                # with a traceback each time: log it once, count it, and back off instead.
                if type(exc).__name__ not in _logged_errors:
                    _logged_errors.add(type(exc).__name__)
                    log.exception("unexpected error in a chat session (logged once per kind)")
                STATE.fail("user_error", f"unexpected {type(exc).__name__}")
                ok = False
            if self.stopping():
                return
            self.client.close()
            if not ok:
                gevent.sleep(RECONNECT_BACKOFF_S * (0.5 + self.rng.random()))
            else:
                self.between_sessions()

    def stopping(self) -> bool:
        """Locust asked this user to stop gracefully (it waits ``--stop-timeout`` for us)."""
        return self._state == LOCUST_STATE_STOPPING

    def wait_session(self, connected: bool = True) -> None:
        """Block until the connection ends or Locust asks us to stop gracefully.

        Locust's graceful stop (``--stop-timeout``) only flags the user; it does not wake it.
        Polling the flag all test long would cost every idle user five wake-ups a second, so
        users sleep until the connection ends or the drain is over (``STATE.drained``), and
        poll only after that, when the stop is imminent. Without ``--stop-timeout`` Locust
        simply kills the greenlet in this wait.
        """
        closed = self.client.closed
        waits = [STATE.drained, closed] if connected else [STATE.drained]
        while not self.stopping():
            if connected and closed.is_set():
                return
            if STATE.drained.is_set():
                # The stop is near: only now is polling worth its wake-ups.
                gevent.sleep(STOP_POLL_S)
            else:
                gevent.wait(waits, count=1)

    def between_sessions(self) -> None:
        """Pause after a session that ended normally (only churn sessions end normally)."""
        gevent.sleep(RECONNECT_BACKOFF_S * (0.5 + self.rng.random()))

    def run_session(self) -> bool:
        """Connect, register, join, then read and/or send. False if it ended in a failure."""
        settings = STATE.settings
        if STATE.draining:
            self.wait_session(connected=False)  # the test is ending: no new sessions
            return True
        client = self.client
        deadline = time.monotonic() + settings.handshake_timeout
        try:
            client.connect(deadline=deadline)
            client.join(self.room, deadline=deadline)
        except HandshakeError:
            return False
        if self.reads:
            client.start_receiver(self.will_time())
        if self.will_send():
            return self.send_loop(settings)
        self.wait_session()  # a reader reads until the connection ends or we stop
        return client.closing or self.stopping()

    # ----------------------------------------------------------------- sending

    def send_loop(self, settings: Settings) -> bool:
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
        client = self.client
        closed = client.closed
        if not STATE.measuring.is_set():
            gevent.wait([STATE.measuring, STATE.drained, closed], count=1)
        if closed.is_set():
            return client.closing
        if not STATE.measuring.is_set() or STATE.draining or self.stopping():
            self.wait_session()  # the test ended before measuring started
            return client.closing or self.stopping()
        start = max(STATE.measure_started or 0.0, client.joined_at)
        schedule = core.SendSchedule(
            settings.rate, core.Arrivals(settings.arrivals), start, self.rng
        )
        limit = self.session_messages
        nick = client.nick
        STATE.sender_started()
        try:
            while limit is None or schedule.index < limit:
                intended = schedule.peek()
                delay = intended - time.time() - SEND_EARLY_S
                if delay > 0 and closed.wait(delay):
                    return client.closing
                if closed.is_set():
                    return client.closing
                drain = STATE.drain_started
                if (drain is not None and intended > drain) or self.stopping():
                    # The test is ending: send nothing that was not due before the drain.
                    self.wait_session()
                    return client.closing or self.stopping()
                now = time.time()
                client.send_stamped(schedule.index, int(min(intended, now) * 1_000_000))
                schedule.advance()
                STATE.sent_by[nick] = schedule.index
                STATE.counters["sent"] += 1
                late = now - intended
                if late > core.LATE_SEND_S:
                    STATE.counters["late_sends"] += 1
                    STATE.max_late_send = max(STATE.max_late_send, late)
            client.quit()
            return True
        except OSError as exc:
            if not client.closing and not closed.is_set():
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
    default (``fixed_count``). Over IRC it never answers ``PING`` either, so the server
    drops it at its ping timeout at the latest.
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
