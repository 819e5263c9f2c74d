"""The browser page (``server/chatd/web/static/``) in a real Chromium against real chatd
servers on 127.0.0.1, with line and IRC users on plain TCP beside it.

Every wait is Playwright's ``expect`` on the page's state, or a socket read with a
deadline (chatwire); nothing sleeps. Lines of the log are read from the shown room's
list: ``li.kind-msg`` elements, each with a ``.nick`` and a ``.text``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')"
)
expect = sync_api.expect

if TYPE_CHECKING:
    from conftest import WebServer

#: The shown room's chat lines as "nick: text" (actions as "* nick text").
SHOWN_MESSAGES_JS = """() => [...document.querySelectorAll(
    '#log ol:not([hidden]) li.kind-msg, #log ol:not([hidden]) li.kind-action')].map(li =>
    li.classList.contains('kind-action')
        ? `* ${li.querySelector('.nick').textContent} ${li.querySelector('.text').textContent}`
        : `${li.querySelector('.nick').textContent}: ${li.querySelector('.text').textContent}`)"""


def shown_messages(page: Any) -> list[str]:
    return list(page.evaluate(SHOWN_MESSAGES_JS))


def shown_lines(page: Any) -> Any:
    """The shown room's chat lines (a locator)."""
    return page.locator("#log ol:not([hidden]) li.kind-msg")


def message_line(page: Any, text: str) -> Any:
    """The shown room's chat lines whose text is exactly ``text``."""
    return shown_lines(page).filter(
        has=page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$"))
    )


def connect(page: Any, web: WebServer, nick: str) -> None:
    """Open the page, connect as ``nick`` and wait until it shows #lobby."""
    page.goto(web.url)
    page.get_by_label("Nickname").fill(nick)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#status")).to_have_text("open")
    expect(page.locator("#room-name")).to_have_text("#lobby")


def say(page: Any, text: str) -> None:
    field = page.get_by_role("textbox", name="Message")
    field.fill(text)
    field.press("Enter")
    expect(field).to_have_value("")


def members(page: Any) -> Any:
    return page.get_by_role("list", name="Members", exact=True)


def test_the_page_chats_both_ways_with_a_line_user_and_an_irc_user(
    web_server: Callable[..., WebServer], page: Any
) -> None:
    web = web_server()
    connect(page, web, "webby")
    liner = web.server.client("liner")
    ircy = web.server.irc("ircy")
    ircy.send("JOIN #lobby")
    ircy.expect(r" 366 ircy #lobby ")
    expect(members(page).get_by_role("listitem")).to_have_text(
        ["@webby", "ircy", "liner"], use_inner_text=True
    )

    liner.send("hello from a line user")
    expect(message_line(page, "hello from a line user")).to_have_count(1)
    ircy.send("PRIVMSG #lobby :hello from an IRC user")
    expect(message_line(page, "hello from an IRC user")).to_have_count(1)

    say(page, "hi both")
    say(page, "/me waves")
    say(page, "//slash is literal")
    liner.expect(r"^webby: hi both$")
    liner.expect(r"^\* webby waves$")
    liner.expect(r"^webby: /slash is literal$")
    ircy.expect(r"^:webby!\S+ PRIVMSG #lobby :hi both$")
    ircy.expect(r"PRIVMSG #lobby :\x01ACTION waves\x01$")
    expect(message_line(page, "/slash is literal")).to_have_count(1)
    assert shown_messages(page) == [
        "liner: hello from a line user",
        "ircy: hello from an IRC user",
        "webby: hi both",
        "* webby waves",
        "webby: /slash is literal",
    ]
    # Nick colours are stable: the same class wherever a nick shows.
    liner_class = shown_lines(page).first.locator(".nick").get_attribute("class")
    assert re.fullmatch(r"nick nick-c\d+", liner_class or "")
    assert members(page).locator(".nick", has_text="liner").get_attribute("class") == liner_class

    say(page, "/frobnicate")
    expect(page.locator("#log ol:not([hidden]) li.kind-error").last).to_contain_text(
        "unknown command /frobnicate"
    )
    liner.send("/quit")
    expect(members(page).get_by_role("listitem")).to_have_text(
        ["@webby", "ircy"], use_inner_text=True
    )


