"""PNG plots of the cells (matplotlib, Agg backend: no display on CI).

Every plot carries the machine caption in its title area, because a figure copied out
of the report must still say it came from 2 shared cores. Median points with min-max
bars; invalid runs never enter a plot.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullLocator

from bench import aggregate

#: One colour per target, stable across plots; the IRC targets are drawn dashed.
COLORS: dict[str, str] = {
    "reactor": "#1b9e77",
    "reactor-ephemeral": "#66a61e",
    "threaded": "#d95f02",
    "asyncio": "#7570b3",
    "asyncio+uvloop": "#e7298a",
    "redis": "#666666",
    "reactor-irc": "#1b9e77",
    "ngircd": "#a6761d",
    "inspircd": "#e6ab02",
    # bench.websocket: the reactor's dialects over WebSocket beside their TCP twins
    "reactor-ws": "#1f78b4",
    "reactor-irc-ws": "#1f78b4",
}
ORDER = (
    "reactor",
    "reactor-ephemeral",
    "threaded",
    "asyncio",
    "asyncio+uvloop",
    "redis",
    "reactor-irc",
    "ngircd",
    "inspircd",
    "reactor-ws",
    "reactor-irc-ws",
)
#: Targets that speak IRC (dashed lines).
IRC = frozenset({"reactor-irc", "ngircd", "inspircd", "reactor-irc-ws"})


def _title(title: str, caption: str, width: int) -> str:
    """Title plus the machine caption, wrapped to fit the figure's width."""
    return title + "\n" + textwrap.fill(caption, width)


