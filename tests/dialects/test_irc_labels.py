"""IRCv3 labeled-response (with batch): the splicing helpers, then whole transcripts."""

from __future__ import annotations

import pytest

from chatd.dialects.irc.labels import add_tag, response
from engine_double import World

CAPS = "batch labeled-response"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b":s PONG s x\r\n", b"@label=a :s PONG s x\r\n"),
        (b"@time=t :n JOIN #c\r\n", b"@label=a;time=t :n JOIN #c\r\n"),
    ],
)
def test_add_tag_puts_the_tag_first_in_the_tag_section(line: bytes, expected: bytes) -> None:
    assert add_tag(line, b"label=a") == expected


def test_response_is_an_ack_one_labeled_line_or_a_batch() -> None:
    assert response(b"", "x y;z", "s", "1") == b"@label=x\\sy\\:z :s ACK\r\n"
    assert response(b":s 421 n FOO :Unknown\r\n", "l", "s", "1") == (
        b"@label=l :s 421 n FOO :Unknown\r\n"
    )
    assert response(b":a X\r\n:b Y\r\n", "l", "s", "7") == (
        b"@label=l :s BATCH +7 labeled-response\r\n"
        b"@batch=7 :a X\r\n@batch=7 :b Y\r\n:s BATCH -7\r\n"
    )
    # Without the batch capability several lines go out as they are.
    assert response(b":a X\r\n:b Y\r\n", "l", "s", None) == b":a X\r\n:b Y\r\n"


def test_a_response_that_is_one_batch_carries_the_label_and_inner_batches_nest() -> None:
    history = b":s BATCH +1 chathistory #c\r\n@batch=1 :a PRIVMSG #c :x\r\n:s BATCH -1\r\n"
    assert response(history, "l", "s", "2") == b"@label=l " + history
    assert response(b":s BATCH +1 chathistory #c\r\n:s BATCH -1\r\n", "l", "s", "2") == (
        b"@label=l :s BATCH +1 chathistory #c\r\n:s BATCH -1\r\n"
    )
    assert response(b":s NOTICE n :first\r\n" + history, "l", "s", "2") == (
        b"@label=l :s BATCH +2 labeled-response\r\n"
        b"@batch=2 :s NOTICE n :first\r\n"
        b"@batch=2 :s BATCH +1 chathistory #c\r\n"
        b"@batch=1 :a PRIVMSG #c :x\r\n"
        b"@batch=2 :s BATCH -1\r\n"
        b":s BATCH -2\r\n"
    )
    # Two batches are not one: they go in a labeled-response batch.
    two = b":s BATCH +1 x\r\n:s BATCH -1\r\n:s BATCH +3 x\r\n:s BATCH -3\r\n"
    assert response(two, "l", "s", "4").startswith(b"@label=l :s BATCH +4 labeled-response\r\n")


def test_single_replies_are_labeled_and_silent_commands_are_acked() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS)
    amy.send("@label=1 PING tok\r\n@label=2 PONG tok\r\n@label=3 FROB\r\n@label=4 NICK amy2")
    assert amy.lines() == [
        "@label=1 :irc.test PONG irc.test tok",
        "@label=2 :irc.test ACK",
        "@label=3 :irc.test 421 amy FROB :Unknown command",
        "@label=4 :amy!~amy@10.0.0.1 NICK amy2",  # delivered by the router, still labeled
    ]


JOIN_BATCH = """\
@label=j :irc.test BATCH +1 labeled-response
@batch=1 :amy!~amy@10.0.0.1 JOIN #c
@batch=1 :irc.test 353 amy = #c :@amy
@batch=1 :irc.test 366 amy #c :End of /NAMES list
@batch=1 :irc.test 403 amy nope :No such channel
:irc.test BATCH -1
"""


def test_a_reply_of_several_lines_is_one_labeled_batch() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS)
    amy.send("@label=j JOIN #c,nope")
    assert amy.lines() == JOIN_BATCH.splitlines()


def test_a_message_to_oneself_is_delivered_unlabeled_and_echoed_labeled() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS + " echo-message")
    amy.send("@label=m PRIVMSG amy :hi")
    assert amy.lines() == [
        ":amy!~amy@10.0.0.1 PRIVMSG amy :hi",
        "@label=m :amy!~amy@10.0.0.1 PRIVMSG amy :hi",
    ]


def test_recipients_never_see_the_label_and_several_echoes_are_batched() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS + " echo-message")
    bob, cid = w.irc("bob", caps=CAPS), w.line("cid")
    amy.send("@label=p PRIVMSG bob,cid :hi")
    assert bob.lines() == [":amy!~amy@10.0.0.1 PRIVMSG bob :hi"]
    assert cid.lines() == ["amy (private): hi"]
    assert amy.lines() == [
        "@label=p :irc.test BATCH +1 labeled-response",
        "@batch=1 :amy!~amy@10.0.0.1 PRIVMSG bob :hi",
        "@batch=1 :amy!~amy@10.0.0.1 PRIVMSG cid :hi",
        ":irc.test BATCH -1",
    ]


def test_a_labeled_channel_message_is_not_held_for_the_next_command() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS)
    bob = w.irc("bob")
    bob.send("JOIN #c")
    bob.lines()
    amy.send("@label=a PRIVMSG #c :hi\r\n@label=b PRIVMSG #nowhere :hi")
    assert amy.lines() == [
        "@label=a :irc.test 404 amy #c :Cannot send to channel (you are not in it (+n))",
        "@label=b :irc.test 403 amy #nowhere :No such channel",
    ]
    amy.send("JOIN #c")
    amy.lines()
    amy.send("@label=c PRIVMSG #c :hi")
    assert amy.lines() == ["@label=c :irc.test ACK"]
    assert bob.lines()[-1] == ":amy!~amy@10.0.0.1 PRIVMSG #c :hi"


def test_without_the_capability_a_label_is_ignored() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("@label=1 PING tok\r\n@label=2 PONG tok")
    assert amy.lines() == [":irc.test PONG irc.test tok"]


def test_without_batch_only_single_replies_are_labeled() -> None:
    w = World()
    amy = w.irc("amy", caps="labeled-response")
    amy.send("@label=1 PING tok\r\n@label=2 JOIN #c")
    assert amy.lines() == [
        "@label=1 :irc.test PONG irc.test tok",
        ":amy!~amy@10.0.0.1 JOIN #c",
        ":irc.test 353 amy = #c :@amy",
        ":irc.test 366 amy #c :End of /NAMES list",
    ]


def test_a_labeled_quit_gets_its_error_labeled_before_the_close() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS)
    amy.send("@label=q QUIT :bye")
    assert amy.lines() == ["@label=q ERROR :Closing Link: 10.0.0.1 (Quit: bye)"]
    assert amy.transport.closed is not None


def test_a_labeled_line_that_is_not_utf8_gets_a_labeled_fail() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS)
    amy.session.data_received(b"@label=u PRIVMSG amy :\xff\r\n")
    amy.session.process(w.now)
    assert amy.lines() == [
        "@label=u :irc.test FAIL PRIVMSG INVALID_UTF8 :Message rejected: not UTF-8"
    ]