def test_a_nickname_in_use_is_shown_by_the_field_and_another_can_be_picked(
    web_server: Callable[..., WebServer], page: Any
) -> None:
    web = web_server()
    holder = web.server.client("taken")
    page.goto(web.url)
    page.get_by_label("Nickname").fill("taken")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#nick-error")).to_contain_text("taken is taken")
    expect(page.locator("#status")).to_have_text("closed")
    page.get_by_label("Nickname").fill("free")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#status")).to_have_text("open")
    expect(page.locator("#nick-error")).to_be_hidden()
    holder.close()


def test_markup_from_others_is_text_and_only_http_links_are_links(
    web_server: Callable[..., WebServer], page: Any
) -> None:
    web = web_server()
    liner = web.server.client("liner")
    liner.send("/join #den")  # the first member of a room is its operator
    liner.send("/topic <i>topic</i> https://example.org/t")
    liner.ping()
    connect(page, web, "webby")
    say(page, "/join #den")
    expect(page.locator("#room-name")).to_have_text("#den")
    markup = "<b>x</b><img src=x onerror=alert(1)>"
    liner.send(markup)
    liner.send("javascript:alert(1) and see https://example.org/a?b=1&c=<2>.")
    expect(message_line(page, markup)).to_have_count(1)
    expect(page.locator("#topic")).to_have_text("<i>topic</i> https://example.org/t")
    log = page.get_by_role("log")
    expect(log.locator("b, img, i, script")).to_have_count(0)
    expect(page.locator("#topic").locator("i")).to_have_count(0)
    links = log.locator("a")
    expect(links).to_have_count(1)
    expect(links).to_have_text("https://example.org/a?b=1&c=")
    expect(links).to_have_attribute("href", "https://example.org/a?b=1&c=")
    expect(links).to_have_attribute("rel", "noopener noreferrer")
    expect(links).to_have_attribute("target", "_blank")
    expect(page.locator("#topic a")).to_have_attribute("href", "https://example.org/t")
    assert shown_messages(page)[-1] == (
        "liner: javascript:alert(1) and see https://example.org/a?b=1&c=<2>."
    )


