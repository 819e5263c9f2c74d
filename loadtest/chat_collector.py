"""Per-process measurement state of the load test: the ``Collector`` (one per process).

It holds what one Locust process measures (histogram, counters, failures, CPU), runs the
start gate and the end-of-test drain, merges the workers' snapshots on a master, writes the
JSON report and prints the verdict. ``chat.py`` wires Locust's events to it;
``chat_client.ChatClient`` reports every connect, join, message and failure to it. The
decisions (what counts, what the report says, what passes) live in the sans-IO modules
``chat_core`` and ``chat_verdict``.

gevent runs one greenlet at a time, so plain counters need no locks.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import string
import sys
import time
from typing import Any

import gevent
import locust
import psutil
from gevent.event import Event
from locust.env import Environment
from locust.runners import CPU_WARNING_THRESHOLD, MasterRunner, WorkerRunner

# isort: split
import chat_core as core
import chat_verdict as verdict
from chat_options import Settings

log = logging.getLogger("chatd.loadtest")

#: Request type shown in Locust's statistics for every event the load test fires.
REQUEST_TYPE = "chat"
#: How often each process samples its own CPU use (seconds). Locust's own ``cpu_warning``
#: checks only every 10 s, too coarse for short runs.
CPU_SAMPLE_S = 2.0
#: The drain polls this often, and ends once no receiver has read for DRAIN_QUIET_S.
DRAIN_POLL_S = 0.05
DRAIN_QUIET_S = 0.25
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


def host_problem(environment: Environment, settings: Settings) -> str | None:
    """What is wrong with the target, or None: ``--host`` (one host or a comma-separated
    list, every entry checked) must parse, unless user classes bring their own ``host`` (a
    custom scenario may). The message names the bad entry."""
    if not environment.host and any(getattr(c, "host", None) for c in environment.user_classes):
        return None
    try:
        targets(environment.host, settings)
    except ValueError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=16)
def targets(hosts: str | None, settings: Settings) -> tuple[core.Target, ...]:
    """``chat_core.parse_hosts``, parsed once per ``--host`` rather than once per user,
    by the settings' rules (the default port, and over WebSocket the URL's scheme)."""
    return core.parse_hosts(
        hosts, settings.default_port, transport=settings.transport, tls=settings.tls
    )


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
        #: The verdict of this run was printed; the exit code was set by us.
        self.printed = False
        self.exit_code_set = False
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
        #: Which users of this process went to which target, and sessions that registered
        #: on each target (by ``Target.label``).
        self.host_slots = core.HostSlots()
        self.host_connects: dict[str, int] = {}
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
        #: Clients whose receiver times messages, for the end-of-test accounting.
        self.timing_clients: set[Any] = set()
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
        self.tag = "".join(
            random.choices(string.ascii_lowercase + string.digits, k=core.NICK_TAG_LEN)
        )
        self.printed = False
        if self.exit_code_set:  # a web-UI run again: the new verdict decides
            environment.process_exit_code = None
            self.exit_code_set = False
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
        if not isinstance(environment.runner, WorkerRunner):
            problem = host_problem(environment, self.settings)
            if problem:  # the web UI's host field; the command line was checked at init
                log.error("%s: not starting", problem)
                gevent.spawn(self.end_test)
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
        joined, expected = self.fill.total_joined, self.fill.expected
        if joined == 0:
            # Nothing to measure. Say what is most likely wrong, once, and end the run
            # rather than let every user retry until --run-time.
            log.error(
                "0 of %s users joined — is anything listening on %s?",
                expected,
                self.target(),
            )
            self.end_test()
            return
        if self.was_full and joined == expected:
            log.info(
                "rooms full after %.2f s (%d users joined); measuring in %.1f s",
                fill_s,
                joined,
                self.settings.warmup,
            )
        elif self.was_full:
            log.warning(
                "only %d of %s users joined (the others failed, see the failures); "
                "measuring anyway",
                joined,
                expected,
            )
        else:
            log.warning(
                "only %d of %s users had finished joining after %.1f s (%d joined); "
                "measuring anyway",
                self.fill.total_settled,
                expected,
                fill_s,
                joined,
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
        if self.generation != generation or not self.running:
            return
        log.info("measured for %.1f s (--chat-measure-time), stopping", self.settings.measure_time)
        self.end_test()

    def end_test(self) -> None:
        """Stop the test as ``--run-time`` would: quit when headless, stop in the web UI."""
        env = self.environment
        if env is None or env.runner is None or not self.running:
            return
        if getattr(env.parsed_options, "headless", False):
            env.runner.quit()
        else:
            env.runner.stop()

    def target(self) -> str:
        """``HOST:PORT`` of the target(s) as the users connect to them (or the raw --host);
        several hosts are separated by ", "."""
        return ", ".join(self.host_labels()) or str(
            self.environment.host if self.environment else None
        )

    def host_labels(self) -> list[str]:
        """The ``--host`` entries' labels in order (none when it does not parse)."""
        host = self.environment.host if self.environment else None
        try:
            return [t.label for t in targets(host, self.settings)]
        except ValueError:
            return []

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
        for client in self.timing_clients:
            for sender, n in client.tracker.received_counts().items():
                seen[sender] = seen.get(sender, 0) + 1
                received[sender] = received.get(sender, 0) + n
        self.delivery = core.Delivery(seen, received, dict(self.sent_by), self.drain_s)
        self.drained.set()

    # ----------------------------------------------------------------- identities

    def _worker(self) -> tuple[int, int]:
        """(this worker's index, number of workers): (0, 1) outside distributed runs."""
        runner = self.environment.runner if self.environment else None
        worker_index = max(getattr(runner, "worker_index", 0), 0)
        workers = 1
        if isinstance(runner, WorkerRunner) and self.environment is not None:
            workers = int(getattr(self.environment.parsed_options, "expect_workers", 1) or 1)
        return worker_index, workers

    def assign_slot(self) -> tuple[int, int]:
        """(slot, global index) of a newly created user (see ``chat_core``)."""
        worker_index, workers = self._worker()
        slot = self.next_slot
        self.next_slot += 1
        return slot, core.global_index(slot, worker_index, workers)

    def assign_host(self, index: int, slot: int, hosts: str | None) -> tuple[str | None, int]:
        """(``--host`` entry, host slot) of a new user with global ``index`` and ``slot``.

        The entry is ``hosts``' entry ``index % len(hosts)`` (round-robin over the global
        index, so the same users go to the same hosts in every run and worker); the host
        slot counts this process's users assigned to that host before this one, and picks
        the user's role (``chat_core.HostSlots``). With one host it equals ``slot``. A
        ``hosts`` that does not parse (only the web UI's form gets here, and the run is
        ending) is passed on whole with ``slot``: the client reports it at connect, as before.
        """
        try:
            choices = targets(hosts, self.settings)
        except ValueError:
            return hosts, slot
        target, host_slot = self.host_slots.assign(choices, index)
        return target.entry, host_slot

    def host_connected(self, label: str) -> None:
        """A session registered on the target ``label`` (``chat_core.host_label``)."""
        self.host_connects[label] = self.host_connects.get(label, 0) + 1

    def new_nick(self) -> str:
        """A nick no other session of this run uses: tag, worker index and serial."""
        worker_index, workers = self._worker()
        self.next_serial += 1
        return core.make_nick(self.tag, worker_index, self.next_serial, workers)

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
            host_users=dict(self.host_slots.users),
            host_connects=dict(self.host_connects),
        )

    def report(self) -> dict[str, Any]:
        """The merged report of this run so far (master or local process)."""
        env = self.environment
        assert env is not None
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
        options = self.settings.as_dict()
        options.update(
            users=getattr(env.parsed_options, "num_users", None),
            spawn_rate=getattr(env.parsed_options, "spawn_rate", None),
            run_time=getattr(env.parsed_options, "run_time", None),
            processes=getattr(env.parsed_options, "processes", None),
            user_classes=[cls.__name__ for cls in env.user_classes],
        )
        users = {"peak": self.users_peak, "by_class": self.users.get("by_class", {})}
        return core.build_report(
            snaps,
            duration_s=duration,
            measure_started_at=measure,
            warmup=warmup,
            drain_s=max((s.delivery.drain_s for s in snaps if s.delivery), default=0.0),
            options=options,
            host=env.host or "",
            hosts=self.host_labels(),
            label=self.settings.label,
            dialect=self.settings.dialect,
            transport=self.settings.transport,
            started_at=self.started_wall,
            stopped_at=wall_end,
            users=users,
            rate_per_sender=self.settings.rate,
            cpu_count=os.cpu_count(),
            locust_version=locust.__version__,
        )

    def writes_report(self) -> bool:
        """Only the master (or the single local process) merges, writes and judges."""
        env = self.environment
        return env is not None and not isinstance(env.runner, WorkerRunner)

    def write_report(self, final: bool = False) -> dict[str, Any] | None:
        """Write the merged JSON (master or local process only); atomic via rename.

        Returns the report (None on a worker). Nothing is written without
        ``--chat-hist-file``, but the report is still built for the verdict.
        """
        if not self.writes_report():
            return None
        report = self.report()
        path = self.settings.hist_file
        if path:
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
            "report%s: %d broadcast samples, p50 %s us, p99 %s us, %d failures%s",
            f" written to {path}" if path else "",
            lat["count"],
            lat["p50"],
            lat["p99"],
            report["failures"]["total"],
            ", SATURATED" if report["load_generator"]["saturated"] else "",
        )
        return report

    @property
    def complete(self) -> bool:
        """The test stopped and every process's post-drain figures are in.

        A local process is complete at its own stop. A master needs a snapshot with the
        delivery accounting from every worker it drained (with the drain off: any report
        after the stop); Locust's final worker reports arrive after the master's
        ``test_stop``.
        """
        if self.stopped_wall is None:
            return False
        env = self.environment
        if not isinstance(env.runner if env else None, MasterRunner):
            return True
        if not self.remote:
            return False
        if self.settings.drain_timeout <= 0:
            return True
        return all(snap.delivery is not None for snap in self.remote.values())

    def judge(self, report: dict[str, Any]) -> verdict.Judgement:
        return verdict.judge(report, self.settings.max_p99_ms)

    def finish(self, final: bool = False) -> None:
        """Write the report and, once per run, print the verdict block and set the exit code.

        Called at test stop, on late worker reports and at quitting (``final``): the block
        is printed as soon as the figures are complete (or at quitting, whatever arrived).
        The exit code becomes non-zero when the verdict fails; a passing verdict leaves
        Locust's own rule (non-zero on any recorded failure) alone.
        """
        env = self.environment
        if env is None or self.stopped_wall is None or not self.writes_report():
            return
        report = self.write_report(final=final)
        if report is None or self.printed:
            return
        # A headless master waits for quitting: Locust's final worker reports (with the
        # workers' CPU up to their stop) arrive only after its test_stop.
        headless = bool(getattr(env.parsed_options, "headless", False))
        if not (
            final or (self.complete and not (headless and isinstance(env.runner, MasterRunner)))
        ):
            return
        self.printed = True
        judgement = self.judge(report)
        sys.stdout.write(verdict.summary(report, judgement) + "\n")
        sys.stdout.flush()
        if not judgement.passed:
            env.process_exit_code = judgement.exit_code
            self.exit_code_set = True

    def web_rows(self) -> list[dict[str, str]]:
        """The verdict tab's rows: the live report while running, the final one after."""
        if not self.writes_report():
            return []
        report = self.report()
        if self.running:
            status = "running"
        elif self.stopped_wall is None:
            status = "idle"
        else:
            status = "final" if self.complete else "stopping"
        return verdict.web_rows(report, self.judge(report), status)


#: The process's collector. Locust runs one test per process at a time (a web-UI run again
#: resets it at ``test_start``).
STATE = Collector()
