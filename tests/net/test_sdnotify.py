"""systemd's notification protocol against real AF_UNIX datagram sockets (a path in
tmp_path, and an abstract one), read back as systemd would read them."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatd.net import sdnotify

#: Seconds a notification may take: it never waits for the receiver, so this is slack.
QUICK = 5.0


def receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(QUICK)
    return sock


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound at a path, named in ``$NOTIFY_SOCKET``."""
    path = tmp_path / "notify"
    with receiver(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def datagram(sock: socket.socket) -> str:
    return sock.recv(65536).decode("utf-8")


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(65536)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(QUICK)
    return False


def finishes_quickly(call: Callable[[], bool]) -> bool:
    """``call()``'s result, failing the test if it takes longer than :data:`QUICK`
    (in a thread, so a call that blocks fails the test instead of hanging it)."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(QUICK)
    assert not thread.is_alive(), f"the notification blocked for {QUICK} s"
    return result[0]


def test_ready_sends_ready_and_status_in_one_datagram(notify_socket: socket.socket) -> None:
    assert sdnotify.ready("listening on 127.0.0.1:4040") is True
    assert datagram(notify_socket) == "READY=1\nSTATUS=listening on 127.0.0.1:4040"
    assert nothing_waiting(notify_socket)


def test_ready_without_a_status_sends_ready_alone(notify_socket: socket.socket) -> None:
    assert sdnotify.ready() is True
    assert datagram(notify_socket) == "READY=1"


def test_notify_sends_its_states_as_one_datagram(notify_socket: socket.socket) -> None:
    assert sdnotify.notify("STATUS=reloading TLS", "RELOADING=1") is True
    assert datagram(notify_socket) == "STATUS=reloading TLS\nRELOADING=1"
    assert nothing_waiting(notify_socket)


def test_reloading_carries_the_monotonic_clock_in_microseconds(
    notify_socket: socket.socket,
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = datagram(notify_socket).split("\n")
    assert first == "RELOADING=1"
    name, _, value = second.partition("=")
    assert name == "MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after


def test_stopping_sends_stopping(notify_socket: socket.socket) -> None:
    assert sdnotify.stopping() is True
    assert datagram(notify_socket) == "STOPPING=1"


def test_an_abstract_address_starts_with_an_at_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"chatd-test-sdnotify-{os.getpid()}-{time.monotonic_ns()}"
    with receiver(b"\0" + name.encode()) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready("up") is True
        assert datagram(sock) == "READY=1\nSTATUS=up"


def test_without_notify_socket_nothing_is_sent(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.ready("up") is False
    assert sdnotify.reloading() is False
    assert sdnotify.stopping() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.ready() is False
    assert nothing_waiting(notify_socket)


@pytest.mark.parametrize("address", ["notify", "vsock:2:1234", "@"])
def test_an_address_it_does_not_speak_is_a_false(
    address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert sdnotify.ready() is False


def test_a_socket_that_is_not_there_is_a_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    assert finishes_quickly(sdnotify.ready) is False


def test_a_full_socket_drops_the_message_without_blocking(
    notify_socket: socket.socket,
) -> None:
    # Nobody reads: the receiver's queue fills (net.unix.max_dgram_qlen datagrams, or
    # its receive buffer), then each notification is dropped at once.
    sent = 0
    while finishes_quickly(functools.partial(sdnotify.notify, f"STATUS=filler {sent}")):
        sent += 1
        assert sent < 100_000, "the receiver's queue never filled"
    assert sent > 0
    assert finishes_quickly(sdnotify.ready) is False
    # What was queued arrives whole and in order; once there is room, sending works again.
    for number in range(sent):
        assert datagram(notify_socket) == f"STATUS=filler {number}"
    assert nothing_waiting(notify_socket)
    assert sdnotify.stopping() is True
    assert datagram(notify_socket) == "STOPPING=1"


def test_a_status_with_line_breaks_stays_one_assignment(notify_socket: socket.socket) -> None:
    assert sdnotify.ready("two\nlines\r\nhere") is True
    assert datagram(notify_socket) == "READY=1\nSTATUS=two lines here"


@pytest.mark.parametrize("state", ["READY", "=1", "READY=1\nSTOPPING=1", ""])
def test_a_malformed_state_is_the_callers_bug(state: str, notify_socket: socket.socket) -> None:
    with pytest.raises(ValueError, match="NAME=value"):
        sdnotify.notify(state)
    assert nothing_waiting(notify_socket)