def test_a_server_restart_loses_no_line_and_doubles_none(
    web_server: Callable[..., WebServer], page: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = web_server(data_dir=data)
    connect(page, first, "webby")
    liner = first.server.client("liner")
    before = [f"before {i}" for i in range(1, 4)]
    for text in before:
        liner.send(text)
    expect(message_line(page, before[-1])).to_have_count(1)

    first.server.stop()
    # The server's Close said 1012 (Service Restart): the page says so, and reconnects.
    restarting = page.locator("#log ol:not([hidden]) li.kind-event")
    expect(restarting.filter(has_text="server restarting; reconnecting")).to_have_count(1)
    expect(page.locator("#status")).to_have_text(re.compile(r"^reconnecting in \d+s$"))
    second = web_server(http_port=first.http_port, data_dir=data)
    liner = second.server.client("liner")
    # Said while the page is (most likely) still waiting to reconnect: it must fetch
    # them with CHATHISTORY AFTER its last msgid.
    away = [f"away {i}" for i in range(1, 6)]
    for text in away:
        liner.send(text)
    liner.ping()
    expect(page.locator("#status")).to_have_text("open", timeout=40_000)
    expect(members(page).get_by_text("liner", exact=True)).to_be_visible()
    # Said once the page is back: live.
    live = [f"live {i}" for i in range(1, 4)]
    for text in live:
        liner.send(text)
    # Every line once, in order: the lines said while away come from the history (its
    # reply may land after the live ones: each is put in its place by time and msgid).
    expect(shown_lines(page)).to_have_text(
        [re.compile(rf"^\d\d:\d\d liner: {text}$") for text in before + away + live]
    )
    assert shown_messages(page) == [f"liner: {text}" for text in before + away + live]


def test_a_message_in_another_room_counts_as_unread_and_a_mention_is_highlighted(
    web_server: Callable[..., WebServer], page: Any
) -> None:
    web = web_server()
    connect(page, web, "webby")
    liner = web.server.client("liner")
    expect(members(page).get_by_text("liner", exact=True)).to_be_visible()
    say(page, "/join #side")
    side = page.get_by_role("button", name="#side")
    lobby = page.get_by_role("button", name="#lobby")
    expect(side).to_have_attribute("aria-current", "true")

    liner.send("hello everyone")
    liner.send("WEBBY: are you there?")
    expect(lobby.locator(".unread-badge")).to_have_text("2 unread")
    expect(lobby.locator(".mention-badge")).to_have_text("1 mention")
    expect(page).to_have_title("(2) #side \u00b7 chatd")
    expect(side.locator(".badge")).to_have_count(0)

    lobby.click()
    expect(lobby).to_have_attribute("aria-current", "true")
    expect(lobby.locator(".badge")).to_have_count(0)
    expect(page).to_have_title("#lobby \u00b7 chatd")
    mentioned = page.locator("#log ol:not([hidden]) li.mention")
    expect(mentioned).to_have_count(1)
    expect(mentioned.locator(".text")).to_have_text("WEBBY: are you there?")
    expect(mentioned.locator("time")).to_have_attribute(
        "datetime", re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    )
    expect(mentioned.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d$"))


def test_load_older_fetches_history_up_to_its_start(
    web_server: Callable[..., WebServer], page: Any
) -> None:
    web = web_server()
    liner = web.server.client("liner")
    said = [f"old {i}" for i in range(1, 71)]
    for text in said:
        liner.send(text)
    liner.ping()
    connect(page, web, "webby")
    # On joining, the page shows the room's last 50 lines.
    expect(shown_lines(page)).to_have_count(50)
    assert shown_messages(page) == [f"liner: {text}" for text in said[20:]]
    older = page.get_by_role("button", name="Load older")
    older.click()
    expect(shown_lines(page)).to_have_count(70)
    assert shown_messages(page) == [f"liner: {text}" for text in said]
    expect(older).to_be_hidden()
    expect(page.get_by_text("Start of the history")).to_be_visible()


def test_themes_and_the_phone_layout(
    web_server: Callable[..., WebServer], new_page: Callable[..., Any]
) -> None:
    web = web_server()
    page = new_page(viewport={"width": 390, "height": 760}, color_scheme="dark")
    connect(page, web, "webby")
    background = "() => getComputedStyle(document.body).backgroundColor"
    dark = page.evaluate(background)
    page.get_by_role("button", name=re.compile("^Theme")).click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert page.evaluate(background) != dark
    # On a phone the member list is a drawer behind a button.
    pane = page.locator("#members-pane")
    expect(pane).to_be_hidden()
    page.get_by_role("button", name="Members", exact=True).click()
    expect(members(page).get_by_text("webby")).to_be_visible()
    expect(page.get_by_role("textbox", name="Message")).to_have_attribute("enterkeyhint", "send")
    # The choice is remembered.
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(page.locator("#status")).to_have_text("open")


def test_private_conversations_nick_changes_and_closing_a_conversation(
    web_server: Callable[..., WebServer], page: Any
) -> None:
    web = web_server()
    connect(page, web, "webby")
    ircy = web.server.irc("ircy")
    ircy.send("JOIN #lobby")
    ircy.expect(r" 366 ircy #lobby ")
    say(page, "/msg ircy psst")
    ircy.expect(r"^:webby!\S+ PRIVMSG ircy :psst$")
    expect(page.locator("#room-name")).to_have_text("ircy")
    ircy.send("PRIVMSG webby :hey")
    expect(message_line(page, "hey")).to_have_count(1)

    page.get_by_role("button", name="#lobby").click()
    ircy.send("PRIVMSG webby :still there?")
    query = page.get_by_role("button", name="ircy")
    expect(query.locator(".mention-badge")).to_have_text("1 mention")

    ircy.send("NICK ircster")
    query = page.get_by_role("button", name="ircster")
    expect(query).to_be_visible()
    say(page, "/nick webster")
    ircy.expect(r"^:webby!\S+ NICK :?webster$")
    expect(page.get_by_label("Nickname")).to_have_value("webster")
    expect(members(page).get_by_role("listitem")).to_have_text(
        ["@webster", "ircster"], use_inner_text=True
    )

    query.click()
    expect(page.locator("#room-name")).to_have_text("ircster")
    # Lines keep the nick they were said under; the change itself is shown.
    assert shown_messages(page) == ["webby: psst", "ircy: hey", "ircy: still there?"]
    expect(page.locator("#log ol:not([hidden]) li.kind-event").last).to_have_text(
        re.compile(r"ircy is now known as ircster$")
    )
    say(page, "/part")
    expect(page.get_by_role("button", name="ircster")).to_have_count(0)
    expect(page.locator("#room-name")).to_have_text("#lobby")
