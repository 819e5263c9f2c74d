"""Several hosts: ``--host A,B`` spreads the load test's users over the nodes of a cluster.

* The pure parts (``chat_core``, ``chat_verdict``; no Locust): parsing the list (each entry
  in any form one ``--host`` takes, empty and repeated entries refused, the bad entry named
  with its position), dealing users to hosts round-robin by global index (across worker
  processes too), picking roles per host so that every host gets its share of senders and
  timing receivers, and the per-host counts in the report and the verdict.
* Real runs: ``locust`` as a subprocess against two chatd servers on free loopback ports,
  once in one process and once with ``--processes 2``; each server's own ``/stats`` says
  how many connections and chat lines it got. And a list of hosts where nothing listens
  ends the run with one question naming every host.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chatwire import Server
from test_loadtest import (
    LOADTEST,
    LOCUSTFILE,
    SMOKE_USERS,
    _check_run,
    _clean_env,
    _require_locust,
    _run_locust,
    _verdict_block,
)

if str(LOADTEST) not in sys.path:
    sys.path.insert(0, str(LOADTEST))

import chat_core as core  # noqa: E402
import chat_verdict as verdict  # noqa: E402


@pytest.fixture(name="locust_exe")
def locust_exe_fixture() -> str:
    return _require_locust()


# --------------------------------------------------------------------------- parsing

#: One ``--host`` in every form a single host is accepted in today.
SINGLE_FORMS = [
    "127.0.0.1:4040",
    "tcp://localhost:5000/",
    "example.org",
    "[::1]:4041",
    ":4042",
    "irc://irc.example:6697",
]


@pytest.mark.parametrize("host", SINGLE_FORMS)
def test_one_host_is_a_list_of_one(host: str) -> None:
    address, port = core.parse_host(host)
    assert core.parse_hosts(host) == (core.Target(host, address, port),)
    assert core.parse_hosts(f"  {host} ") == (core.Target(host, address, port),)


def test_a_list_keeps_its_order_and_each_entrys_form() -> None:
    hosts = "127.0.0.1:4040, tcp://127.0.0.1:4041/ ,[::1]:4042,example.org"
    targets = core.parse_hosts(hosts, default_port=6667)
    assert [t.entry for t in targets] == [
        "127.0.0.1:4040",
        "tcp://127.0.0.1:4041/",
        "[::1]:4042",
        "example.org",
    ]
    # a bare host takes the dialect's port; labels name IPv6 addresses in brackets
    assert [t.label for t in targets] == [
        "127.0.0.1:4040",
        "127.0.0.1:4041",
        "[::1]:4042",
        "example.org:6667",
    ]
    # every entry is one the client's own parse_host accepts as it is
    assert [core.parse_host(t.entry, 6667) for t in targets] == [
        (t.address, t.port) for t in targets
    ]


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (
            "127.0.0.1:4040,127.0.0.1:abc",
            "malformed --host entry 2 of 2 '127.0.0.1:abc': the port must be a number",
        ),
        ("h:1,my host:2,h:3", "malformed --host entry 2 of 3 'my host:2': expected HOST:PORT"),
        ("::1,h:1", "malformed --host entry 1 of 2 '::1': put an IPv6 address in brackets"),
        ("h:1,[::1", "malformed --host entry 2 of 2 '[::1': expected [IPV6]:PORT"),
        (",127.0.0.1:4040", "--host entry 1 of 2 is empty in ',127.0.0.1:4040'"),
        ("127.0.0.1:4040,", "--host entry 2 of 2 is empty in '127.0.0.1:4040,'"),
        ("a:1, ,b:2", "--host entry 2 of 3 is empty"),
        (",", "--host entry 1 of 2 is empty"),
        (
            "127.0.0.1:4040,tcp://127.0.0.1:4040/",
            "--host entry 2 of 2 'tcp://127.0.0.1:4040/' repeats entry 1",
        ),
        ("localhost,h:1,localhost:4040", "--host entry 3 of 3 'localhost:4040' repeats entry 1"),
    ],
)
def test_a_bad_entry_is_refused_by_name_and_position(hosts: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        core.parse_hosts(hosts)
    assert "\n" not in str(caught.value)  # one line, as host_problem prints it


@pytest.mark.parametrize(
    "host", [None, "", "  ", "127.0.0.1:abc", "127.0.0.1:0", "h:4040/path", "::1", "[::1]x"]
)
def test_a_single_bad_host_keeps_the_message_it_always_had(host: str | None) -> None:
    with pytest.raises(ValueError) as single:
        core.parse_host(host)
    with pytest.raises(ValueError) as listed:
        core.parse_hosts(host)
    assert str(listed.value) == str(single.value)


# --------------------------------------------------------------------------- dealing


def _deal(
    n_hosts: int, workers: int, per_worker: int, share: float
) -> tuple[dict[int, str], Counter[str], Counter[str], Counter[str]]:
    """Deal users as ``chat.py`` does: per process a ``HostSlots``, slot by slot.

    Returns the target of every global index, and per target the users, the senders
    (``ChatUser`` with ``--chat-send-share share``) and the timing receivers
    (``--chat-timing-sample share``).
    """
    targets = core.parse_hosts(",".join(f"127.0.0.1:{4040 + h}" for h in range(n_hosts)))
    frac = core.to_fraction(share)
    where: dict[int, str] = {}
    users: Counter[str] = Counter()
    senders: Counter[str] = Counter()
    timers: Counter[str] = Counter()
    for worker in range(workers):
        slots = core.HostSlots()
        for slot in range(per_worker):
            index = core.global_index(slot, worker, workers)
            target, host_slot = slots.assign(targets, index)
            where[index] = target.label
            users[target.label] += 1
            senders[target.label] += core.spread(host_slot, frac)
            timers[target.label] += core.spread_early(host_slot, frac)
        assert slots.users == {
            label: sum(1 for i, w in where.items() if w == label and i % workers == worker)
            for label in slots.users
        }
    return where, users, senders, timers


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("n_hosts", [1, 2, 3])
def test_user_i_goes_to_host_i_mod_n_in_every_process(workers: int, n_hosts: int) -> None:
    where, users, _, _ = _deal(n_hosts, workers, per_worker=30, share=0.1)
    labels = [f"127.0.0.1:{4040 + h}" for h in range(n_hosts)]
    assert where == {i: labels[i % n_hosts] for i in range(30 * workers)}
    assert max(users.values()) - min(users.values()) <= 1 and len(users) == n_hosts
    # deterministic: the same run again deals every user to the same host
    assert _deal(n_hosts, workers, per_worker=30, share=0.1)[0] == where


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("n_hosts", [2, 3, 4])
def test_every_host_gets_its_share_of_senders_and_timing_receivers(
    n_hosts: int, workers: int, share: float
) -> None:
    """Roles are picked by host slot: exact per (process, host), so within one per process."""
    _, users, senders, timers = _deal(n_hosts, workers, per_worker=120, share=share)
    for label, n in users.items():
        assert abs(senders[label] - n * share) < workers, (label, n, senders)
        assert abs(timers[label] - n * share) < workers, (label, n, timers)
        assert senders[label] > 0 and timers[label] > 0


def test_picking_roles_by_slot_would_leave_a_host_without_senders() -> None:
    """Why host slots: with round-robin hosts, the slot's roles line up with the hosts.

    At the default share 0.1 the senders are slots 9, 19, 29, ... (all odd) and the timing
    receivers 0, 10, 20, ... (all even): over two hosts one would get every sender and the
    other every timing receiver, and no latency would be measured within a node.
    """
    tenth = core.to_fraction(0.1)
    senders = {core.host_index(s, 2) for s in range(1000) if core.spread(s, tenth)}
    timers = {core.host_index(s, 2) for s in range(1000) if core.spread_early(s, tenth)}
    assert senders == {1} and timers == {0}
    _, _, by_host_slot, timing = _deal(2, 1, per_worker=1000, share=0.1)
    assert set(by_host_slot.values()) == {50} and set(timing.values()) == {50}


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_with_one_host_the_host_slot_is_the_slot(workers: int) -> None:
    """One host: every user's role is exactly what it was before lists existed."""
    targets = core.parse_hosts("127.0.0.1:4040")
    for worker in range(workers):
        slots = core.HostSlots()
        for slot in range(50):
            index = core.global_index(slot, worker, workers)
            assert slots.assign(targets, index) == (targets[0], slot)


