"""Rooms that keep people out, from the line dialect, on every engine, over real sockets.

The hub enforces the modes for both dialects (tests/core/test_hub.py); these pin the line
commands and their wording: /mode, /invite, /join ROOM KEY, /kick, /topic, /pass.
"""

from __future__ import annotations

import pytest

from chatwire import Client, Server


def test_room_operator_closes_a_room_with_invite_only_key_and_limit(server: Server) -> None:
    op, guest, third = server.room("op", "guest", "third")
    op.send("/join #club")
    assert op.read_line() == "* you joined #club (1 here)"
    op.send("/mode +ik sesame")
    assert op.read_line() == "* op set mode +ik sesame on #club"
    guest.send("/join #club")
    assert guest.expect("^!")[-1] == "! cannot join #club: it is invite-only (+i)"
    op.send("/invite guest")
    assert op.read_line() == "* invited guest to #club"
    assert guest.expect("invited")[-1] == "* op invited you to #club (/join #club)"
    guest.send("/join #club")
    assert guest.read_line() == "! cannot join #club: wrong or missing key (+k)"
    guest.send("/join #club sesame")
    assert guest.expect("you joined")[-1] == "* you joined #club (2 here)"
    op.send("/mode -i+l 2")
    op.expect("set mode")
    third.send("/join #club sesame")
    assert third.expect("^!")[-1] == "! cannot join #club: it is full (+l)"
    op.send("/mode")
    assert op.expect("modes of")[-1] == "* modes of #club: +ntkl sesame 2"


def test_bans_match_line_users_and_moderation_silences_them(server: Server) -> None:
    op, bob = server.room("op", "bob")
    op.send("/mode +b bob!*@*")
    op.expect("set mode")
    op.send("/mode +b")
    assert op.read_line() == "* bans of #lobby: bob!*@*"
    bob.send("can I talk?")
    assert bob.expect("^!")[-1] == "! cannot send to #lobby: you are banned (+b)"
    op.send("/mode -b bob!*@*")
    op.expect("set mode")
    op.send("/mode +m")
    op.expect("set mode")
    bob.send("and now?")
    assert bob.expect("^!")[-1] == "! cannot send to #lobby: it is moderated (+m)"
    op.send("/mode +v bob")
    op.expect("set mode")
    bob.send("thanks")
    assert op.expect("thanks")[-1] == "bob: thanks"


def test_only_operators_kick_and_set_the_topic(server: Server) -> None:
    op, bob, cid = server.room("op", "bob", "cid")
    bob.send("/kick cid")
    assert bob.read_line() == "! you are not an operator of #lobby"
    bob.send("/topic mine now")
    assert bob.read_line() == "! you are not an operator of #lobby"
    op.send("/topic tea at five")
    assert cid.expect("topic")[-1] == "* op set the topic of #lobby to: tea at five"
    op.send("/kick cid enough")
    assert cid.expect("kicked")[-1] == "* you were kicked from #lobby by op (enough)"
    assert bob.expect("kicked")[-1] == "* cid was kicked from #lobby by op (enough)"
    cid.send("hello?")
    assert cid.read_line() == "! you are not in a room; /join ROOM"
    cid.send("/topic")
    assert cid.read_line() == "! you are not in a room; /join ROOM"


@pytest.fixture
def locked(engine: str, start_server) -> Server:
    return start_server(engine, "--password", "sesame")


def test_a_password_protected_server_wants_pass_before_the_nickname(locked: Server) -> None:
    c = Client(locked.host, locked.port)
    assert "/pass" in " ".join(c.greeting)
    c.send("amy")
    assert c.read_line() == "! send /pass PASSWORD before your nickname"
    c.send("/pass sesame")
    c.register("amy")
    wrong = Client(locked.host, locked.port)
    wrong.send("/pass guess")
    assert wrong.wait_closed() == ["! wrong password"]
    # Every engine counts the close before its peer can see it (tests/engines/
    # test_close_order.py), so the counter shows it at once.
    c.send("/stats")
    assert "disconnect_bad_password=1" in c.expect("stats")[-1]
