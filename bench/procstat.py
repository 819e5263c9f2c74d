"""What the kernel says about a process and the machine: CPU seconds, RSS, steal time.

Why /proc and not psutil: the numbers we report must be explainable in one sentence
("utime+stime from /proc/PID/stat"), and reading two small files is cheaper than a
library call while a benchmark window is open. psutil is only a fallback for the
machine description.

Also here: CPU pinning and the open-file limit, because both are "make this process fit
the measurement" chores that every scenario needs before it starts.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

#: Kernel clock ticks per second; /proc/PID/stat and /proc/stat count in these.
CLK_TCK: int = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """One look at a process: cumulative CPU seconds and memory, with the wall time."""

    #: monotonic wall clock when sampled, seconds
    t: float
    #: user + system CPU seconds of all the process's threads since it started
    cpu_s: float
    #: resident set size in bytes (VmRSS)
    rss: int
    #: peak resident set size in bytes (VmHWM)
    hwm: int
    #: number of threads
    threads: int


def parse_stat_cpu_seconds(stat_text: str) -> float:
    """Return utime+stime in seconds from the text of /proc/PID/stat.

    The second field (comm) is in parentheses and may contain spaces or parentheses,
    so split after the *last* ')' -- the classic trap when parsing this file.
    """
    rest = stat_text[stat_text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14 and stime field 15.
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / CLK_TCK


def parse_status(status_text: str) -> dict[str, int]:
    """Return VmRSS/VmHWM in bytes and Threads from the text of /proc/PID/status."""
    out: dict[str, int] = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024  # the file says kB
        elif key == "Threads":
            out[key] = int(value)
    return out


def sample_process(pid: int) -> ProcSample:
    """Read /proc/PID/stat and /proc/PID/status once. Raises OSError if pid is gone."""
    with open(f"/proc/{pid}/stat") as f:
        cpu = parse_stat_cpu_seconds(f.read())
    with open(f"/proc/{pid}/status") as f:
        status = parse_status(f.read())
    return ProcSample(
        t=time.monotonic(),
        cpu_s=cpu,
        rss=status.get("VmRSS", 0),
        hwm=status.get("VmHWM", 0),
        threads=status.get("Threads", 0),
    )


@dataclass(frozen=True)
class CpuStat:
    """Cumulative jiffies from one line of /proc/stat ("cpu" or "cpuN")."""

    total: int
    idle: int
    steal: int


def parse_proc_stat(text: str) -> dict[str, CpuStat]:
    """Parse the cpu lines of /proc/stat into {"cpu": ..., "cpu0": ..., ...}.

    Fields: user nice system idle iowait irq softirq steal guest guest_nice. guest time
    is already counted in user, so the total is the sum of the first eight.
    """
    out: dict[str, CpuStat] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        vals = [int(x) for x in fields[:8]] + [0] * (8 - len(fields[:8]))
        out[name] = CpuStat(total=sum(vals), idle=vals[3] + vals[4], steal=vals[7])
    return out


def read_proc_stat() -> dict[str, CpuStat]:
    """Snapshot /proc/stat."""
    with open("/proc/stat") as f:
        return parse_proc_stat(f.read())


def steal_fractions(before: dict[str, CpuStat], after: dict[str, CpuStat]) -> dict[str, float]:
    """Share of each CPU's time stolen by the hypervisor between two snapshots.

    Steal means our 'CPU seconds' ran slower than the wall clock says; a run with high
    steal is reported with that figure beside it rather than silently compared.
    """
    out: dict[str, float] = {}
    for name, a in after.items():
        b = before.get(name)
        if b is None:
            continue
        total = a.total - b.total
        out[name] = (a.steal - b.steal) / total if total > 0 else 0.0
    return out


def busy_fractions(before: dict[str, CpuStat], after: dict[str, CpuStat]) -> dict[str, float]:
    """Share of each CPU's time that was not idle between two snapshots."""
    out: dict[str, float] = {}
    for name, a in after.items():
        b = before.get(name)
        if b is None:
            continue
        total = a.total - b.total
        out[name] = 1.0 - (a.idle - b.idle) / total if total > 0 else 0.0
    return out


def self_cpu_seconds() -> float:
    """CPU seconds (user+system) used by this process so far, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_plan() -> tuple[set[int] | None, set[int] | None]:
    """Choose CPUs for (server, load generator).

    With two or more usable CPUs the server gets the first and the load generator the
    second, so neither steals cycles from the other inside a measurement. With one CPU
    we cannot separate them and return (None, None): nothing is pinned and the report
    says so.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def pin(pid: int, cpus: set[int] | None) -> bool:
    """Pin pid (0 = this process) to cpus; return whether it worked."""
    if not cpus:
        return False
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        return False
    return True


def raise_nofile(want: int) -> int:
    """Raise this process's soft open-file limit toward want (capped at the hard limit).

    The idle scenario holds 10,000 sockets in one process; the default soft limit of
    1024 would end it with EMFILE. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def machine_description() -> dict[str, object]:
    """What the report states about the machine the figures come from."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    uname = os.uname()
    return {
        "cpu_model": model,
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": mem,
        "kernel": f"{uname.sysname} {uname.release}",
    }
