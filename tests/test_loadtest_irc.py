"""The load test's IRC dialect: ``chatload.irc`` directly, then against real daemons.

* Unit tests drive ``IrcDialect`` and ``IrcCounter`` with bytes: parsing and encoding (the
  512-byte limit), registration (``433``, ``PING`` before ``001``, the end of the MOTD),
  joining, and the hot-path ``classify`` of relayed ``PRIVMSG``s.
* ngircd (Debian's ``ngircd``) on a free loopback port: first the dialect over plain
  sockets (a taken nick, a join, a relayed message), then Locust's IRC user
  (``--chat-dialect irc``) for a few seconds. Skipped, with the reason, if ngircd is
  missing.
* InspIRCd (``inspircd``, when installed) with a one-second ping frequency, so every
  connection is pinged several times during the run: a client that did not answer would
  be dropped and show up as a ``disconnected`` failure.

The daemons' configurations turn their flood protection off (ngircd: ``MaxPenaltyTime =
0``; InspIRCd: ``fakelag="no"`` and huge ``threshold``/``commandrate``), allow any number
of connections from one address, and do no DNS or ident lookups: what the bench needs too.
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_loadtest import (
    LOADTEST,
    _check_run,
    _require_locust,
    _run_locust,
    _verdict_block,
)

if str(LOADTEST) not in sys.path:
    sys.path.insert(0, str(LOADTEST))

import chat_core as core  # noqa: E402
import chat_options as options  # noqa: E402
import chatload  # noqa: E402
from chatload import irc  # noqa: E402


@pytest.fixture(name="locust_exe")
def locust_exe_fixture() -> str:
    return _require_locust()


#: Users of the Locust runs here: two rooms of ten.
USERS = 20
#: InspIRCd's ping frequency in the fixture: it pings every connection this often and drops
#: one that has not answered by the next ping. Short, so a few seconds see several pings;
#: not one second, so a load generator busy for a moment on a shared machine is not dropped.
PINGFREQ_S = 2


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PING :irc.test", ("", "", "PING", ("irc.test",))),
        (
            b":irc.test 001 lab1 :Welcome lab1!~lab1@127.0.0.1",
            ("", "irc.test", "001", ("lab1", "Welcome lab1!~lab1@127.0.0.1")),
        ),
        (
            b":a!b@c PRIVMSG #load0 :LT a 1 2 :x",
            ("", "a!b@c", "PRIVMSG", ("#load0", "LT a 1 2 :x")),
        ),
        (b"@time=2026 :a!b@c JOIN #load0", ("time=2026", "a!b@c", "JOIN", ("#load0",))),
        (
            b":srv 005 n NICKLEN=9 CHANTYPES=# :are supported",
            ("", "srv", "005", ("n", "NICKLEN=9", "CHANTYPES=#", "are supported")),
        ),
        (b"notice x :y", ("", "", "NOTICE", ("x", "y"))),
        (b"CMD :", ("", "", "CMD", ("",))),
    ],
)
def test_parse_splits_tags_source_command_and_params(line: bytes, expected: tuple) -> None:
    msg = irc.parse(line)
    assert (msg.tags, msg.source, msg.command, msg.params) == expected


@pytest.mark.parametrize("line", [b"", b"   ", b":srv", b":srv :text", b"@tag"])
def test_a_line_without_a_command_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(chatload.ProtocolError):
        irc.parse(line)


_middle = st.text(
    alphabet=st.characters(blacklist_characters=" \r\n\0:", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)
_trailing = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
    max_size=60,
)


@given(
    command=st.sampled_from(["PRIVMSG", "NICK", "USER", "JOIN", "PONG"]),
    middles=st.lists(_middle, max_size=4),
    trailing=_trailing,
)
def test_encode_and_parse_round_trip(command: str, middles: list[str], trailing: str) -> None:
    line = irc.encode(command, *middles, trailing)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1 and len(line) <= irc.MAX_LINE
    msg = irc.parse(line[:-2])
    assert msg.command == command and msg.params == (*middles, trailing)


def test_encode_never_exceeds_512_bytes_or_smuggles_a_line() -> None:
    fits = "a " + "x" * (512 - len("PRIVMSG #c :a ") - 2)
    assert len(irc.encode("PRIVMSG", "#c", fits)) == 512
    with pytest.raises(ValueError, match="512"):
        irc.encode("PRIVMSG", "#c", fits + "x")
    for bad in ("a\r\nQUIT", "a\nb", "a\0b"):
        with pytest.raises(ValueError):
            irc.encode("PRIVMSG", "#c", bad)
    with pytest.raises(ValueError, match="last"):
        irc.encode("USER", "a b", "0", "*", "real name")


# --------------------------------------------------------------------------- registration


def _registered(nick: str = "labc1", motd_end: bytes = b"376") -> irc.IrcDialect:
    d = irc.IrcDialect()
    d.register(nick)
    for line in (
        b":irc.test 001 %s :Welcome" % nick.encode(),
        b":irc.test 375 %s :- MOTD" % nick.encode(),
    ):
        assert d.handshake_event(line) is None
    assert d.handshake_event(
        b":irc.test %s %s :End" % (motd_end, nick.encode())
    ) == chatload.Registered(nick)
    return d


def test_registration_sends_nick_and_user_and_waits_for_the_end_of_the_motd() -> None:
    d = irc.IrcDialect()
    assert d.register("labc1") == b"NICK labc1\r\nUSER labc1 0 * :chatd loadtest\r\n"
    # daemons may ping before 001; notices and numerics we do not know are just skipped
    assert d.handshake_event(b"PING :cookie123") == chatload.Reply(b"PONG cookie123\r\n")
    assert d.handshake_event(b":irc.test NOTICE * :*** Looking up your hostname") is None
    assert d.handshake_event(b":irc.test 433 * labc1 :Nickname is already in use") == (
        chatload.RegisterRefused("433 Nickname is already in use", retry=True)
    )
    assert d.renick("labc2") == b"NICK labc2\r\n"
    assert d.handshake_event(b":irc.test 001 labc2 :Welcome to the network") is None
    assert d.handshake_event(b":irc.test 005 labc2 NICKLEN=31 CASEMAPPING=ascii :are ok") is None
    assert d.handshake_event(b":irc.test 251 labc2 :There are 3 users") is None
    assert d.handshake_event(b":irc.test 999 labc2 :something new") is None
    assert d.isupport["NICKLEN"] == "31" and d.nicklen == 31
    assert d.handshake_event(b":irc.test 376 labc2 :End of MOTD") == chatload.Registered("labc2")


def test_no_motd_also_ends_registration_and_001_names_our_real_nick() -> None:
    d = irc.IrcDialect()
    d.register("labcdefgh")
    d.handshake_event(b":srv 001 labcdef :Welcome")  # a server that shortened the nick
    assert d.handshake_event(b":srv 422 labcdef :MOTD File is missing") == chatload.Registered(
        "labcdef"
    )


@pytest.mark.parametrize("numeric", [b"432", b"465"])
def test_a_nick_or_connection_the_server_will_never_take_is_not_retried(numeric: bytes) -> None:
    d = irc.IrcDialect()
    d.register("labc1")
    event = d.handshake_event(b":srv " + numeric + b" * labc1 :No")
    assert isinstance(event, chatload.RegisterRefused) and not event.retry


def test_error_announces_the_close() -> None:
    d = irc.IrcDialect()
    d.register("labc1")
    assert d.handshake_event(b"ERROR :Closing link: too many") == chatload.Closing(
        "Closing link: too many"
    )


def test_join_waits_for_our_own_join_echo() -> None:
    d = _registered("labc1")
    assert d.join("#load0") == b"JOIN #load0\r\n"
    assert d.handshake_event(b":lxyz9!~lxyz9@h JOIN #load0") is None  # someone else
    assert d.handshake_event(b":LABC1!~labc1@h JOIN :#LOAD0") == chatload.Joined("#load0")


def test_join_errors_naming_the_channel_refuse_the_join() -> None:
    d = _registered("labc1", motd_end=b"422")
    d.join("#load0")
    assert d.handshake_event(b":srv 471 labc1 #other :Cannot join (+l)") is None
    assert d.handshake_event(b":srv 471 labc1 #load0 :Cannot join channel (+l)") == (
        chatload.JoinRefused("471 Cannot join channel (+l)")
    )


def test_casemapping_decides_nick_equality() -> None:
    d = _registered("l[a]")
    d.join("#load0")
    assert d.handshake_event(b":l{a}!u@h JOIN #load0") == chatload.Joined("#load0")  # rfc1459
    d = irc.IrcDialect()
    d.register("l[a]")
    d.handshake_event(b":srv 001 l[a] :hi")
    d.handshake_event(b":srv 005 l[a] CASEMAPPING=ascii :ok")
    d.handshake_event(b":srv 376 l[a] :End")
    d.join("#load0")
    assert d.handshake_event(b":l{a}!u@h JOIN #load0") is None  # ascii: different nicks


# --------------------------------------------------------------------------- session


def test_classify_finds_our_messages_among_everything_a_daemon_sends() -> None:
    d = _registered("labc1")
    d.join("#load0")
    kind, msg = d.classify(b":lxyz9!~lxyz9@127.0.0.1 PRIVMSG #load0 :LT lxyz9 7 1234 .....")
    assert kind is chatload.LineKind.MESSAGE and msg == chatload.Message("lxyz9", "lxyz9", 7, 1234)
    tagged = b"@time=x;msgid=y :lxyz9!u@h PRIVMSG #load0 :LT lxyz9 8 99"
    assert d.classify(tagged) == (
        chatload.LineKind.MESSAGE,
        chatload.Message("lxyz9", "lxyz9", 8, 99),
    )
    for line, kind in [
        (b":lxyz9!u@h PRIVMSG labc1 :LT lxyz9 1 2", chatload.LineKind.OTHER),  # private
        (b":human!u@h PRIVMSG #load0 :hello all", chatload.LineKind.OTHER),
        (b":srv NOTICE labc1 :Connection statistics", chatload.LineKind.NOTICE),
        (b":lxyz9!u@h JOIN #load0", chatload.LineKind.NOTICE),
        (b":lxyz9!u@h QUIT :bye", chatload.LineKind.NOTICE),
        (b":srv 353 labc1 = #load0 :labc1 lxyz9", chatload.LineKind.NOTICE),
        (b":srv 404 labc1 #load0 :Cannot send to channel", chatload.LineKind.ERROR),
        (b"PING :srv", chatload.LineKind.PING),
        (b"ERROR :Closing link", chatload.LineKind.CLOSING),
        (b"", chatload.LineKind.OTHER),
    ]:
        assert d.classify(line) == (kind, None), line
    assert d.pong(b"PING :srv") == b"PONG srv\r\n"
    assert d.pong(b":srv PING :tok en") == b"PONG :tok en\r\n"
    with pytest.raises(chatload.ProtocolError):
        d.classify(b":lxyz9!u@h PRIVMSG #load0 :LT lxyz9 seven 1234")


def test_the_largest_payload_fits_512_bytes_sent_and_relayed() -> None:
    d = _registered("labcdefgh")
    room = core.room_for(10**6, 1)  # a long room name for the load test: #load1000000
    d.join(room)
    text = chatload.encode_stamp("labcdefgh", 10**9, 2**53, irc.MAX_PAYLOAD)
    line = d.chat(text)
    assert len(text) == irc.MAX_PAYLOAD and len(line) <= irc.MAX_LINE
    relay_prefix = b":labcdefgh!~labcdefgh@" + b"h" * 60 + b" "
    assert len(relay_prefix + line) <= irc.MAX_LINE
    with pytest.raises(ValueError):
        d.chat(b"x" * 500)
    with pytest.raises(ValueError):
        d.chat(b"LT a 1 2\r\nQUIT")


def test_the_irc_dialect_is_an_option() -> None:
    assert options.DIALECTS["irc"] is irc.IrcDialect
    assert irc.IrcDialect.default_port == 6667


_stream_lines = st.lists(
    st.one_of(
        st.builds(
            lambda t: b"PING :" + t,
            st.binary(min_size=1, max_size=8).map(lambda b: b.hex().encode()),
        ),
        st.just(b":a!b@c PRIVMSG #load0 :LT a 1 2 ...."),
        st.just(b":srv NOTICE x :PINGS are fine here"),
    ),
    max_size=30,
)


@given(
    lines=_stream_lines,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000)),
    tail=st.sampled_from([b"", b":srv 372 x :- partial"]),
)
def test_counter_answers_every_ping_however_the_reads_are_split(
    lines: list[bytes], cuts: list[int], tail: bytes
) -> None:
    # the tail is an incomplete line held from an earlier read: the stream completes it
    data = (b"\r\n" if tail else b"") + b"".join(line + b"\r\n" for line in lines)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    counter = irc.IrcCounter(tail)
    count, replies = 0, []
    for start, end in itertools.pairwise(points):
        n, out = counter.feed(data[start:end])
        count += n
        replies.extend(out)
    assert count == len(lines) + (1 if tail else 0)
    expected = [
        b"PONG " + line[len(b"PING :") :] + b"\r\n" for line in lines if line.startswith(b"PING")
    ]
    assert replies == expected


def test_counter_refuses_an_endless_line() -> None:
    counter = irc.IrcCounter()
    with pytest.raises(chatload.ProtocolError):
        for _ in range(chatload.MAX_PARTIAL_LINE // 1000 + 2):
            counter.feed(b"x" * 1000)


# --------------------------------------------------------------------------- daemons


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """An IRC daemon subprocess on a loopback port, stopped (by its pid) at the end."""

    def __init__(self, argv: list[str], ready: str, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start: {''.join(seen)[-2000:]}") from None
            seen.append(line)
            if ready in line:
                return
            if self.proc.poll() is not None and self.lines.empty():
                raise RuntimeError(f"{argv[0]} exited: {''.join(seen)[-2000:]}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _start(make: Callable[[int], Daemon]) -> Daemon:
    """Start a daemon on a free port; a port taken meanwhile gets another try."""
    for attempt in range(3):
        try:
            return make(_free_port())
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


NGIRCD_CONF = """\
[Global]
Name = irc.test
Info = chatd loadtest fixture
Ports = {port}
Listen = 127.0.0.1
MotdPhrase = load test
[Limits]
MaxNickLength = 31
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
[Options]
PAM = no
DNS = no
Ident = no
"""


@pytest.fixture
def ngircd(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("ngircd") or (
        "/usr/sbin/ngircd" if Path("/usr/sbin/ngircd").exists() else None
    )
    if exe is None:
        pytest.skip("ngircd is not installed (Debian: apt-get install ngircd)")

    def make(port: int) -> Daemon:
        conf = tmp_path / f"ngircd-{port}.conf"
        conf.write_text(NGIRCD_CONF.format(port=port))
        return Daemon([exe, "--nodaemon", "--config", str(conf)], " ready.", port)

    daemon = _start(make)
    try:
        yield daemon.port
    finally:
        daemon.stop()


INSPIRCD_CONF = """\
<server name="irc.test" description="chatd loadtest fixture" network="LoadNet">
<admin name="load" nick="load" email="load@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="main" allow="*" timeout="60" pingfreq="{pingfreq}" threshold="1000000"
         commandrate="100000000" fakelag="no" hardsendq="16M" softsendq="1M" recvq="1M"
         localmax="100000" globalmax="100000" maxconnwarn="no" resolvehostnames="no"
         useident="no" limit="100000" maxchans="20">