# --------------------------------------------------------------------------- report


def _snap(role: str, users: dict[str, int], connects: dict[str, int]) -> core.Snapshot:
    return core.Snapshot(
        role=role,
        host_users=users,
        host_connects=connects,
        delivery=core.Delivery(),
        wall_seconds=1.0,
    )


def _build(snaps: list[core.Snapshot], host: str, hosts: list[str]) -> dict[str, Any]:
    return core.build_report(
        snaps,
        duration_s=1.0,
        options={},
        host=host,
        hosts=hosts,
        started_at=0.0,
        stopped_at=1.0,
        users={},
        rate_per_sender=1.0,
        measure_started_at=0.5,
    )


def test_the_report_counts_users_and_connects_per_host_over_processes() -> None:
    a, b, c = "127.0.0.1:4040", "127.0.0.1:4041", "[::1]:4042"
    w1 = _snap("worker", {a: 6, b: 5}, {a: 6, b: 4})
    w2 = _snap("worker", {a: 5, b: 6}, {a: 7, b: 6})  # a reconnect counts as a connect
    custom = _snap("worker", {"10.0.0.9:4040": 1}, {"10.0.0.9:4040": 1})
    master = core.Snapshot(role="master")
    wire = [core.Snapshot.from_wire(json.loads(json.dumps(s.to_wire()))) for s in (w1, w2)]
    report = _build([master, *wire, custom], f"{a},{b},{c}", [a, b, c])
    assert report["host"] == f"{a},{b},{c}"  # as given
    assert report["hosts"] == [
        {"host": a, "users": 11, "connects": 13},
        {"host": b, "users": 11, "connects": 10},
        {"host": c, "users": 0, "connects": 0},  # listed, though no user went there
        {"host": "10.0.0.9:4040", "users": 1, "connects": 1},  # a class's own host
    ]
    json.dumps(report)


