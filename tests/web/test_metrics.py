"""``GET /metrics`` and ``GET /health`` on every engine, and the code that renders them.

The end-to-end tests start a real chatd (``--http-port 0``), put line, IRC and WebSocket
users in rooms, make them chat, and read the pages over HTTP on loopback. The Prometheus
text is parsed with prometheus_client's own parser, so what passes here is what a
Prometheus server would scrape. Every read has a deadline; the order of events is made
certain by round trips (a ``/ping``, an IRC ``PING``, a relayed line), never by sleeping.

The pure tests drive :func:`chatd.web.metrics.render` and
:class:`chatd.core.measures.Histogram` directly.
"""

from __future__ import annotations

import http.client
import json
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from chatd import __version__
from chatd.core.measures import BUCKETS, Histogram, Measures
from chatd.web.metrics import CONTENT_TYPE, GAUGES, render
from chatwire import ALL_ENGINES, TIMEOUT, UVLOOP, Server

ServerFactory = Callable[..., Server]

#: Every server here: both TCP dialects and the HTTP listener, history in memory.
OPTIONS = ("--ephemeral", "--irc-port", "0", "--http-port", "0")
#: Chat lines sent between the two scrapes.
LINES = 5


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every engine, asyncio on uvloop included when installed (overrides conftest's)."""
    return str(request.param)


@pytest.fixture
def web(engine: str, start_server: ServerFactory) -> Server:
    """A server of the engine with an HTTP listener (stopped and checked by start_server:
    a non-zero exit or a traceback fails the test)."""
    return start_server(engine, *OPTIONS)


# --------------------------------------------------------------------------- helpers


def http_port(server: Server) -> int:
    """The HTTP listener's port: the one listening socket that is not a known listener.

    :class:`chatwire.Server` reads the ``listening on`` lines of the options it knows, and
    chatd binds every listener before it prints the first of them, so once the Server is
    up the kernel already lists the HTTP socket as listening: no waiting is needed."""
    if "http" in server.ports:
        return server.ports["http"]
    known = set(server.ports.values())
    found = {
        conn.laddr.port
        for conn in psutil.Process(server.proc.pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port not in known
    }
    assert len(found) == 1, f"expected one more listener besides {known}, found {found}"
    server.ports["http"] = found.pop()
    return server.ports["http"]


def get(server: Server, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of one request on a connection of its own."""
    conn = http.client.HTTPConnection(server.host, http_port(server), timeout=TIMEOUT)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


class Scrape:
    """One parsed ``/metrics`` page: families by name, and single values by sample name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[str, float] = {}
        for family in self.families.values():
            for sample in family.samples:
                if not sample.labels:
                    assert sample.name not in self.samples, f"{sample.name} appears twice"
                    self.samples[sample.name] = sample.value

    def __getitem__(self, name: str) -> float:
        return self.samples[name]

    def get(self, name: str, default: float = 0) -> float:
        return self.samples.get(name, default)


def scrape(server: Server) -> Scrape:
    status, content_type, body = get(server, "/metrics")
    assert status == 200, body
    assert content_type == CONTENT_TYPE
    return Scrape(body.decode())


def health(server: Server) -> dict[str, object]:
    status, content_type, body = get(server, "/health")
    assert status == 200, body
    assert content_type == "application/json"
    data = json.loads(body)
    assert isinstance(data, dict), data
    return data


def check_conventions(page: Scrape) -> None:
    """Every family is ``chatd_*``; counters' samples end in ``_total``, others' do not;
    every value is a finite number, a counter's never negative."""
    assert page.text.endswith("\n")
    assert page.families, page.text
    for name, family in page.families.items():
        assert name.startswith("chatd_"), name
        assert family.type in ("counter", "gauge", "histogram"), (name, family.type)
        assert family.documentation, f"{name} has no HELP"
        assert family.samples, f"{name} has no sample"
        for sample in family.samples:
            assert sample.name.startswith("chatd_"), sample
            assert math.isfinite(sample.value), sample
            if family.type == "counter":
                assert sample.name == name + "_total", sample
                assert sample.value >= 0 and sample.value == int(sample.value), sample
            else:
                assert not sample.name.endswith("_total"), sample
    info = page.families["chatd_build_info"]
    assert info.type == "gauge"


def histogram(page: Scrape, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """A histogram's ``(le, cumulative count)`` buckets, sum and count, checked to be
    well-formed: chatd's bounds in order, then ``+Inf``; counts never decreasing; the
    ``+Inf`` bucket equal to ``_count``; a sum that fits the counts."""
    family = page.families[name]
    assert family.type == "histogram", family
    buckets: list[tuple[float, float]] = []
    total = count = None
    for sample in family.samples:
        if sample.name == name + "_bucket":
            assert set(sample.labels) == {"le"}, sample
            buckets.append((float(sample.labels["le"]), sample.value))
        elif sample.name == name + "_sum":
            total = sample.value
        elif sample.name == name + "_count":
            count = sample.value
        else:
            raise AssertionError(f"unexpected sample {sample}")
    assert total is not None and count is not None, family.samples
    assert [le for le, _ in buckets] == [*BUCKETS, math.inf]
    values = [value for _, value in buckets]
    assert values == sorted(values), f"{name}: buckets not cumulative: {values}"
    assert values[-1] == count, f"{name}: +Inf bucket {values[-1]} != _count {count}"
    assert count == int(count) and count >= 0
    assert total >= 0
    if count == 0:
        assert total == 0
    return buckets, total, count


@pytest.fixture
def websocket_line(web: Server) -> Iterator[Callable[[str], ClientConnection]]:
    """Line-dialect users over WebSocket (``/line``), closed at the end of the test."""
    with ExitStack() as opened:

        def open_one(nick: str) -> ClientConnection:
            url = f"ws://{web.host}:{http_port(web)}/line"
            ws = opened.enter_context(ws_connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT))
            ws.send(nick)
            read_until(ws, lambda line: line.startswith(f"* you are {nick}"))
            return ws

        yield open_one


def read_until(ws: ClientConnection, pred: Callable[[str], bool]) -> list[str]:
    """A WebSocket user's messages up to the first that matches (each read bounded)."""
    lines = []
    while True:
        message = ws.recv(timeout=TIMEOUT)
        assert isinstance(message, str), message
        lines.append(message)
        if pred(message):
            return lines


def ws_ping(ws: ClientConnection, token: str = "sync") -> list[str]:
    ws.send(f"/ping {token}")
    return read_until(ws, lambda line: line == f"* pong {token}")[:-1]


# --------------------------------------------------------------------------- end to end


def test_metrics_follow_prometheus_conventions_and_count_the_chat(
    engine: str, web: Server, websocket_line: Callable[[str], ClientConnection]
) -> None:
    alice = web.client("alice")
    bob = web.irc("bob")
    bob.send("JOIN #lobby")
    bob.expect(r"^:\S+ 366 bob #lobby ")
    alice.expect(r"bob")  # the join notice
    alice.no_more_lines()

    before = scrape(web)
    check_conventions(before)

    # build_info: one sample, the engine and the version as labels.
    (info,) = before.families["chatd_build_info"].samples
    assert info.value == 1
    assert info.labels == {
        "engine": "asyncio" if engine == UVLOOP else engine,
        "version": __version__,
    }

    # The gauges are what is: two chat connections (the scrape's own HTTP connection is
    # none), both members in one room.
    assert before["chatd_clients"] == 2, before.text
    assert before["chatd_registered"] == 2
    assert before["chatd_rooms"] == 1
    for gauge in ("chatd_clients", "chatd_registered", "chatd_rooms"):
        assert before.families[gauge].type == "gauge", gauge
    assert before["chatd_connections_total"] >= 2
    assert before["chatd_http_requests_total"] >= 1

    # Both histograms are there before any chat: delivery still empty; the loop turns
    # counted by the reactor only (the other engines have no turn).
    _, _, delivered_before = histogram(before, "chatd_delivery_seconds")
    assert delivered_before == 0
    _, _, turns_before = histogram(before, "chatd_loop_turn_seconds")
    if engine == "reactor":
        assert turns_before > 0
    else:
        assert turns_before == 0

    # Chat: LINES lines from alice (line dialect), each read by bob (IRC) before the
    # next is sent: lines that arrive together are one chat event for the hub (and one
    # delivery), so one at a time makes each line an event of its own.
    for n in range(LINES):
        alice.send(f"hello {n}")
        bob.expect(rf"^:alice!\S+ PRIVMSG #lobby :hello {n}$")
    alice.no_more_lines()  # one more line in: /ping

    # A third room member over WebSocket, and a second room (bob's).
    carol = websocket_line("carol")
    bob.send("JOIN #side")
    bob.expect(r"^:\S+ 366 bob #side ")
    bob.sync()

    after = scrape(web)
    check_conventions(after)
    assert after["chatd_clients"] == 3, after.text
    assert after["chatd_registered"] == 3
    assert after["chatd_rooms"] == 2
    assert after["chatd_websocket_clients"] == 1
    assert after.families["chatd_websocket_clients"].type == "gauge"
    assert after["chatd_websocket_upgrades_total"] == 1

    # Counters only grow, and these by what was sent: LINES chat lines and a /ping
    # from alice; bob's JOIN and PINGs; carol's nick.
    for name, value in before.samples.items():
        if before.families[_family(before, name)].type == "counter":
            assert after.get(name) >= value, f"{name} went down: {value} -> {after.get(name)}"
    assert after["chatd_lines_in_total"] - before["chatd_lines_in_total"] >= LINES + 1
    assert after["chatd_messages_in_total"] - before.get("chatd_messages_in_total") == LINES
    assert after["chatd_bytes_in_total"] > before["chatd_bytes_in_total"]
    assert after["chatd_bytes_out_total"] > before["chatd_bytes_out_total"]
    assert after["chatd_writes_out_total"] > before["chatd_writes_out_total"]
    assert after["chatd_connections_total"] - before["chatd_connections_total"] >= 2
    assert after["chatd_http_requests_total"] > before["chatd_http_requests_total"]

    # One delivery observed per chat event (here: per line), none over the top bucket.
    buckets, total, delivered = histogram(after, "chatd_delivery_seconds")
    assert delivered == LINES
    assert 0 <= total < LINES * BUCKETS[-1]
    assert dict(buckets)[BUCKETS[-1]] == LINES
    _, turn_seconds, turns = histogram(after, "chatd_loop_turn_seconds")
    if engine == "reactor":
        assert turns > turns_before
        assert turn_seconds > 0
    else:
        assert turns == 0 and turn_seconds == 0

    # A room that empties is gone from the gauge (PART is one step of the hub: the
    # scrape that follows its echo sees it done).
    bob.send("PART #side")
    bob.expect(r"^:bob!\S+ PART #side")
    bob.sync()
    assert scrape(web)["chatd_rooms"] == 1

    ws_ping(carol)
    alice.close()
    bob.close()


def _family(page: Scrape, sample: str) -> str:
    for name, family in page.families.items():
        if any(s.name == sample for s in family.samples):
            return name
    raise KeyError(sample)


def test_health_says_ok_with_the_client_count(engine: str, web: Server) -> None:
    empty = health(web)
    assert (empty["status"], empty["clients"]) == ("ok", 0), empty
    alice, bob = web.room("alice", "bob")
    carol = web.irc("carol")
    carol.sync()
    data = health(web)
    assert data["status"] == "ok"
    assert data["engine"] == ("asyncio" if engine == UVLOOP else engine)
    assert data["version"] == __version__
    assert data["clients"] == 3
    assert data["rooms"] == 1
    assert "redis" not in data  # no cluster
    for c in (alice, bob, carol):
        c.close()


def test_head_answers_the_headers_without_a_body(web: Server) -> None:
    status, content_type, body = get(web, "/metrics", method="HEAD")
    assert (status, content_type, body) == (200, CONTENT_TYPE, b"")
    status, content_type, body = get(web, "/health", method="HEAD")
    assert (status, content_type, body) == (200, "application/json", b"")


# --------------------------------------------------------------------------- pure


def parse(page: bytes) -> Scrape:
    return Scrape(page.decode())


def test_histogram_buckets_are_upper_bounds_inclusive() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.5, 1.0, 1.5, 100.0):
        h.observe(value)
    # le="0.1" holds 0.0 and 0.1 (a bound is inclusive), le="1.0" adds 0.5 and 1.0,
    # +Inf adds 1.5 and 100.
    assert h.counts == [2, 2, 2]
    assert h.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 6)]
    assert h.count == 6
    assert h.sum == pytest.approx(0.0 + 0.1 + 0.5 + 1.0 + 1.5 + 100.0)


