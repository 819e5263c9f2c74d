"""``GET /metrics``: the ``/stats`` counters and the histograms, in Prometheus' text format.

Rendered by hand on the loop, with no thread and no client library: the counters are
plain ints already (:meth:`chatd.service.ChatService.snapshot`), so a page is one pass
of string formatting. Tests parse the output with prometheus_client's own parser.

Naming follows Prometheus' practice: every metric is ``chatd_<name>``; a count that only
grows ends in ``_total``; gauges (what is, not what happened) do not; durations are in
seconds. Labels have bounded values only (the engine's name, the version): never a
nick, a room, an address or text.
"""

from __future__ import annotations

from collections.abc import Mapping

from chatd.core.measures import Histogram, Measures

#: The content type of the text format this renders (version 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Snapshot keys that are gauges: the state now, which goes up and down.
GAUGES: dict[str, str] = {
    "clients": "Connections with a chat session (registered or not).",
    "registered": "Members with a nickname, on every node of a cluster.",
    "rooms": "Rooms that exist.",
    "websocket_clients": "Chat sessions over WebSocket.",
    "history_pending": "History lines waiting to be written.",
    "cluster_up": "1 while the node's link to Redis works.",
    "cluster_rooms_followed": "Rooms whose channel this node follows.",
    "cluster_remote_members": "Members connected to other nodes.",
}

#: Help texts of counters that have one; the rest say what /stats calls them.
COUNTER_HELP: dict[str, str] = {
    "connections": "Connections accepted.",
    "lines_in": "Lines received from clients.",
    "writes_out": "Writes queued for clients.",
    "bytes_in": "Bytes received from clients.",
    "bytes_out": "Bytes queued for clients.",
    "fanout_batches": "Room batches delivered (one per room per loop turn with events).",
    "fanout_events": "Events delivered through room batches.",
    "http_requests": "HTTP requests answered.",
    "websocket_upgrades": "WebSocket handshakes accepted.",
    "websocket_refused": "WebSocket handshakes refused (origin, path or headers).",
}

HISTOGRAMS: dict[str, str] = {
    "delivery_seconds": "Seconds from the hub accepting a chat message (the lines one read "
    "brought) to its local delivery.",
    "loop_turn_seconds": "Seconds the reactor is busy per loop turn.",
}


def render(snapshot: Mapping[str, int], measures: Measures, engine: str, version: str) -> bytes:
    """The whole exposition page."""
    out: list[str] = [
        "# HELP chatd_build_info The running chatd: version and engine.",
        "# TYPE chatd_build_info gauge",
        f'chatd_build_info{{version="{_label(version)}",engine="{_label(engine)}"}} 1',
    ]
    for key in sorted(snapshot):
        name = _name(key)
        value = snapshot[key]
        if key in GAUGES:
            out.append(f"# HELP chatd_{name} {GAUGES[key]}")
            out.append(f"# TYPE chatd_{name} gauge")
            out.append(f"chatd_{name} {value}")
        else:
            help_text = COUNTER_HELP.get(key, f"The /stats counter {key}.")
            out.append(f"# HELP chatd_{name}_total {help_text}")
            out.append(f"# TYPE chatd_{name}_total counter")
            out.append(f"chatd_{name}_total {value}")
    for name, histogram in (
        ("delivery_seconds", measures.delivery),
        ("loop_turn_seconds", measures.loop_turn),
    ):
        out.extend(_histogram(name, histogram))
    out.append("")
    return "\n".join(out).encode()


def _histogram(name: str, histogram: Histogram) -> list[str]:
    full = f"chatd_{name}"
    lines = [f"# HELP {full} {HISTOGRAMS[name]}", f"# TYPE {full} histogram"]
    for le, count in histogram.cumulative():
        lines.append(f'{full}_bucket{{le="{le}"}} {count}')
    lines.append(f"{full}_sum {histogram.sum!r}")
    lines.append(f"{full}_count {histogram.count}")
    return lines


def _name(key: str) -> str:
    """A /stats key as a metric name (they are ``[a-z0-9_]`` already; be safe anyway)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key.lower())


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
