"""Count a server's send syscalls from outside, with ``perf stat`` on syscall tracepoints.

Why: "sends per delivery" is the mechanism behind the saturation knee (a reactor that
merges many lines into one send per member per loop turn makes far fewer sends than an
engine that sends each batch to each member), and it must be measured, not argued.

Why perf and not /proc/PID/io: ``syscw`` there counts write(2) and writev(2) but not
send(2)/sendto(2)/sendmsg(2) (tests/test_bench.py checks it: ``socket.send`` calls leave
syscw as it was), and Python's ``socket.send`` is sendto(2), while redis-server and ngircd use
write(2). The tracepoints ``syscalls:sys_enter_*`` count every one of them exactly, per
process (all threads), whichever call a server uses.

Cost: while a syscall tracepoint is enabled, every syscall on the machine takes the
kernel's slower traced path. So the bench counts in separate *counting steps* (the same
traffic at a rate it has already measured), never in a step whose latency it reports.

perf starts with its events disabled (``-D -1``) and is switched on and off through a
control pipe (``--control fd:CTL,ACK``), so the count covers exactly the step.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

#: The syscalls that put bytes on a socket, whichever a server uses.
SEND_SYSCALLS: tuple[str, ...] = ("sendto", "sendmsg", "sendmmsg", "write", "writev")

#: Seconds to wait for perf to acknowledge a control command.
ACK_TIMEOUT_S = 5.0


def events() -> list[str]:
    return [f"syscalls:sys_enter_{name}" for name in SEND_SYSCALLS]


@functools.cache
def unavailable() -> str | None:
    """Why send syscalls cannot be counted here, or None when they can."""
    exe = shutil.which("perf")
    if exe is None:
        return "perf not installed (Debian: linux-perf)"
    try:
        out = subprocess.run(
            [exe, "stat", "-x", ",", "-e", ",".join(events()), "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf stat failed: {exc}"
    counted = parse_output(out.stderr)
    if out.returncode != 0 or "write" not in counted:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
        return f"perf cannot count syscall tracepoints: {tail[0][:200]}"
    return None


def parse_output(text: str) -> dict[str, int]:
    """{syscall: count} from ``perf stat -x ,`` output; '<not counted>' lines are left out.

    A line is ``COUNT,UNIT,EVENT,RUNTIME,PERCENT,...``, e.g.
    ``1247,,syscalls:sys_enter_sendto,52697678,100.00,,``.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3 or not parts[2].startswith("syscalls:sys_enter_"):
            continue
        try:
            n = int(parts[0])
        except ValueError:
            continue
        out[parts[2].removeprefix("syscalls:sys_enter_")] = n
    return out


class SendCounter:
    """``perf stat`` attached to one process, counting only between enable() and disable().

    Use as a context manager; ``counts`` holds {syscall: count} after exit, and
    ``total`` their sum.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.counts: dict[str, int] = {}
        self.error = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="bench-perf-"))
        self._out = self._dir / "perf.csv"
        self._ctl_r, self._ctl_w = os.pipe()
        self._ack_r, self._ack_w = os.pipe()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> SendCounter:
        argv = [
            shutil.which("perf") or "perf",
            "stat",
            "-x",
            ",",
            "-e",
            ",".join(events()),
            "-p",
            str(self.pid),
            "-D",
            "-1",
            "--control",
            f"fd:{self._ctl_r},{self._ack_w}",
            "-o",
            str(self._out),
        ]
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(self._ctl_r, self._ack_w),
        )
        # perf holds the other ends now; closing ours makes a dead perf read as EOF.
        os.close(self._ctl_r)
        os.close(self._ack_w)
        return self

    def _command(self, word: str) -> bool:
        try:
            os.write(self._ctl_w, word.encode() + b"\n")
        except OSError as exc:
            self.error = f"perf control: {exc}"
            return False
        poller = select.poll()  # not select(): the driver holds thousands of sockets
        poller.register(self._ack_r, select.POLLIN)
        if not poller.poll(ACK_TIMEOUT_S * 1000):
            self.error = f"perf did not acknowledge {word!r}"
            return False
        return os.read(self._ack_r, 64).startswith(b"ack")

    def enable(self) -> bool:
        return self._command("enable")

    def disable(self) -> bool:
        return self._command("disable")

    def __exit__(self, *_exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fd in (self._ctl_w, self._ack_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.counts = parse_output(self._out.read_text())
        except OSError as exc:
            self.error = self.error or f"no perf output: {exc}"
        shutil.rmtree(self._dir, ignore_errors=True)
        if not self.counts and not self.error:
            self.error = "perf counted nothing"