<performance netbuffersize="65534" somaxconn="1024" softlimit="100000" clonesonconnect="no">
<channels users="20" opers="60">
<limits maxnick="30">
<pid file="{dir}/inspircd-{port}.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
     target="{dir}/inspircd-{port}.log">
<options prefixquit="Quit: ">
<dns timeout="1">
"""


@pytest.fixture
def inspircd(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("inspircd") or (
        "/usr/sbin/inspircd" if Path("/usr/sbin/inspircd").exists() else None
    )
    if exe is None:
        pytest.skip("inspircd is not installed (Debian: apt-get install inspircd)")

    def make(port: int) -> Daemon:
        conf = tmp_path / f"inspircd-{port}.conf"
        conf.write_text(INSPIRCD_CONF.format(port=port, pingfreq=PINGFREQ_S, dir=tmp_path))
        argv = [exe, "--nofork", f"--config={conf}"]
        if os.getuid() == 0:  # it refuses root unless told that it is meant
            argv.insert(1, "--runasroot")
        return Daemon(argv, "InspIRCd is now running", port)

    daemon = _start(make)
    try:
        yield daemon.port
    finally:
        daemon.stop()


class _Conn:
    """A blocking socket driving an ``IrcDialect`` by hand, every read under a deadline."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.dialect = irc.IrcDialect()
        self.splitter = chatload.LineSplitter()
        self.lines: list[bytes] = []

    def line(self, deadline: float) -> bytes:
        while not self.lines:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.lines.extend(self.splitter.feed(data))
        return self.lines.pop(0)

    def until(self, want: type, deadline: float) -> Any:
        """Feed lines to the dialect until it reports a ``want`` event (answering pings)."""
        while True:
            event = self.dialect.handshake_event(self.line(deadline))
            if isinstance(event, chatload.Reply):
                self.sock.sendall(event.data)
            elif event is not None:
                assert isinstance(event, want), event
                return event


