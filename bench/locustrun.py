"""Run the Locust user from loadtest/chat.py headless, as a subprocess, and read its JSON.

A subprocess, never an import: importing locust monkey-patches socket, threading and
selectors for the whole process, which would change what the lean driver measures.
The JSON schema is loadtest's (loadtest/README.md); ``parse_report`` is the one place
that knows it, and it is unit-tested against a sample document.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from bench.servers import REPO

#: The Locust file; latency scenarios need it.
LOCUSTFILE = REPO / "loadtest" / "chat.py"

#: Extra seconds a Locust run may take beyond --run-time (start-up, spawn, shutdown).
GRACE_S = 60.0


def locust_exe() -> str | None:
    """The locust command next to this interpreter, else on PATH."""
    here = Path(sys.executable).with_name("locust")
    if here.exists():
        return str(here)
    return shutil.which("locust")


def available() -> bool:
    """True when both locust and loadtest/chat.py are present."""
    return locust_exe() is not None and LOCUSTFILE.exists()


def speaks_irc() -> bool:
    """True when loadtest's Locust user has its IRC dialect (``--chat-dialect irc``).

    Read from the source, not by importing it: importing locust monkey-patches the
    bench process (see the module docstring), and ``locust --help`` costs seconds.
    """
    for path in LOCUSTFILE.parent.glob("*.py"):
        try:
            if "--chat-dialect" in path.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


@dataclass(frozen=True)
class LocustPlan:
    """One headless Locust run that measures steady state only.

    loadtest's start gate holds the senders until every user has joined and
    ``warmup_s`` more has passed; ``--chat-measure-time`` then stops the test after
    ``window_s`` of measuring. So the window is the same for every engine however long
    its join storm takes, and ``run_time_s`` (Locust's ``-t``) is only a safety cap:
    ``fill_budget_s`` for spawning and joining, plus the warm-up and the window.
    """

    users: int
    room: int
    senders: int
    rate_per_sender: float
    payload: int
    #: seconds measured (--chat-measure-time)
    window_s: float
    spawn_rate: float
    timing_sample: float = 0.1
    slow_reader: bool = False
    #: seconds between the rooms being full and measuring (--chat-warmup)
    warmup_s: float = 1.0
    #: most seconds the spawn and join storm may take before -t cuts into the window
    fill_budget_s: float = 30.0
    #: the wire protocol: "line" (chatd's) or "irc" (loadtest's --chat-dialect irc)
    dialect: str = "line"

    @property
    def offered_rate(self) -> float:
        """Messages per second the senders are asked to send in total."""
        return self.senders * self.rate_per_sender

    @property
    def run_time_s(self) -> int:
        """Locust's --run-time: an upper bound, whole seconds (Locust's parser wants them)."""
        return math.ceil(self.fill_budget_s + self.warmup_s + self.window_s)


def command(plan: LocustPlan, host: str, port: int, out_json: Path) -> list[str]:
    """The locust command line for plan against host:port, writing out_json."""
    exe = locust_exe() or "locust"
    argv = [
        exe,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        f"{host}:{port}",
        "-u",
        str(plan.users),
        "-r",
        f"{plan.spawn_rate:g}",
        "-t",
        f"{plan.run_time_s}s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--chat-room-size",
        str(plan.room),
        "--chat-rate",
        f"{plan.rate_per_sender:g}",
        "--chat-send-share",
        repr(plan.senders / plan.users),
        "--chat-payload",
        str(plan.payload),
        "--chat-timing-sample",
        f"{plan.timing_sample:g}",
        "--chat-hist-file",
        str(out_json),
        "--chat-start-when-full",
        "--chat-warmup",
        f"{plan.warmup_s:g}",
        "--chat-measure-time",
        f"{plan.window_s:g}",
    ]
    if plan.dialect != "line":
        argv += ["--chat-dialect", plan.dialect]
    if plan.slow_reader:
        argv += ["ChatUser", "SlowReaderUser"]
    return argv


@dataclass
class LocustResult:
    """What the bench takes from Locust's JSON."""

    latency_ms: dict[str, float] | None
    offered_rate: float
    achieved_rate: float | None
    connects: int
    failures: int
    lost: int
    cpu_s: float
    cpu_util: float
    saturated: bool
    saturation_reasons: list[str]
    deliveries_per_s: float | None
    duration_s: float
    #: messages a timing receiver still lacked at the end (counted at the drain time)
    undelivered: int = 0
    #: messages the senders wrote in the measured window
    sent: int = 0
    raw_failures: dict[str, int] = field(default_factory=dict)
    #: loadtest waited for full rooms before measuring (its start gate; older JSON: False)
    start_when_full: bool = False
    #: every user had joined when measuring started (None: not waited for)
    rooms_full: bool | None = None
    #: seconds from test start until every user had joined, and until measuring started
    fill_s: float | None = None
    warmup_s: float | None = None
    #: Unix time measuring started (None: it never did, or older JSON)
    measure_started_at: float | None = None


def _num(d: dict[str, Any], *keys: str, default: float | None = None) -> Any:
    """d[k1][k2]... or default when any level is missing or None."""
    cur: Any = d
    for k in keys:
        if not isinstance(cur, dict) or cur.get(k) is None:
            return default
        cur = cur[k]
    return cur


