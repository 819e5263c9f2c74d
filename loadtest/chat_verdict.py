"""The end-of-run verdict: did the target keep up, and can the numbers be trusted?

Sans-IO: everything here reads the report ``chat_core.build_report`` produced, so the same
verdict is printed at the end of a run (``summary``), shown in the web UI (``web_rows``) and
turned into the process's exit code (``Judgement.exit_code``), and the tests check it
without running Locust.

A run **fails** when any of these holds:

* nothing was measured (the gate never opened) or no broadcast was timed: a run without
  samples proves nothing, typically because no user could join;
* a failure was recorded (connect, join, disconnect, a sequence gap...), messages were lost
  in sequence gaps, or timing receivers still lacked messages after the drain
  (``delivery.undelivered``);
* the load generator was saturated: its latencies are then its own queueing, not the
  server's;
* ``--chat-max-p99-ms`` is set and the broadcast p99 exceeds it.

Sent versus intended is reported, not judged: a server that stops reading shows up in the
latency (the stamps are the intended send times) and, past the drain, as undelivered.

With several hosts (``--host A,B``) the block and the web UI add a ``hosts`` row per host:
how many users went to it and how many sessions registered there. A host nobody could
reach fails the run through its ``connect`` failures; the row shows which one it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Exit code of a failed run (Locust's own default for a run with failures).
FAIL_EXIT_CODE = 1

_PERCENTILES = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9"))


@dataclass(frozen=True)
class Judgement:
    """The verdict on one report."""

    #: Why the run failed; empty when it passed.
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else FAIL_EXIT_CODE

    def text(self) -> str:
        return "PASS" if self.passed else "FAIL: " + "; ".join(self.reasons)


def judge(report: Mapping[str, Any], max_p99_ms: float = 0.0) -> Judgement:
    """Apply the rules in the module docstring to ``report``."""
    reasons: list[str] = []
    lat = report.get("latency_us") or {}
    warmup = report.get("warmup") or {}
    expected, joined = warmup.get("users_expected"), warmup.get("users_joined")
    if expected and joined is not None and joined < expected:
        reasons.append(f"{joined} of {expected} users joined")
    if report.get("measure_started_at") is None:
        reasons.append("nothing measured (the test stopped before measuring started)")
    elif not lat.get("count"):
        reasons.append("no broadcast samples")
    failures = report.get("failures") or {}
    if failures.get("total"):
        kinds = ", ".join(f"{k} {v}" for k, v in (failures.get("by_kind") or {}).items())
        reasons.append(f"{failures['total']} failures ({kinds})")
    if failures.get("lost_messages"):
        reasons.append(f"{failures['lost_messages']} messages lost")
    undelivered = (report.get("delivery") or {}).get("undelivered")
    if undelivered:
        reasons.append(f"{undelivered} messages undelivered at the end")
    gen = report.get("load_generator") or {}
    if gen.get("saturated"):
        why = ", ".join(gen.get("saturation_reasons") or [])
        reasons.append(f"load generator saturated ({why})")
    p99 = lat.get("p99")
    if max_p99_ms > 0 and p99 is not None and p99 > max_p99_ms * 1000.0:
        reasons.append(f"p99 {p99 / 1000.0:.1f} ms > --chat-max-p99-ms {max_p99_ms:g}")
    return Judgement(tuple(reasons))


def _target(report: Mapping[str, Any]) -> str:
    host = report.get("host") or "?"
    over = " over WebSocket" if report.get("transport") == "ws" else ""
    dialect = f"{report.get('dialect') or 'line'} dialect{over}"
    what = [x for x in (report.get("label"), dialect) if x]
    return f"{host} ({', '.join(what)})"


def _hosts(report: Mapping[str, Any]) -> list[str]:
    """One line per host of a several-host run (none for one host: ``target`` says it all)."""
    hosts = report.get("hosts") or []
    if len(hosts) < 2:
        return []
    return [
        f"{h.get('host')}: {h.get('users', 0)} users, {h.get('connects', 0)} connects"
        for h in hosts
    ]


def _latency(report: Mapping[str, Any]) -> str:
    lat = report.get("latency_us") or {}
    if not lat.get("count"):
        return "no samples"
    parts = [f"{name} {lat[key]}" for key, name in _PERCENTILES if lat.get(key) is not None]
    parts.append(f"max {lat.get('max')}")
    return f"{'  '.join(parts)}  ({lat['count']} samples)"


def _messages(report: Mapping[str, Any]) -> str:
    msgs = report.get("messages") or {}
    failures = report.get("failures") or {}
    delivery = report.get("delivery") or {}
    undelivered = delivery.get("undelivered")
    return (
        f"sent {msgs.get('sent', 0)} of {msgs.get('intended', 0)} intended "
        f"({msgs.get('achieved_rate', 0):g}/s over {report.get('duration_s', 0):g} s), "
        f"lost {failures.get('lost_messages', 0)}, "
        f"undelivered {'unchecked' if undelivered is None else undelivered}"
    )


def _generator(report: Mapping[str, Any]) -> str:
    gen = report.get("load_generator") or {}
    state = "SATURATED" if gen.get("saturated") else "not saturated"
    return (
        f"{gen.get('cpu_percent', 0):g}% of a core (peak {gen.get('cpu_peak_percent', 0):g}%, "
        f"{len(gen.get('processes') or [])} process(es)), {state}"
    )


def summary(report: Mapping[str, Any], judgement: Judgement) -> str:
    """The block printed at the end of every run: one screen, every number that decides."""
    hosts = _hosts(report)
    rows = [
        ("target", _target(report)),
        *(("hosts" if i == 0 else "", line) for i, line in enumerate(hosts)),
        ("latency (us)", _latency(report)),
        ("messages", _messages(report)),
        ("load generator", _generator(report)),
        ("verdict", judgement.text()),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["--- chat load test " + "-" * 50]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("-" * 69)
    return "\n".join(lines)


#: What ``web_rows`` says instead of a verdict, by the run's ``status``.
_STATUS = {
    "idle": "no test has run yet",
    "running": "(running) so far: {}",
    "stopping": "(stopping: waiting for the final figures) so far: {}",
    "final": "{}",
}


def web_rows(report: Mapping[str, Any], judgement: Judgement, status: str) -> list[dict[str, str]]:
    """The same figures as rows for the web UI's "Chat verdict" tab (``metric``, ``value``).

    ``status`` is ``idle`` (no run yet), ``running``, ``stopping`` (stopped, final figures
    not all in) or ``final``; only ``final`` shows the bare verdict.
    """
    verdict = _STATUS[status].format(judgement.text())
    hosts = _hosts(report)
    return [
        {"metric": "target", "value": _target(report)},
        *([{"metric": "hosts", "value": "; ".join(hosts)}] if hosts else []),
        {"metric": "broadcast latency (us)", "value": _latency(report)},
        {"metric": "messages", "value": _messages(report)},
        {"metric": "load generator", "value": _generator(report)},
        {"metric": "verdict", "value": verdict},
    ]