def _short(v: float) -> str:
    """58.4M, 950k, 12.3: bar labels a reader can take in at a glance."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div * 10 or (unit == "M" and abs(v) >= div):
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _err(metric: dict[str, float]) -> tuple[float, float]:
    return metric["median"] - metric["min"], metric["max"] - metric["median"]


def _targets(cs: list[dict[str, Any]]) -> list[str]:
    present = {c["target"] for c in cs}
    return [t for t in ORDER if t in present]


def fanout(cs: list[dict[str, Any]], path: Path, caption: str) -> Path | None:
    """p99 latency against achieved deliveries/s, one panel per room size (main plot)."""
    fan = [c for c in cs if c["scenario"] == "fanout"]
    rooms = sorted({c["params"]["room"] for c in fan})
    if not rooms:
        return None
    fig, axes = plt.subplots(1, len(rooms), figsize=(5 * len(rooms), 4.8), squeeze=False)
    for ax, room in zip(axes[0], rooms, strict=True):
        for t in _targets(fan):
            for tool, style in (("driver", "-o"), ("locust", "s")):
                pts = []
                for c in fan:
                    if (c["target"], c["tool"], c["params"]["room"]) != (t, tool, room):
                        continue
                    x = c["metrics"].get("deliveries_per_s")
                    y = c["metrics"].get("latency_p99_ms")
                    if x and y:
                        pts.append((x["median"], y["median"], _err(y)))
                pts.sort()
                if not pts:
                    continue
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    yerr=[[p[2][0] for p in pts], [p[2][1] for p in pts]],
                    fmt=style,
                    color=COLORS.get(t),
                    capsize=3,
                    mfc="none" if tool == "locust" else None,
                    label=f"{t} ({tool})",
                )
        ax.set_title(f"room of {room}")
        ax.set_xlabel("achieved deliveries/s")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("p99 broadcast latency (ms)")
    # One legend under the panels, so it never covers a point.
    seen: dict[str, Any] = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=5, fontsize=7)
    fig.suptitle(_title("Paced fan-out: p99 latency vs load", caption, 160), fontsize=9)
    fig.tight_layout(rect=(0, 0.12 if seen else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def saturation(
    cs: list[dict[str, Any]],
    path: Path,
    caption: str,
    knee_ms: float = 100.0,
    stop_ms: float = 1000.0,
) -> Path | None:
    """p99 against offered rate (log-log), one panel per (room, senders), one line per
    target: the median over valid repetitions at each rate. A line ends where its
    sweep stopped; the dotted lines are the knee's bound and the stop line."""
    sat = [
        c
        for c in cs
        if c["scenario"] == "saturation"
        and "offered" in c["params"]
        and "latency_p99_ms" in c["metrics"]
    ]
    rooms = sorted({c["params"]["room"] for c in sat})
    sends = sorted({c["params"]["senders"] for c in sat})
    if not rooms or not sends:
        return None
    fig, axes = plt.subplots(
        len(rooms),
        len(sends),
        figsize=(4.6 * len(sends), 3.9 * len(rooms) + 0.9),
        squeeze=False,
        sharey=True,
    )
    for row, room in zip(axes, rooms, strict=True):
        for ax, n in zip(row, sends, strict=True):
            for t in _targets(sat):
                pts = sorted(
                    (c["params"]["offered"], c["metrics"]["latency_p99_ms"])
                    for c in sat
                    if (c["target"], c["params"]["room"], c["params"]["senders"]) == (t, room, n)
                    and "latency_p99_ms" in c["metrics"]
                )
                if not pts:
                    continue
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1]["median"] for p in pts],
                    yerr=[[_err(p[1])[0] for p in pts], [_err(p[1])[1] for p in pts]],
                    fmt="--o" if t in IRC else "-o",
                    ms=3.5,
                    mfc="none" if t in IRC else None,
                    color=COLORS.get(t),
                    capsize=2,
                    label=t,
                )
            ax.axhline(knee_ms, color="red", ls=":", lw=1)
            ax.axhline(stop_ms, color="black", ls=":", lw=0.8)
            ax.set_xscale("log", base=2)
            xs = sorted(
                {
                    c["params"]["offered"]
                    for c in sat
                    if (c["params"]["room"], c["params"]["senders"]) == (room, n)
                }
            )
            ax.set_xticks(xs, [_short(x) for x in xs], fontsize=7, rotation=45)
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _short(v)))
            ax.set_title(f"room of {room}, {n} sender{'s' if n != 1 else ''}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("offered messages/s (total)", fontsize=8)
        row[0].set_ylabel("p99 latency (ms)", fontsize=8)
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=8, fontsize=8)
    fig.suptitle(
        _title(
            f"Saturation: p99 vs offered rate (knee: p99 <= {knee_ms:g} ms, red)",
            caption,
            int(14 * 4.6 * len(sends)),
        ),
        fontsize=9,
    )
    height = 3.9 * len(rooms) + 0.9
    fig.tight_layout(rect=(0, (0.35 / height) if seen else 0, 1, 1 - 0.8 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(
    cs: list[dict[str, Any]],
    metric: str,
    ylabel: str,
    title: str,
    path: Path,
    caption: str,
    log: bool = False,
    hline: float | None = None,
) -> Path | None:
    ts = _targets(cs)
    vals = []
    for t in ts:
        c = next((c for c in cs if c["target"] == t), None)
        vals.append(c["metrics"].get(metric) if c else None)
    if not any(vals):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (t, v) in enumerate(zip(ts, vals, strict=True)):
        if v is None:
            # At the foot of the axes, not at y=0: on a log axis y=0 is -inf, and
            # FreeType fails to raster rotated text there ("raster overflow").
            ax.text(
                i,
                0.02,
                "no valid run",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                transform=ax.get_xaxis_transform(),
            )
            continue
        lo, hi = _err(v)
        ax.bar(i, v["median"], color=COLORS.get(t), yerr=[[lo], [hi]], capsize=4)
        ax.text(i, v["median"], _short(v["median"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(ts)), ts)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if hline is not None:
        ax.axhline(hline, color="red", ls="--", lw=1)
    ax.set_title(_title(title, caption, 80), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def flood(cs: list[dict[str, Any]], path: Path, caption: str) -> Path | None:
    fl = [c for c in cs if c["scenario"] == "flood"]
    room = fl[0]["params"]["room"] if fl else 0
    return _bars(
        fl,
        "deliveries_per_s",
        "deliveries/s (median, min-max)",
        f"Flood: one sender, room of {room}",
        path,
        caption,
        log=True,
    )


def senders(cs: list[dict[str, Any]], path: Path, caption: str) -> Path | None:
    """Grouped p50/p99/p99.9 per engine: many senders (Locust), then the slow consumer
    without and with the stalled member (lean driver), on one shared log axis."""
    panels = [
        ("senders", "locust", {}, "many senders (Locust)"),
        ("slow", "driver", {"slow_reader": False}, "same, lean driver"),
        ("slow", "driver", {"slow_reader": True}, "+ one slow reader (lean driver)"),
    ]
    sel = [c for c in cs if c["scenario"] in ("senders", "slow")]
    ts = _targets(sel)
    if not ts:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4.2), sharey=True)
    keys = (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99"), ("latency_p999_ms", "p99.9"))
    width = 0.8 / len(keys)
    for ax, (scen, tool, params, title) in zip(axes, panels, strict=True):
        for j, (key, _name) in enumerate(keys):
            for i, t in enumerate(ts):
                c = aggregate.find(sel, scen, t, tool, **params)
                v = c["metrics"].get(key) if c else None
                if not v:
                    continue
                lo, hi = _err(v)
                ax.bar(
                    i + (j - 1) * width,
                    v["median"],
                    width,
                    yerr=[[lo], [hi]],
                    capsize=2,
                    color=COLORS.get(t),
                    alpha=(0.45, 0.75, 1.0)[j],
                )
        ax.set_xticks(range(len(ts)), ts, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("broadcast latency (ms), bars: p50 / p99 / p99.9")
    # One legend for the shading (colour is the target, as on the x axis).
    shades = [
        Patch(color="#555555", alpha=a, label=n)
        for a, (_, n) in zip((0.45, 0.75, 1.0), keys, strict=True)
    ]
    axes[-1].legend(handles=shades, fontsize=7)
    fig.suptitle(_title("Many senders and a slow consumer", caption, 160), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def idle(cs: list[dict[str, Any]], path: Path, caption: str, goal_bytes: int = 2048) -> Path | None:
    """RSS growth per idle connection against their number, one line per target (IRC
    dashed), with the goal (``goal_bytes``) drawn red."""
    sel = [c for c in cs if c["scenario"] == "idle"]
    if not sel:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for t in _targets(sel):
        pts = sorted(
            (c["params"]["connections"], c["metrics"]["rss_per_conn_bytes"])
            for c in sel
            if c["target"] == t and "rss_per_conn_bytes" in c["metrics"]
        )
        if pts:
            ax.errorbar(
                [p[0] for p in pts],
                [p[1]["median"] for p in pts],
                yerr=[[_err(p[1])[0] for p in pts], [_err(p[1])[1] for p in pts]],
                fmt="--o" if t in IRC else "-o",
                color=COLORS.get(t),
                capsize=3,
                label=t,
            )
    ax.axhline(goal_bytes, color="red", ls="--", lw=1, label=f"goal: {goal_bytes / 1024:g} KB")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("registered idle connections")
    ax.set_ylabel("server RSS growth per connection (bytes)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(_title("Idle connections", caption, 80), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def all_plots(
    cs: list[dict[str, Any]],
    outdir: Path,
    caption: str,
    knee_ms: float = 100.0,
    stop_ms: float = 1000.0,
) -> dict[str, str]:
    """Write every plot that has data; return {name: file name}."""
    made = {}

    def sat(cs: list[dict[str, Any]], path: Path, caption: str) -> Path | None:
        return saturation(cs, path, caption, knee_ms, stop_ms)

    for name, fn in (
        ("saturation", sat),
        ("fanout", fanout),
        ("flood", flood),
        ("senders", senders),
        ("idle", idle),
    ):
        try:
            p = fn(cs, outdir / f"{name}.png", caption)
        except RuntimeError as exc:
            # A figure is an illustration of the tables, never a reason to lose the run:
            # FreeType has failed once on a quick run's plot ("raster overflow").
            plt.close("all")
            print(f"bench: the {name} plot failed and is left out: {exc}", file=sys.stderr)
            continue
        if p is not None:
            made[name] = p.name
    return made
