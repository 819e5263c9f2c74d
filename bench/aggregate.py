"""From run records to cells (median and range over valid runs), knees, and the goals.

A cell is every repetition of one (scenario, tool, target, params). Only valid runs enter
its median and range; the invalid ones are counted and their reasons kept, so the report
can list them instead of averaging them in.

A knee (issue 10) is per (target, room, senders): each repetition's sweep gives one
(``stats.knee``), the headline is their median, and the figures beside it -- p99, server
and load-generator CPU, sends and writes per delivery -- are those of the steps at the
knee.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from bench import stats
from bench.matrix import Matrix

#: Goal ids, in report order: issue 10's (the saturation knee) first, then issue 4's.
KNEE_GOAL_IDS = ("knee_vs_threaded", "knee_vs_asyncio", "knee_vs_redis")
GOAL_IDS = KNEE_GOAL_IDS + (
    "flood_vs_threaded",
    "flood_vs_redis",
    "senders_p99",
    "senders_p99_driver",
    "idle_rss",
)


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


#: Figures taken from the step at each repetition's knee (metrics, then resources).
_AT_KNEE_METRICS = ("latency_p50_ms", "latency_p99_ms", "deliveries_per_s", "deliveries_per_write")
_AT_KNEE_SECTIONS = (("server", "cpu_util"), ("loadgen", "cpu_util"))


def knees(runs: list[dict[str, Any]], m: Matrix) -> list[dict[str, Any]]:
    """One entry per (target, room, senders) that was swept, in target/room/senders order.

    ``rate`` is the median over repetitions of each sweep's knee (a knee below the first
    step counts as 0 there and shows as None when it is the median); ``per_rep`` keeps
    every repetition's knee with what ended it; ``at_knee`` has median/min/max of the
    knee steps' figures; ``sendcount`` the counting steps (sends per delivery) by rate.
    """
    sweeps: dict[tuple[str, int, int], dict[int, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    counts: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        p = r.get("params") or {}
        if r.get("scenario") not in ("saturation", "sendcount") or "senders" not in p:
            continue
        key = (r["target"], p["room"], p["senders"])
        if r["scenario"] == "sendcount":
            counts[key].append(r)
        elif "offered" in p and not r.get("retried"):
            sweeps[key][r["rep"]].append(r)
    out = []
    order = {t: i for i, t in enumerate(_target_order())}
    for key in sorted(sweeps, key=lambda k: (order.get(k[0], 99), k[1], k[2])):
        target, room, senders = key
        per, at = [], []
        for rep, steps in sorted(sweeps[key].items()):
            k = stats.knee(steps, m.knee_p99_ms)
            last = max(steps, key=lambda st: st["params"]["offered"])
            per.append(
                {
                    "rep": rep,
                    "rate": k.rate,
                    "limit": k.limit,
                    "detail": k.detail,
                    "lower_bound": k.lower_bound,
                    "sweep_stop": last.get("sweep_stop", ""),
                    "steps": len(steps),
                    "first_rate": min(st["params"]["offered"] for st in steps),
                }
            )
            if k.rate is not None:
                at += [st for st in steps if st["params"]["offered"] == k.rate and st["valid"]]
        rates = [p["rate"] or 0.0 for p in per]
        med = stats.median(rates)
        mid = min(per, key=lambda p: abs((p["rate"] or 0.0) - med))
        at_knee: dict[str, Any] = {}
        for name in _AT_KNEE_METRICS:
            vals = [st["metrics"][name] for st in at if _is_num(st["metrics"].get(name))]
            sp = stats.spread(vals)
            if sp is not None:
                at_knee[name] = sp.as_dict()
        for section, name in _AT_KNEE_SECTIONS:
            sp = stats.spread(
                [st[section][name] for st in at if _is_num((st.get(section) or {}).get(name))]
            )
            if sp is not None:
                at_knee[f"{section}_{name}"] = sp.as_dict()
        sendcount = {}
        for c in counts.get(key, []):
            met = c["metrics"]
            if c["valid"] and _is_num(met.get("sends_per_delivery")):
                sendcount[str(c["params"]["offered"])] = {
                    "offered": c["params"]["offered"],
                    "sends_per_delivery": met["sends_per_delivery"],
                    "deliveries_per_write": met.get("deliveries_per_write"),
                    "send_syscalls": c.get("send_syscalls"),
                    "rep": c["rep"],
                }
        out.append(
            {
                "target": target,
                "room": room,
                "senders": senders,
                "rate": med if med > 0 else None,
                "lower_bound": bool(mid["lower_bound"]),
                "limit": mid["limit"],
                "per_rep": per,
                "at_knee": at_knee,
                "sendcount": sendcount,
            }
        )
    return out


def _target_order() -> tuple[str, ...]:
    from bench.servers import TARGETS

    return tuple(TARGETS)


def find_knee(
    ks: list[dict[str, Any]], target: str, room: int, senders: int
) -> dict[str, Any] | None:
    for k in ks:
        if (k["target"], k["room"], k["senders"]) == (target, room, senders):
            return k
    return None


def _interval(k: dict[str, Any] | None, start: float) -> tuple[float, float] | None:
    """The range the true knee lies in, as far as the sweep can tell."""
    if k is None:
        return None
    if k["rate"] is None:
        if k["lower_bound"]:
            return None  # the first step could not be measured: nothing is known
        return 0.0, start  # the server failed the first step: below it
    if k["lower_bound"]:
        return k["rate"], float("inf")
    return k["rate"], k["rate"]


def knee_goal(
    gid: str,
    ks: list[dict[str, Any]],
    m: Matrix,
    other: str,
    factor: float,
    *,
    target: str = "reactor",
) -> dict[str, Any]:
    """``target``'s knee (the reactor's) >= factor x other's, in the headline configuration.

    Judged on intervals: a knee cut short by the load generator is a lower bound, one
    below the first step an upper bound, so "met" needs the worst case to pass and
    "not met" the best case to fail; otherwise it is not judged.
    """
    room, senders = m.headline_room, m.headline_senders
    kr = find_knee(ks, target, room, senders)
    ko = find_knee(ks, other, room, senders)
    ir, io = _interval(kr, m.saturation_start), _interval(ko, m.saturation_start)
    met: bool | None = None
    ratio = None
    if ir is not None and io is not None:
        lo = ir[0] / io[1] if io[1] > 0 else float("inf")
        hi = ir[1] / io[0] if io[0] > 0 else float("inf")
        if lo >= factor:
            met = True
        elif hi < factor:
            met = False
        if kr and ko and kr["rate"] and ko["rate"]:
            ratio = kr["rate"] / ko["rate"]
    times = f"{factor:g}x " if factor != 1 else ""
    text = (
        f"saturation knee (msg/s at p99 <= {m.knee_p99_ms:g} ms, nothing lost), room of "
        f"{room}, {senders} senders: {target} >= {times}{other}"
    )
    measured: dict[str, Any] = {
        target: kr["rate"] if kr else None,
        other: ko["rate"] if ko else None,
        "ratio": ratio,
    }
    notes = [
        _bound_note(name, k, m.saturation_start)
        for name, k in ((target, kr), (other, ko))
        if k is not None and (k["rate"] is None or k["lower_bound"])
    ]
    if notes:
        measured["bounds"] = "; ".join(notes)
    return _goal(gid, text, measured, met)


def _bound_note(name: str, k: dict[str, Any], start: float) -> str:
    if k["rate"] is None and not k["lower_bound"]:
        return f"{name} failed the first step ({start:g} msg/s): its knee is below it"
    if k["rate"] is None:
        return f"{name} not measured ({k['limit']})"
    return f"{name} >= {k['rate']:g} (cut short: {k['limit']})"


def goals(
    cs: list[dict[str, Any]], m: Matrix, ks: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Judge issue 10's knee goals and issue 4's goals. met is None when a side is missing."""
    out = []
    if ks:
        out.append(knee_goal("knee_vs_threaded", ks, m, "threaded", 10.0))
        out.append(knee_goal("knee_vs_asyncio", ks, m, "asyncio", 10.0))
        out.append(knee_goal("knee_vs_redis", ks, m, "redis", 1.0))
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
    return out + history_goals(cs, ks or [], m)