def test_the_dialect_registers_retries_a_taken_nick_joins_and_relays_on_ngircd(
    ngircd: int,
) -> None:
    deadline = time.monotonic() + 20
    tag = "".join(random.choices("abcdefghijklmnopqrstuvwxyz", k=3))
    first, second = _Conn(ngircd), _Conn(ngircd)
    try:
        first.sock.sendall(first.dialect.register(f"l{tag}1"))
        assert first.until(chatload.Registered, deadline) == chatload.Registered(f"l{tag}1")
        second.sock.sendall(second.dialect.register(f"l{tag}1"))  # taken
        refused = second.until(chatload.RegisterRefused, deadline)
        assert refused.retry and refused.reason.startswith("433")
        second.sock.sendall(second.dialect.renick(f"l{tag}2"))
        assert second.until(chatload.Registered, deadline) == chatload.Registered(f"l{tag}2")
        assert second.dialect.nicklen == 31  # MaxNickLength, announced in 005
        for conn in (first, second):
            conn.sock.sendall(conn.dialect.join("#load0"))
            assert conn.until(chatload.Joined, deadline) == chatload.Joined("#load0")
        stamp = time.time_ns() // 1000
        first.sock.sendall(first.dialect.chat(chatload.encode_stamp(f"l{tag}1", 0, stamp, 64)))
        while True:
            kind, msg = second.dialect.classify(second.line(deadline))
            if kind is chatload.LineKind.MESSAGE:
                break
            assert kind in (chatload.LineKind.NOTICE, chatload.LineKind.OTHER), kind
        assert msg == chatload.Message(f"l{tag}1", f"l{tag}1", 0, stamp)
        first.sock.sendall(first.dialect.quit())
    finally:
        first.sock.close()
        second.sock.close()


