"""Run the pinned irctest server suite against chatd (one engine) or a reference server.

    python tests/irc/run_irctest.py --engine reactor [-n 2] [-k EXPR]
    python tests/irc/run_irctest.py --server ngircd [-n 2]
    python tests/irc/run_irctest.py --controller irctest.controllers.inspircd

It runs pytest in the irctest folder (``IRCTEST_DIR``, else ``../shared/irctest`` beside
the project) on ``irctest/server_tests`` with the selection PINNED.md's reference numbers
use, a 60-second per-test timeout, a junit XML report, and the ``irctest_loopback`` plugin
(every server listens on 127.0.0.1, not 0.0.0.0). It then prints one line::

    irctest ENGINE: N passed, N failed, N skipped, N xfailed, N errors

kills every server the run left behind (irctest's bot_mode.py skips after starting its
server, which is then never killed), and exits 1 if a test failed or errored (2 if pytest
itself could not run).

Leftovers are found by a marker: the runner puts ``CHATD_IRCTEST_RUN=<random id>`` in the
environment of pytest, which every server it starts inherits; afterwards each process
whose ``/proc/PID/environ`` carries that exact id is sent SIGTERM, then SIGKILL, by PID.
Nothing else on the machine is touched.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def find_irctest() -> Path | None:
    """``$IRCTEST_DIR``, else the pinned copy beside the project (``../shared/irctest``)."""
    candidates = [os.environ.get("IRCTEST_DIR"), HERE.parents[2] / "shared" / "irctest"]
    candidates.append("/work/shared/irctest")
    for candidate in candidates:
        if candidate and (Path(candidate) / "irctest" / "server_tests").is_dir():
            return Path(candidate)
    return None


IRCTEST_DIR = find_irctest()
#: The marker selection of PINNED.md's reference results.
SELECTION = "not services and not implementation-specific and not deprecated and not strict"
#: ``--server NAME`` → controller module.
SERVERS = {"chatd": "irctest_chatd", "ngircd": "irctest.controllers.ngircd"}
ENGINES = ("reactor", "threaded", "asyncio", "asyncio+uvloop")
RUN_MARKER = "CHATD_IRCTEST_RUN"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=ENGINES, default="reactor", help="chatd engine")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--server", choices=sorted(SERVERS), default="chatd")
    who.add_argument("--controller", help="any irctest controller module (overrides --server)")
    p.add_argument("-n", "--numprocesses", default="2", help="pytest-xdist workers (0: none)")
    p.add_argument("-k", dest="keyword", help="pytest -k expression")
    p.add_argument("--timeout", type=int, default=60, help="per-test timeout in seconds")
    p.add_argument("--junit", type=Path, help="junit XML path (default: /tmp/irctest-LABEL.xml)")
    p.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    return p.parse_args(argv)


def count_results(junit: Path) -> Counter[str]:
    """passed/failed/skipped/xfailed/errors from a pytest junit XML report."""
    counts: Counter[str] = Counter(passed=0, failed=0, skipped=0, xfailed=0, errors=0)
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag: child for child in case}
        if "error" in kinds:
            counts["errors"] += 1
        elif "failure" in kinds:
            counts["failed"] += 1
        elif "skipped" in kinds:
            xfail = kinds["skipped"].get("type") == "pytest.xfail"
            counts["xfailed" if xfail else "skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def marked_pids(run_id: str) -> list[int]:
    """PIDs of live processes that inherited this run's marker (not this process)."""
    needle = f"{RUN_MARKER}={run_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def describe(pid: int) -> str:
    """``"1234 (ngircd)"``: a PID with its command name, for the report."""
    try:
        return f"{pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})"
    except OSError:
        return str(pid)


def kill_leftovers(run_id: str) -> list[str]:
    """SIGTERM, then after 5 s SIGKILL, every process carrying the marker; what they were."""
    pids = marked_pids(run_id)
    described = [describe(pid) for pid in pids]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while (alive := marked_pids(run_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return described


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if IRCTEST_DIR is None:
        print("irctest: the suite was not found (set IRCTEST_DIR or put it in ../shared/irctest)")
        return 2
    controller = args.controller or SERVERS[args.server]
    label = args.engine if controller == SERVERS["chatd"] else controller.rsplit(".", 1)[-1]
    junit = args.junit or Path(tempfile.gettempdir()) / f"irctest-{label}.xml"
    junit.unlink(missing_ok=True)  # a stale report must not stand in for this run
    run_id = secrets.token_hex(8)
    env = dict(os.environ)
    env[RUN_MARKER] = run_id
    env["CHATD_ENGINE"] = args.engine
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    # The irctest folder may be read-only: no bytecode, no .pytest_cache there.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "irctest_loopback",
        "-p",
        "no:cacheprovider",
        "--controller",
        controller,
        "-m",
        SELECTION,
        "--timeout",
        str(args.timeout),
        "--junitxml",
        str(junit.resolve()),
        "-q",
        "-rfE",
    ]
    if args.numprocesses != "0":
        cmd += ["-n", args.numprocesses]
    if args.keyword:
        cmd += ["-k", args.keyword]
    cmd += [*args.pytest_args, "irctest/server_tests"]
    started = time.monotonic()
    try:
        rc = subprocess.call(cmd, cwd=IRCTEST_DIR, env=env)
    finally:
        leftovers = kill_leftovers(run_id)
    elapsed = time.monotonic() - started
    if leftovers:
        print(f"killed {len(leftovers)} leftover process(es): {', '.join(leftovers)}")
    if not junit.exists() or junit.stat().st_size == 0:
        print(f"irctest {label}: pytest wrote no report (exit {rc})")
        return 2
    c = count_results(junit)
    print(
        f"irctest {label}: {c['passed']} passed, {c['failed']} failed, "
        f"{c['skipped']} skipped, {c['xfailed']} xfailed, {c['errors']} errors "
        f"({elapsed:.0f} s, junit: {junit})"
    )
    if c["failed"] or c["errors"]:
        return 1
    return 0 if rc in (0, 5) else 2


if __name__ == "__main__":
    sys.exit(main())