def test_a_snapshot_without_host_counts_reads_as_none() -> None:
    """A worker's snapshot from before host lists existed still merges."""
    data = core.Snapshot(role="worker").to_wire()
    del data["host_users"], data["host_connects"]
    snap = core.Snapshot.from_wire(data)
    assert snap.host_users == {} and snap.host_connects == {}
    report = _build([snap], "127.0.0.1:4040", ["127.0.0.1:4040"])
    assert report["hosts"] == [{"host": "127.0.0.1:4040", "users": 0, "connects": 0}]


def test_the_verdict_names_each_host_only_when_there_are_several() -> None:
    a, b = "127.0.0.1:4040", "127.0.0.1:4041"
    two = _build([_snap("local", {a: 3, b: 2}, {a: 3, b: 0})], f"{a},{b}", [a, b])
    judgement = verdict.judge(two)
    lines = verdict.summary(two, judgement).splitlines()
    assert lines[1].startswith("target ") and f"{a},{b} (line dialect)" in lines[1]
    assert re.fullmatch(rf"hosts +{re.escape(a)}: 3 users, 3 connects", lines[2]), lines
    assert re.fullmatch(rf" +{re.escape(b)}: 2 users, 0 connects", lines[3]), lines
    assert lines[4].startswith("latency (us) ")
    rows = {r["metric"]: r["value"] for r in verdict.web_rows(two, judgement, "final")}
    assert rows["hosts"] == f"{a}: 3 users, 3 connects; {b}: 2 users, 0 connects"

    one = _build([_snap("local", {a: 5}, {a: 5})], a, [a])
    block = verdict.summary(one, verdict.judge(one))
    assert "hosts" not in block and "users" not in block  # the block one host always had
    assert "hosts" not in {r["metric"] for r in verdict.web_rows(one, judgement, "final")}


