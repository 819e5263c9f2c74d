"""What an idle registered IRC connection keeps (issue 20: at most 2,048 bytes of RSS each
at 10,000 connections).

State used only before registration, or only while input is being handled, is dropped or
never made for a connection that sits still; these tests pin that down, and that the
behaviour around it did not change.
"""

from __future__ import annotations

import dataclasses

from chatd.core.model import Member
from chatd.dialects.irc.registration import State
from chatd.dialects.irc.wire import IrcDecoder, Message
from engine_double import World


def test_a_registered_idle_session_keeps_no_registration_state_batch_or_input_buffer() -> None:
    w = World()
    amy = w.connect()
    assert amy.session.registration is not None
    assert amy.session.state is State.REGISTERING
    amy.send("NICK amy\r\nUSER amy 0 * :Amy Pond\r\nJOIN #tardis")
    session = amy.session
    assert session.state is State.REGISTERED
    assert session.registration is None
    assert session.batch_room is None and session.batch is None
    assert session.decoder.buffered == 0
    assert session.member.realname == "Amy Pond"
    assert session.member.mask == "amy!~amy@10.0.0.1"


def test_registration_state_survives_a_refused_nick_until_registration() -> None:
    w = World()
    w.irc("amy")
    bob = w.connect(host="10.0.0.2")
    bob.send("USER bob 0 * :Bob\r\nNICK amy")
    assert any(" 433 " in line for line in bob.lines())
    reg = bob.session.registration
    assert reg is not None and reg.nick is None and reg.username == "bob"
    bob.send("NICK bob")
    assert any(" 001 bob " in line for line in bob.lines())
    assert bob.session.registration is None


def test_cap_end_after_registration_changes_nothing() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("CAP END")
    assert amy.lines() == []
    amy.send("USER again 0 * :x")
    assert amy.lines() == [":irc.test 462 amy :You may not reregister"]


def test_collected_privmsgs_go_out_in_order_and_their_list_is_dropped() -> None:
    w = World()
    amy, bob = w.irc("amy"), w.irc("bob", host="10.0.0.2")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    amy.lines()
    bob.lines()
    amy.send("PRIVMSG #c :one\r\nPRIVMSG #c :two\r\nPRIVMSG #d :three")
    assert bob.lines() == [
        ":amy!~amy@10.0.0.1 PRIVMSG #c :one",
        ":amy!~amy@10.0.0.1 PRIVMSG #c :two",
    ]
    assert amy.session.batch is None and amy.session.batch_room is None


def test_the_decoder_lets_go_of_its_buffer_once_every_line_is_read() -> None:
    decoder = IrcDecoder()
    empty = decoder._buf
    decoder.feed(b"PING a\r\nPING")
    assert decoder.next_item() == Message("PING", ("a",))
    assert decoder.next_item() is None
    assert decoder.buffered == 4  # the partial line is kept
    decoder.feed(b" b\r")
    assert decoder.next_item() == Message("PING", ("b",))
    assert decoder.next_item() is None
    assert decoder._buf is empty  # shared by every idle decoder
    decoder.feed(b"\nPING c\n")  # the LF pairs with the CR of the last feed
    assert decoder.items() == [Message("PING", ("c",))]
    assert decoder._buf is empty


def test_two_idle_decoders_share_their_empty_buffer_and_limits() -> None:
    a, b = IrcDecoder(), IrcDecoder()
    assert a._buf is b._buf
    assert a._max_body is b._max_body == 510


def test_a_member_keeps_its_id_nick_user_and_host_once_in_its_source() -> None:
    m = Member("aaaaa1", "amy", "amy", "~amy", "10.0.0.1", modes="B")
    assert m.key is m.nick  # a folded nick is its own key
    assert (m.uid, m.nick, m.user, m.host, m.mask) == (
        "aaaaa1",
        "amy",
        "~amy",
        "10.0.0.1",
        "amy!~amy@10.0.0.1",
    )
    assert m.source.bot
    m.nick = "Rory"
    assert (m.nick, m.source.nick, m.source.uid, m.source.bot) == ("Rory", "Rory", "aaaaa1", True)
    assert Member("aaaaa2", "Amy", "amy", "~amy", "h").key == "amy"
    assert set(dataclasses.asdict(m)) >= {"key", "realname", "rooms", "source"}
    assert not hasattr(m, "__dict__")