def _censored(hdr: str, undelivered: int, drain_s: float) -> dict[str, float] | None:
    """Percentiles (ms) with the undelivered messages added at the drain time.

    Loadtest leaves messages that never arrived out of its histogram; the lean driver
    counts them at its wait (a lower bound on their latency). Doing the same here keeps
    the two tools' figures comparable. None if hdrh is not importable.
    """
    try:
        from hdrh.histogram import HdrHistogram
    except ImportError:
        return None
    h = HdrHistogram.decode(hdr)
    h.record_value(int(drain_s * 1e6), undelivered)
    out = {
        key: h.get_value_at_percentile(pct) / 1000.0
        for key, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))
    }
    out["max"] = h.get_max_value() / 1000.0
    out["count"] = float(h.get_total_count())
    return out


def parse_report(doc: dict[str, Any], offered_rate: float) -> LocustResult:
    """Turn loadtest's JSON document into the figures the report uses.

    Latency: the HDR percentiles in microseconds (``latency_us``), converted to ms.
    Achieved send rate: offered x sent / intended, because ``intended`` and ``sent`` are
    both counted by each sender from its own start (with the start gate: from the gate),
    while without the gate dividing by the whole run's duration would count the spawn
    ramp against the sender. Undelivered messages enter the percentiles at the drain
    timeout (see ``_censored``). The ``warmup`` keys are optional (older loadtest JSON
    has none; such a run counts as measured from test start).
    """
    lat = doc.get("latency_us") or {}
    undelivered = int(_num(doc, "delivery", "undelivered", default=0) or 0)
    drain_s = float(_num(doc, "options", "drain_timeout", default=2.0) or 2.0)
    latency: dict[str, float] | None = None
    if lat.get("count"):
        keys = {"p50": "p50", "p90": "p90", "p99": "p99", "p999": "p99_9", "max": "max"}
        latency = {k: lat[src] / 1000.0 for k, src in keys.items() if lat.get(src) is not None}
        latency["count"] = float(lat["count"])
        if undelivered and lat.get("hdr"):
            latency = _censored(lat["hdr"], undelivered, drain_s) or latency
    intended = _num(doc, "messages", "intended", default=0) or 0
    sent = _num(doc, "messages", "sent", default=0) or 0
    achieved = offered_rate * sent / intended if intended else None
    duration = float(doc.get("duration_s") or 0.0)
    lg = doc.get("load_generator") or {}
    cpu_s = float(lg.get("cpu_seconds") or 0.0)
    # Counting receivers also count join notices as lines, so scale the timing
    # receivers' message count up to all receivers instead.
    received = doc.get("received") or {}
    timers = received.get("timing_receivers") or 0
    readers = timers + (received.get("counting_receivers") or 0)
    deliveries = (received.get("timed") or 0) * readers / timers if timers else None
    failures = doc.get("failures") or {}
    warmup = doc.get("warmup") or {}
    started = doc.get("measure_started_at")
    return LocustResult(
        latency_ms=latency,
        offered_rate=offered_rate,
        achieved_rate=achieved,
        connects=int(_num(doc, "connect", "count", default=0) or 0),
        failures=int(failures.get("total") or 0),
        lost=int(failures.get("lost_messages") or 0),
        cpu_s=cpu_s,
        cpu_util=float(lg.get("cpu_percent") or 0.0) / 100.0,
        saturated=bool(lg.get("saturated")),
        saturation_reasons=list(lg.get("saturation_reasons") or []),
        deliveries_per_s=deliveries / duration if deliveries and duration > 0 else None,
        duration_s=duration,
        undelivered=undelivered,
        sent=int(sent),
        raw_failures=dict(failures.get("by_kind") or {}),
        start_when_full=bool(warmup.get("start_when_full")),
        rooms_full=warmup.get("full"),
        fill_s=_num(doc, "warmup", "fill_s"),
        warmup_s=_num(doc, "warmup_s"),
        measure_started_at=float(started) if started is not None else None,
    )


@dataclass
class LocustRun:
    """A finished Locust subprocess: its parsed result, or why there is none."""

    result: LocustResult | None
    argv: list[str]
    returncode: int | None
    wall_s: float
    error: str = ""


def run(plan: LocustPlan, host: str, port: int, workdir: Path, cpus: set[int] | None) -> LocustRun:
    """Run Locust once, pinned to the load-generator CPU, and parse its JSON.

    Bounded: killed after run_time + GRACE_S. A missing or unreadable JSON is an error
    the caller records as an invalid run.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out_json = workdir / f"locust-{time.monotonic_ns()}.json"
    log_path = out_json.with_suffix(".log")
    argv = command(plan, host, port, out_json)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(LOCUSTFILE.parent) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )

    def pin_child() -> None:
        if cpus:
            procstat.pin(0, cpus)

    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
            preexec_fn=pin_child,  # noqa: PLW1509 (the bench is single-threaded here)
        )
        try:
            rc = proc.wait(timeout=plan.run_time_s + GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return LocustRun(None, argv, None, time.monotonic() - t0, "locust timed out")
    wall = time.monotonic() - t0
    try:
        doc = json.loads(out_json.read_text())
    except (OSError, ValueError) as exc:
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        return LocustRun(None, argv, rc, wall, f"no JSON from locust ({exc}): {tail}")
    return LocustRun(parse_report(doc, plan.offered_rate), argv, rc, wall)
