"""From run records to cells (median and range over valid runs) and to issue 4's goals.

A cell is every repetition of one (scenario, tool, target, params). Only valid runs enter
its median and range; the invalid ones are counted and their reasons kept, so the report
can list them instead of averaging them in.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from bench import stats
from bench.matrix import Matrix

#: Goal ids, in report order.
GOAL_IDS = ("flood_vs_threaded", "flood_vs_redis", "senders_p99", "senders_p99_driver", "idle_rss")


def cell_key(run: dict[str, Any]) -> tuple[str, str, str, str]:
    """(scenario, tool, target, params as canonical JSON)."""
    return (run["scenario"], run["tool"], run["target"], json.dumps(run["params"], sort_keys=True))


def cells(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs into cells; each metric gets {median, min, max, n} over valid runs."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[cell_key(r)].append(r)
    out = []
    for (scenario, tool, target, params_json), rs in groups.items():
        valid = [r for r in rs if r["valid"]]
        names = sorted({k for r in rs for k, v in r["metrics"].items() if _is_num(v)})
        metrics: dict[str, Any] = {}
        for name in names:
            sp = stats.spread(
                [r["metrics"][name] for r in valid if _is_num(r["metrics"].get(name))]
            )
            if sp is not None:
                metrics[name] = sp.as_dict()
        extra: dict[str, Any] = {}
        for section, key in (
            ("server", "cpu_util"),
            ("server", "rss_bytes"),
            ("loadgen", "cpu_util"),
        ):
            sp = stats.spread([r[section][key] for r in valid if _is_num(r[section].get(key))])
            if sp is not None:
                extra[f"{section}_{key}"] = sp.as_dict()
        for cpu in sorted({k for r in valid for k in (r.get("cpu_busy") or {}) if k != "cpu"}):
            sp = stats.spread([r["cpu_busy"][cpu] for r in valid if cpu in r.get("cpu_busy", {})])
            if sp is not None:
                extra[f"busy_{cpu}"] = sp.as_dict()
        out.append(
            {
                "scenario": scenario,
                "tool": tool,
                "target": target,
                "params": json.loads(params_json),
                "n_runs": len(rs),
                "n_valid": len(valid),
                "metrics": metrics,
                "resources": extra,
                "invalid": [
                    {"rep": r["rep"], "reasons": r["reasons"]} for r in rs if not r["valid"]
                ],
            }
        )
    out.sort(
        key=lambda c: (
            c["scenario"],
            c["tool"],
            json.dumps(c["params"], sort_keys=True),
            c["target"],
        )
    )
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def find(
    cs: list[dict[str, Any]], scenario: str, target: str, tool: str | None = None, **params: Any
) -> dict[str, Any] | None:
    """The cell matching scenario, target, tool and the given params (others ignored)."""
    for c in cs:
        if c["scenario"] != scenario or c["target"] != target:
            continue
        if tool and c["tool"] != tool:
            continue
        if all(c["params"].get(k) == v for k, v in params.items()):
            return c
    return None


def median_of(c: dict[str, Any] | None, metric: str) -> float | None:
    if c is None:
        return None
    m = c["metrics"].get(metric)
    return m["median"] if m else None


def goals(cs: list[dict[str, Any]], m: Matrix) -> list[dict[str, Any]]:
    """Judge issue 4's goals on this run's cells. met is None when a side is missing."""
    out = []
    n = m.flood_room
    fr = median_of(find(cs, "flood", "reactor", room=n), "deliveries_per_s")
    ft = median_of(find(cs, "flood", "threaded", room=n), "deliveries_per_s")
    fx = median_of(find(cs, "flood", "redis", room=n), "deliveries_per_s")
    r = stats.ratio(fr, ft)
    out.append(
        _goal(
            "flood_vs_threaded",
            f"flood deliveries/s at N={n}: reactor >= 10x threaded",
            {"reactor": fr, "threaded": ft, "ratio": r},
            None if r is None else r >= 10.0,
        )
    )
    r2 = stats.ratio(fr, fx)
    out.append(
        _goal(
            "flood_vs_redis",
            f"flood deliveries/s at N={n}: reactor >= Redis pub/sub",
            {"reactor": fr, "redis": fx, "ratio": r2},
            None if r2 is None else r2 >= 1.0,
        )
    )
    sn = m.senders_room
    out.append(
        _senders_goal(
            cs,
            m,
            "senders_p99",
            "Locust, steady state once the room is full",
            "senders",
            "locust",
            {"room": sn},
        )
    )
    out.append(
        _senders_goal(
            cs,
            m,
            "senders_p99_driver",
            "lean driver, steady state",
            "slow",
            "driver",
            {"room": sn, "slow_reader": False},
        )
    )
    k = max(m.idle_counts)
    ir = median_of(find(cs, "idle", "reactor", connections=k), "rss_per_conn_bytes")
    out.append(
        _goal(
            "idle_rss",
            f"reactor RSS per idle connection at {k} <= 2 KB (2048 B)",
            {"reactor_bytes": ir},
            None if ir is None else ir <= 2048,
        )
    )
    return out


def _senders_goal(
    cs: list[dict[str, Any]],
    m: Matrix,
    gid: str,
    how: str,
    scen: str,
    tool: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Reactor p99 <= 1/5 of threaded's and of asyncio's, for one tool's cells."""
    p = {
        t: median_of(find(cs, scen, t, tool, **params), "latency_p99_ms")
        for t in ("reactor", "threaded", "asyncio")
    }
    met = None
    if None not in p.values():
        met = p["reactor"] <= p["threaded"] / 5.0 and p["reactor"] <= p["asyncio"] / 5.0
    text = (
        f"{m.senders}-sender p99 at N={m.senders_room} ({how}): "
        "reactor <= 1/5 of threaded and asyncio"
    )
    measured = {
        "reactor_ms": p["reactor"],
        "threaded_ms": p["threaded"],
        "asyncio_ms": p["asyncio"],
        "threaded_over_reactor": stats.ratio(p["threaded"], p["reactor"]),
        "asyncio_over_reactor": stats.ratio(p["asyncio"], p["reactor"]),
    }
    return _goal(gid, text, measured, met)


def _goal(gid: str, text: str, measured: dict[str, Any], met: bool | None) -> dict[str, Any]:
    return {"id": gid, "goal": text, "measured": measured, "met": met}