# --------------------------------------------------------------------------- real runs


def _server_counters(server: Server) -> Counter[str]:
    """The server's ``/stats`` counters (a missing counter reads 0), over a new client."""
    client = server.client("lprobe")
    try:
        client.send("/stats")
        line = client.expect(r"^\* stats: ")[-1]
    finally:
        client.close()
    pairs = (item.split("=", 1) for item in line.removeprefix("* stats: ").split())
    return Counter({name: int(value) for name, value in pairs})


@pytest.mark.timeout(150)
@pytest.mark.parametrize("processes", [1, 2])
def test_a_run_over_two_chatd_servers_loads_both(
    locust_exe: str, start_server: Any, tmp_path: Path, processes: int
) -> None:
    """20 users over two chatd servers: ten each, each server with senders and receivers.

    The two servers are independent (no cluster joins them), so ``#load0`` on one and
    ``#load0`` on the other are two rooms, and a user on one never hears a sender on the
    other. The full clean-run check still applies, because the delivery accounting only
    compares a timing receiver with the senders it has heard (README, Limitations), and
    host slots give every host its own senders and timing receivers in every room (5 and 5
    of its 10 users here): nothing is asserted about delivery across servers. With
    ``--processes 2`` worker 0 deals its users (even global indices) to the first host and
    worker 1 to the second. Each server's own ``/stats`` then tells what reached it.
    """
    first, second = start_server("reactor"), start_server("reactor")
    host = f"127.0.0.1:{first.port},tcp://127.0.0.1:{second.port}"
    extra = ("--processes", "2") if processes > 1 else ()
    stats, report, output = _run_locust(locust_exe, first.port, tmp_path, *extra, host=host)
    _check_run(stats, report, SMOKE_USERS, output)
    labels = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    assert report["host"] == host
    assert report["hosts"] == [{"host": h, "users": 10, "connects": 10} for h in labels]
    assert report["messages"]["senders"] == 10
    assert report["received"]["timing_receivers"] == 10
    block = _verdict_block(output)
    for label in labels:
        assert f"{label}: 10 users, 10 connects" in block, block
    counters = [_server_counters(server) for server in (first, second)]
    for server_counters in counters:
        # its ten users, one connection each (no failures, no reconnects), and our probe
        assert server_counters["connections"] == 10 + 1, counters
        assert server_counters["messages_in"] > 0, counters
    # every message the run sent reached one of the two servers, and nothing else did
    assert sum(c["messages_in"] for c in counters) == report["messages"]["sent"], counters


def _free_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_hosts_where_nothing_listens_end_the_run_with_one_question_naming_them(
    locust_exe: str, tmp_path: Path
) -> None:
    ports = [_free_port(), _free_port()]
    report = tmp_path / "latency.json"
    argv = [
        locust_exe,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        ",".join(f"127.0.0.1:{p}" for p in ports),
        "-u",
        "10",
        "-r",
        "10",
        "-t",
        "60s",
        "--chat-hist-file",
        str(report),
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=90, cwd=tmp_path, env=_clean_env()
    )
    wall = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert wall < 40, "the run went on although no user could join"
    question = (
        f"0 of 10 users joined — is anything listening on "
        f"127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}?"
    )
    assert output.count(question) == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    data = json.loads(report.read_text())
    assert data["hosts"] == [{"host": f"127.0.0.1:{p}", "users": 5, "connects": 0} for p in ports]
    block = _verdict_block(output)
    assert "FAIL" in block and f"127.0.0.1:{ports[1]}: 5 users, 0 connects" in block