def test_empty_histogram_has_every_bucket_at_zero() -> None:
    h = Histogram()
    assert h.bounds == BUCKETS
    assert list(BUCKETS) == sorted(BUCKETS)
    assert h.cumulative() == [*((repr(b), 0) for b in BUCKETS), ("+Inf", 0)]
    assert (h.sum, h.count) == (0.0, 0)


def test_render_is_parsed_back_by_prometheus() -> None:
    measures = Measures()
    for value in (0.00001, 0.0003, 0.002, 0.002, 7.0, 60.0):
        measures.delivery.observe(value)
    snapshot = {
        "clients": 4,
        "rooms": 2,
        "registered": 3,
        "websocket_clients": 1,
        "lines_in": 40,
        "bytes_out": 123456,
        "connections": 9,
        "odd-key.name": 7,
    }
    page = render(snapshot, measures, "reactor", '1.0"rc\\1\nx')
    assert page.endswith(b"\n")
    scraped = parse(page)
    check_conventions(scraped)

    # Labels are escaped: the parser gets the version back as it was.
    (info,) = scraped.families["chatd_build_info"].samples
    assert info == Sample("chatd_build_info", {"version": '1.0"rc\\1\nx', "engine": "reactor"}, 1)

    # Gauges under their own names, everything else a counter with _total.
    for key, value in snapshot.items():
        name = "chatd_" + key.replace("-", "_").replace(".", "_")
        if key in GAUGES:
            assert scraped.families[name].type == "gauge"
            assert scraped[name] == value
        else:
            assert scraped.families[name].type == "counter"
            assert scraped[name + "_total"] == value

    buckets, total, count = histogram(scraped, "chatd_delivery_seconds")
    assert count == 6
    assert total == pytest.approx(0.00001 + 0.0003 + 0.002 * 2 + 7.0 + 60.0)
    cumulative = dict(buckets)
    assert cumulative[0.00001] == 1  # an observation on a bound is in its bucket
    assert cumulative[0.0005] == 2
    assert cumulative[0.0025] == 4
    assert cumulative[10.0] == 5
    assert cumulative[math.inf] == 6
    assert histogram(scraped, "chatd_loop_turn_seconds")[2] == 0


def test_render_of_an_empty_server_has_the_build_info_and_both_histograms() -> None:
    scraped = parse(render({}, Measures(), "threaded", "0.0"))
    check_conventions(scraped)
    assert set(scraped.families) == {
        "chatd_build_info",
        "chatd_delivery_seconds",
        "chatd_loop_turn_seconds",
    }