#: History's cost (issue 17): the reactor with history on (its default) against the same
#: reactor with ``--ephemeral``, side by side in one run.
HISTORY_GOAL_IDS = ("history_knee", "history_cpu", "history_idle_rss")
HISTORY_ON, HISTORY_OFF = "reactor", "reactor-ephemeral"
#: How far history on may fall behind history off (a share of off's figure).
HISTORY_TOLERANCE = 0.10


def history_rates(cs: list[dict[str, Any]], ks: list[dict[str, Any]], m: Matrix) -> list[float]:
    """The headline sweep's rates that both sides passed (up to the lower knee) and
    measured CPU per delivery at, ascending."""
    room, senders = m.headline_room, m.headline_senders
    kon = find_knee(ks, HISTORY_ON, room, senders)
    koff = find_knee(ks, HISTORY_OFF, room, senders)
    if not kon or not koff or not kon["rate"] or not koff["rate"]:
        return []
    top = min(kon["rate"], koff["rate"])
    rates = set()
    for c in cs:
        p = c["params"]
        if c["scenario"] != "saturation" or (p.get("room"), p.get("senders")) != (room, senders):
            continue
        if c["target"] == HISTORY_ON and "offered" in p and p["offered"] <= top:
            rates.add(float(p["offered"]))
    return sorted(
        r
        for r in rates
        if all(_cpu_per_delivery(cs, t, m, r) is not None for t in (HISTORY_ON, HISTORY_OFF))
    )


