"""The cluster's options on the command line: what is refused, in one line, before
anything starts; and the slot arithmetic a Redis Cluster is routed by."""

from __future__ import annotations

import pytest

from chatd.cluster.resp import RedisURLError, parse_url
from chatd.cluster.slots import crc16, keyslot, parse_slots, slot_map
from chatwire import run_chatd


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("--engine", "threaded", "--redis", "redis://127.0.0.1:6379"),
            "--redis needs --engine reactor",
        ),
        (
            ("--engine", "asyncio", "--redis", "redis://127.0.0.1:6379"),
            "--redis needs --engine reactor",
        ),
        (("--redis", "http://127.0.0.1"), "must start with redis:// or rediss://"),
        (("--redis", "redis://127.0.0.1:99999"), "the port is not a number"),
        (("--redis", "redis://127.0.0.1/x"), "the database is a number"),
        (("--redis", "redis://"), "no host"),
        (("--redis", "redis://127.0.0.1", "--data-dir", "/tmp/x"), "drop --data-dir"),
        (("--workers", "2"), "--workers needs --redis"),
        (("--redis-password-file", "/nonexistent"), "--redis-password-file needs --redis"),
        (("--redis", "redis://127.0.0.1", "--redis-ca", "/x"), "need a rediss:// URL"),
        (("--redis", "redis://127.0.0.1", "--redis-prefix", "a{b"), "without braces"),
        (("--redis", "redis://no-such-host.invalid"), "cannot resolve"),
        (("--node-id", "TOOLONG"), "a node id is 5 characters"),
    ],
)
def test_bad_cluster_options_are_refused_in_one_line(args: tuple[str, ...], says: str) -> None:
    done = run_chatd("--port", "0", *args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr, done.stderr
    assert done.stdout == ""


def test_a_redis_url_is_read_with_its_password_and_database() -> None:
    assert parse_url("redis://u:p%40ss@10.0.0.1:7000/3") == (
        "10.0.0.1",
        7000,
        3,
        "u",
        "p@ss",
        False,
    )
    assert parse_url("rediss://h") == ("h", 6379, 0, None, None, True)
    with pytest.raises(RedisURLError):
        parse_url("redis://h:1/0?timeout=3")


def test_slots_are_redis_cluster_s() -> None:
    # Values from the Redis Cluster specification and CLUSTER KEYSLOT on redis-server 7.0.
    assert crc16(b"123456789") == 0x31C3
    assert keyslot("foo") == 12182
    assert keyslot("room:#lobby") == 1079
    assert keyslot("{chatd:g}:log") == keyslot("{chatd:g}:nick:alice") == 13183
    assert keyslot("{}x") == crc16(b"{}x") % 16384  # an empty tag: the whole key
    ranges = parse_slots([[0, 5460, [b"127.0.0.1", 7001, b"id"]], [5461, 16383, [b"::1", 7002]]])
    masters, owner = slot_map(ranges)
    assert masters == [("127.0.0.1", 7001), ("::1", 7002)]
    assert owner[5460] == 0 and owner[5461] == 1
    with pytest.raises(ValueError):
        parse_slots([[0, 16383, [b"redis.example", 6379]]])  # names are not resolved


def test_workers_keep_every_listener_s_port_http_included() -> None:
    """The supervisor binds each listener's port once and gives the workers the ports it
    got, in :attr:`Config.all_listeners` order: the HTTP listeners keep theirs too."""
    from chatd.config import Config, ListenerSpec
    from chatd.workers import with_ports

    config = Config(
        port=0,
        listeners=(ListenerSpec("127.0.0.1", 0, "irc"),),
        http_port=0,
        tls_port=0,
        https_port=0,
        tls_cert="cert.pem",
    )
    kinds = [(s.dialect, s.tls) for s in config.all_listeners]
    ports = [4100 + i for i in range(len(kinds))]
    given = with_ports(config, ports)
    assert [(s.dialect, s.tls, s.port) for s in given.all_listeners] == [
        (dialect, tls, port) for (dialect, tls), port in zip(kinds, ports, strict=True)
    ]
