"""The client's pure parts, called directly: line kinds, tracking, completion, looks, backoff."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.client.backoff import Backoff
from chatd.client.complete import COMMANDS, candidates
from chatd.client.lines import (
    Chat,
    Error,
    Notice,
    Other,
    Private,
    Replayed,
    classify,
    echo_of,
    history_frame,
    visible,
    visible_parts,
)
from chatd.client.look import (
    PALETTE,
    STATUS_MARK,
    history_stamp,
    mentions,
    nick_colour,
    prompt,
    render,
    render_status,
    stamp,
)
from chatd.client.tracker import Change, Tracker

# --------------------------------------------------------------------------- lines


@given(st.text())
def test_visible_parts_add_up_to_visible_and_hide_every_control(text: str) -> None:
    parts = visible_parts(text)
    assert "".join(shown for _, shown in parts) == visible(text)
    for control, shown in parts:
        if not control:
            assert all(ch == "\t" or not (ord(ch) < 32 or 127 <= ord(ch) < 160) for ch in shown), (
                shown
            )


def test_visible_parts_mark_control_runs() -> None:
    assert visible_parts("a\x1b[1mb\x07\x07") == [
        (False, "a"),
        (True, "^["),
        (False, "[1mb"),
        (True, "^G^G"),
    ]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("bob: hi: there", Chat("bob", "hi: there")),
        ("bob (private): psst", Private("bob", "psst")),
        ("* bob joined #lobby", Notice("bob joined #lobby")),
        ("! no such nick: x", Error("no such nick: x")),
        ("1bob: not a nick", Other("1bob: not a nick")),
        ("bob:no space", Other("bob:no space")),
    ],
)
def test_classify_follows_the_protocols_four_kinds(line: str, kind: object) -> None:
    assert classify(line) == kind


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (
            "* #lobby 2027-01-15 08:00:00 bob: hi: there",
            Replayed("#lobby", "2027-01-15 08:00:00", "bob", "hi: there"),
        ),
        (
            "* #lobby 2027-01-15 08:00:05 * bob waves: hi",
            Replayed("#lobby", "2027-01-15 08:00:05", "bob", "waves: hi", action=True),
        ),
        ("* #lobby (3): amy bob cid", Notice("#lobby (3): amy bob cid")),
        ("* #lobby has no topic", Notice("#lobby has no topic")),
        ("* #lobby 2027-01-15 bob: no time", Notice("#lobby 2027-01-15 bob: no time")),
        ("* bob #lobby 2027-01-15 08:00:00 bob: an action", None),
        (
            "#lobby 2027-01-15 08:00:00 bob: not a notice",
            Other("#lobby 2027-01-15 08:00:00 bob: not a notice"),
        ),
    ],
)
def test_a_history_line_is_told_from_every_other_notice(line: str, kind: object) -> None:
    assert classify(line) == (kind if kind is not None else Notice(line[2:]))


def test_history_frames_are_recognised() -> None:
    assert history_frame("history of #lobby (5 lines, times in UTC):") == "start"
    assert history_frame("history of #lobby (1 line, times in UTC):") == "start"
    assert history_frame("history of #lobby (no lines, times in UTC):") == "start"
    assert history_frame("end of history of #lobby") == "end"
    assert history_frame("bob history of #lobby (5 lines, times in UTC):") is None
    assert history_frame("end of history of #lobby, really") is None


def test_echo_shows_what_the_room_sees() -> None:
    assert echo_of("hello", "al") == "al: hello"
    assert echo_of("//slash", "al") == "al: /slash"
    assert echo_of("/me waves ", "al") == "* al waves"
    assert echo_of("/ME waves", "al") == "* al waves"
    assert echo_of("/me", "al") is None
    assert echo_of("/join #x", "al") is None


# --------------------------------------------------------------------------- tracker


def registered(nick: str = "alice", room: str = "#lobby") -> Tracker:
    tracker = Tracker()
    assert tracker.feed(f"* you are {nick}, in {room} (3 here); /help lists commands") is (
        Change.REGISTERED
    )
    return tracker


def test_tracker_learns_nick_room_and_members() -> None:
    tracker = registered()
    assert (tracker.nick, tracker.room, tracker.registered) == ("alice", "#lobby", True)
    assert tracker.feed("* #lobby (3): alice Bob carol") is Change.MEMBERS
    assert tracker.others() == ["Bob", "carol"]
    assert tracker.feed("* dave joined #lobby") is Change.MEMBERS
    assert tracker.feed("* carol left #lobby (bye)") is Change.MEMBERS
    assert tracker.feed("* bob quit (connection closed)") is Change.MEMBERS
    assert tracker.feed("* dave is now known as dan") is Change.MEMBERS
    assert tracker.others() == ["dan"]
    assert tracker.feed("* eve joined #elsewhere") is None
    assert tracker.feed("erin: hi, I was here all along") is Change.MEMBERS
    assert tracker.others() == ["dan", "erin"]


def test_history_lines_teach_the_tracker_nothing() -> None:
    tracker = registered()
    tracker.feed("* #lobby (2): alice bob")
    before = (dict(tracker.members), dict(tracker.correspondents), dict(tracker.rooms))
    replay = [
        "* history of #lobby (3 lines, times in UTC):",
        "* #lobby 2027-01-15 08:00:00 gone: I left long ago",
        "* #lobby 2027-01-15 08:00:01 * gone joined #lobby",
        "* #lobby 2027-01-15 08:00:02 bob: alice, you there?",
        "* end of history of #lobby",
    ]
    assert [tracker.feed(line) for line in replay] == [None] * 5
    assert (tracker.members, tracker.correspondents, tracker.rooms) == before
    assert (tracker.nick, tracker.room) == ("alice", "#lobby")


def test_a_who_reply_split_over_lines_is_collected_whole() -> None:
    tracker = registered()
    assert tracker.feed("* #lobby (5): alice bob") is None
    assert tracker.members == {"alice": "alice"}
    assert tracker.feed("* #lobby (5): carol dave") is None
    assert tracker.feed("* #lobby (5): erin") is Change.MEMBERS
    assert tracker.others() == ["bob", "carol", "dave", "erin"]
    # A reply for a room you are no longer in changes nothing.
    assert tracker.feed("* #other (1): zed") is None


def test_own_nick_change_is_followed() -> None:
    tracker = registered()
    assert tracker.feed("* Alice is now known as al") is Change.NICK
    assert tracker.nick == "al" and tracker.members == {"al": "al"}


def test_you_lines_are_trusted_only_when_expected() -> None:
    # A member called "you" can send "* you joined #trap (1 here)" with /me.
    tracker = registered()
    assert tracker.feed("* you joined #trap (1 here)") is None
    assert tracker.feed("* you are mallory, in #trap (1 here); /help lists commands") is None
    assert (tracker.nick, tracker.room) == ("alice", "#lobby")
    tracker.sent("/join side")
    assert tracker.feed("* you joined #trap (1 here)") is None
    assert tracker.feed("* you joined #Side (4 here)") is Change.JOINED
    assert (tracker.room, tracker.members) == ("#Side", {"alice": "alice"})
    assert tracker.feed("* you joined #side (4 here)") is None  # answered already
    # Others' farewells cannot remove you.
    assert tracker.feed("* alice quit") is None and "alice" in tracker.members


def test_a_join_sent_before_registration_is_expected() -> None:
    # Piped input sends the nick and a /join at once, before the server answers.
    tracker = Tracker()
    tracker.sent("alice")
    tracker.sent("/join #side")
    tracker.feed("* you are alice, in #lobby (1 here); /help lists commands")
    assert tracker.feed("* you joined #side (1 here)") is Change.JOINED


def test_a_lost_connection_keeps_nick_and_room_for_the_reconnect() -> None:
    tracker = registered()
    tracker.feed("* #lobby (2): alice bob")
    tracker.connection_lost()
    assert (tracker.nick, tracker.room, tracker.registered) == ("alice", "#lobby", False)
    assert tracker.members == {}
    assert tracker.feed("* you are alice_, in #lobby (1 here)") is Change.REGISTERED


def test_a_room_name_with_a_control_character_is_not_taken_up() -> None:
    tracker = registered()
    tracker.feed("* rooms (2): #lobby (3), #\x1b[2J (1)")
    assert list(tracker.rooms) == ["#lobby"]


def test_rooms_and_correspondents_are_remembered() -> None:
    tracker = registered()
    tracker.feed("* rooms (2): #lobby (3), #rust (1)")
    tracker.feed("zed (private): psst")
    assert sorted(tracker.rooms.values()) == ["#lobby", "#rust"]
    assert list(tracker.correspondents.values()) == ["zed"]


# --------------------------------------------------------------------------- completion


def with_room() -> Tracker:
    tracker = registered()
    tracker.feed("* #lobby (4): alice bob Bertha carol")
    tracker.feed("* rooms (2): #lobby (4), #rust (1)")
    tracker.feed("zed (private): hi")
    return tracker


def test_completion_of_commands() -> None:
    tracker = with_room()
    assert candidates("/jo", tracker) == [("/join ", -3)]
    assert candidates("/M", tracker) == [("/me ", -2), ("/msg ", -2)]
    assert [c for c, _ in candidates("/", tracker)] == [c + " " for c in COMMANDS]
    assert candidates("//jo", tracker) == []


def test_completion_offers_history() -> None:
    assert "/history" in COMMANDS
    assert candidates("/hi", with_room()) == [("/history ", -3)]


def test_completion_of_nicks_addresses_them_at_the_start() -> None:
    tracker = with_room()
    assert candidates("b", tracker) == [("Bertha: ", -1), ("bob: ", -1)]
    assert candidates("CA", tracker) == [("carol: ", -2)]
    assert candidates("hi ca", tracker) == [("carol ", -2)]
    assert candidates("al", tracker) == []  # not yourself
    assert candidates("", tracker) == [] and candidates("hi ", tracker) == []


def test_completion_of_command_arguments() -> None:
    tracker = with_room()
    assert candidates("/msg z", tracker) == [("zed ", -1)]
    assert candidates("/msg c", tracker) == [("carol ", -1)]
    assert candidates("/join #r", tracker) == [("#rust ", -2)]
    assert candidates("/nick b", tracker) == []
    assert candidates("/msg bob hi c", tracker) == [("carol ", -1)]


# --------------------------------------------------------------------------- look


def test_nick_colours_are_stable_and_case_insensitive() -> None:
    # CRC-32 values, fixed: the same colours in every process and every release.
    assert nick_colour("bob") == nick_colour("BOB") == PALETTE[0xF5CBB140 % 12]
    assert nick_colour("carol") != nick_colour("bob")
    assert len({nick_colour(f"user{i}") for i in range(200)}) == len(PALETTE)


def test_render_colours_nicks_and_marks_controls() -> None:
    assert render("bob: hi \x1b[2J", "alice") == [
        (f"class:nick fg:{nick_colour('bob')}", "bob"),
        ("", ": "),
        ("class:text", "hi "),
        ("class:text class:control", "^["),
        ("class:text", "[2J"),
    ]
    assert render("bob: hi alice!", "alice")[2] == ("class:mention", "hi alice!")
    assert render("alice: mine", "alice")[0] == ("class:nick.me", "alice")
    assert render("x: hi", None, when="12:00 ")[0] == ("class:stamp", "12:00 ")


def test_render_colours_the_nick_a_notice_is_about() -> None:
    coloured = f"class:nick fg:{nick_colour('bob')}"
    assert render("* bob joined #lobby", "alice")[1] == (coloured, "bob")
    assert render("* bob waves", "alice", known=lambda n: n == "bob")[1] == (coloured, "bob")
    assert render("* welcome to chatd", "alice")[1] == ("class:notice", "welcome to chatd")
    assert render("* you are alice, in #x (1 here)", "alice")[1][0] == "class:notice"


def test_a_replayed_line_is_dimmed_with_its_own_time_and_never_a_mention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "CET-1")  # UTC+1, no summer time
    time.tzset()
    try:
        assert history_stamp("2027-01-15 08:00:00") == "2027-01-15 09:00 "
        bob = f"class:nick fg:{nick_colour('bob')}"
        said = render("* #lobby 2027-01-15 08:00:00 bob: alice, hi", "alice", when="12:00 ")
        assert said == [
            ("class:history.stamp", "2027-01-15 09:00 "),
            (bob, "bob"),
            ("class:history", ": "),
            ("class:history.text", "alice, hi"),
        ]
        acted = render("* #lobby 2027-01-15 23:30:00 * alice waves \x1b", "alice")
        assert acted == [
            ("class:history.stamp", "2027-01-16 00:30 "),
            ("class:history", "* "),
            ("class:nick.me", "alice"),
            ("class:history", " "),
            ("class:history.text", "waves "),
            ("class:history.text class:control", "^["),
        ]
    finally:
        monkeypatch.undo()
        time.tzset()
    live = render("bob: alice, hi", "alice")
    assert ("class:mention", "alice, hi") in live  # the same words, live, are a mention
    frame = render("* history of #lobby (1 line, times in UTC):", "alice")
    assert frame == [
        ("class:notice.mark", "* "),
        ("class:history", "history of #lobby (1 line, times in UTC):"),
    ]
    assert render("* end of history of #lobby", "alice")[1][0] == "class:history"


def test_mentions_need_a_whole_word() -> None:
    assert mentions("hey Alice, look", "alice")
    assert not mentions("malice", "alice") and not mentions("alice_", "alice")
    assert mentions("[al] ping", "[al]") and not mentions("x", None)


def test_status_lines_are_marked_apart_from_server_lines() -> None:
    fragments = render_status("connected to x")
    assert fragments[0] == ("class:status.mark", STATUS_MARK + " ")
    assert not STATUS_MARK.startswith(("* ", "! ")) and ":" not in STATUS_MARK


def test_prompt_names_nick_and_room() -> None:
    def text(fragments: list[tuple[str, str]]) -> str:
        return "".join(t for _, t in fragments)

    assert text(prompt(None, None, False, True)) == "nickname> "
    assert text(prompt("al", "#lobby", True, True)) == "al #lobby> "
    assert text(prompt("al", "#lobby", False, False)) == "(disconnected) al #lobby> "


def test_stamp_is_local_hours_and_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert stamp(3600 * 13 + 60 * 7 + 59) == "13:07 "
    finally:
        monkeypatch.undo()
        time.tzset()


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    backoff = Backoff(rng=lambda: 0.5)  # no jitter
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_jitter_stays_within_twenty_percent_and_the_cap() -> None:
    low, high = Backoff(rng=lambda: 0.0), Backoff(rng=lambda: 1.0)
    assert [low.next_delay() for _ in range(6)] == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 24])
    assert [high.next_delay() for _ in range(6)] == pytest.approx([1.2, 2.4, 4.8, 9.6, 19.2, 30])


def test_backoff_survives_a_day_of_attempts() -> None:
    backoff = Backoff(rng=lambda: 0.5)
    assert max(backoff.next_delay() for _ in range(5000)) == 30