#: A step whose server used at least this share of its CPU is CPU-bound: its CPU per
#: delivery is one CPU over the deliveries (the loop coalesces more per write as it falls
#: behind), the same for any two servers that keep up, so it cannot show a cost.
CPU_BOUND = 0.9


def _cpu_bound(cs: list[dict[str, Any]], m: Matrix, rate: float) -> bool:
    """Whether either side's server was CPU-bound at ``rate`` of the headline sweep."""
    for target in (HISTORY_ON, HISTORY_OFF):
        c = _headline_step(cs, target, m, rate)
        util = (c or {}).get("resources", {}).get("server_cpu_util")
        if util is None or util["median"] >= CPU_BOUND:
            return True
    return False


def _headline_step(
    cs: list[dict[str, Any]], target: str, m: Matrix, rate: float
) -> dict[str, Any] | None:
    """``target``'s cell of the headline sweep at ``rate``."""
    return find(
        cs,
        "saturation",
        target,
        "driver",
        room=m.headline_room,
        senders=m.headline_senders,
        offered=rate,
    )


def _cpu_per_delivery(
    cs: list[dict[str, Any]], target: str, m: Matrix, rate: float
) -> float | None:
    return median_of(_headline_step(cs, target, m, rate), "server_cpu_us_per_delivery")


def history_goals(
    cs: list[dict[str, Any]], ks: list[dict[str, Any]], m: Matrix
) -> list[dict[str, Any]]:
    """Issue 17's cost goals, when the run has both sides (else none): the knee and the
    CPU per delivery with history on within 10 % of off, and RSS per idle connection
    unchanged (within 10 %, which is the measurement's noise)."""
    targets = {c["target"] for c in cs}
    if HISTORY_ON not in targets or HISTORY_OFF not in targets:
        return []
    tol = HISTORY_TOLERANCE
    out = []
    room, senders = m.headline_room, m.headline_senders
    kon = find_knee(ks, HISTORY_ON, room, senders)
    koff = find_knee(ks, HISTORY_OFF, room, senders)
    if kon is not None or koff is not None:
        ion, ioff = _interval(kon, m.saturation_start), _interval(koff, m.saturation_start)
        met: bool | None = None
        if ion is not None and ioff is not None:
            lo = ion[0] / ioff[1] if ioff[1] > 0 else float("inf")
            hi = ion[1] / ioff[0] if ioff[0] > 0 else float("inf")
            met = True if lo >= 1 - tol else False if hi < 1 - tol else None
        on, off = (kon or {}).get("rate"), (koff or {}).get("rate")
        out.append(
            _goal(
                "history_knee",
                f"saturation knee, room of {room}, {senders} senders: history on >= "
                f"{1 - tol:.0%} of history off (steps double: equal knees are the finest "
                "verdict this can give)",
                {"on": on, "off": off, "ratio": stats.ratio(on, off)},
                met,
            )
        )
    rates = [r for r in history_rates(cs, ks, m) if not _cpu_bound(cs, m, r)]
    if rates:
        rate = rates[-1]
        on_cpu = _cpu_per_delivery(cs, HISTORY_ON, m, rate)
        off_cpu = _cpu_per_delivery(cs, HISTORY_OFF, m, rate)
        r = stats.ratio(on_cpu, off_cpu)
        out.append(
            _goal(
                "history_cpu",
                f"server CPU per delivery (µs) at {rate:g} msg/s, the highest rate at which "
                f"neither server was CPU-bound, room of {room}: history on <= {1 + tol:.0%} "
                "of off",
                {"on_us": on_cpu, "off_us": off_cpu, "ratio": r},
                None if r is None else r <= 1 + tol,
            )
        )
    if m.idle_counts:
        k = max(m.idle_counts)
        on_rss = median_of(find(cs, "idle", HISTORY_ON, connections=k), "rss_per_conn_bytes")
        off_rss = median_of(find(cs, "idle", HISTORY_OFF, connections=k), "rss_per_conn_bytes")
        r = stats.ratio(on_rss, off_rss)
        if on_rss is not None or off_rss is not None:
            out.append(
                _goal(
                    "history_idle_rss",
                    f"RSS per idle connection at {k}: history on within {tol:.0%} of off",
                    {"on_bytes": on_rss, "off_bytes": off_rss, "ratio": r},
                    None if r is None else abs(r - 1) <= tol,
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