# --------------------------------------------------------------------------- Locust over IRC


def _irc_args(label: str) -> tuple[str, ...]:
    return ("--chat-dialect", "irc", "--chat-label", label)


@pytest.mark.timeout(150)
def test_locust_irc_user_measures_broadcasts_on_ngircd(
    locust_exe: str, ngircd: int, tmp_path: Path
) -> None:
    stats, report, out = _run_locust(
        locust_exe, ngircd, tmp_path, *_irc_args("ngircd"), users=USERS
    )
    _check_run(stats, report, USERS, out)
    assert report["dialect"] == "irc" and report["label"] == "ngircd"
    assert report["messages"]["senders"] == 10
    assert report["received"]["timing_receivers"] == 10
    assert "(ngircd, irc dialect)" in _verdict_block(out)


@pytest.mark.timeout(150)
def test_locust_irc_churn_and_lurkers_run_cleanly_on_ngircd(
    locust_exe: str, ngircd: int, tmp_path: Path
) -> None:
    """Churn users QUIT and come back under new nicks; lurkers only read."""
    classes = ("ChatterUser", "LurkerUser", "ChurnUser")
    stats, report, _ = _run_locust(
        locust_exe,
        ngircd,
        tmp_path,
        *_irc_args("ngircd"),
        *classes,
        users=USERS,
        measure_time="3s",
    )
    by_name = {entry["name"]: entry for entry in stats}
    assert sum(entry["num_failures"] for entry in stats) == 0, by_name
    assert by_name["broadcast"]["num_requests"] > 0
    assert by_name["connect"]["num_requests"] > USERS  # the churn users reconnected
    assert report["delivery"]["undelivered"] == 0


@pytest.mark.timeout(150)
def test_locust_irc_user_answers_inspircds_pings(
    locust_exe: str, inspircd: int, tmp_path: Path
) -> None:
    """InspIRCd pings every two seconds here and drops a client that does not answer in time.

    InspIRCd pings only clients that sent nothing for a ping period, so the users here
    include readers of both kinds that never send: at share 0.5 the senders are the odd
    slots, and a timing sample of 0.25 makes slots 0, 4, 8... timing receivers, so slots
    2, 6, 10... are silent counting receivers. The run lasts several ping periods: a
    missed ``PONG`` from either kind would be a ``disconnected`` failure.
    """
    stats, report, out = _run_locust(
        locust_exe,
        inspircd,
        tmp_path,
        *_irc_args("inspircd"),
        "--chat-measure-time",
        "4s",
        "--chat-timing-sample",
        "0.25",
        users=USERS,
    )
    _check_run(stats, report, USERS, out)
    assert report["dialect"] == "irc"
    assert report["received"]["counting_receivers"] == 15  # 5 silent, 10 sending
    assert report["received"]["timing_receivers"] == 5
