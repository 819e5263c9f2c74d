"""Short human numbers for tables and progress lines (one definition for every module)."""

from __future__ import annotations


def fmt(v: float | None, unit: str = "") -> str:
    """Short human number: 1.23M, 45.6k, 7.89, with an optional unit."""
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1e6:
        s = f"{v / 1e6:.3g}M"
    elif a >= 1e4:
        s = f"{v / 1e3:.3g}k"
    elif a >= 100:
        s = f"{v:.0f}"
    else:
        s = f"{v:.3g}"
    return s + unit
