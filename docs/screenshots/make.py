"""Screenshots of the browser page for the README: ``light.png`` and ``dark.png`` (a
desktop window), ``phone-light.png`` and ``phone-dark.png`` (a phone, 2x pixels).

Run from the repository (Playwright from the ``[test]`` extra and Debian's chromium;
never ``playwright install``)::

    .venv/bin/python docs/screenshots/make.py [OUTPUT_DIR]

It starts its own chatd (history in memory, free loopback ports), has an IRC user and a
line user talk in #lobby and #design, connects the page as ``sam`` and shoots it.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from chatwire import Server  # noqa: E402

DESKTOP = {"width": 1180, "height": 720}
PHONE = {"width": 390, "height": 780}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def populate(server: Server) -> tuple[object, object]:
    """grace (IRC, the rooms' operator) and ada (line dialect) say a few things."""
    grace = server.irc("grace")
    grace.send("JOIN #lobby")
    grace.send("TOPIC #lobby :Welcome! Be kind · https://example.org/chatd")
    grace.send("JOIN #design")
    grace.sync()
    ada = server.client("ada")
    for line in [
        "morning all",
        "the new reactor numbers are in: https://example.org/bench/report",
        "/me reads the report",
    ]:
        ada.send(line)
    grace.send("PRIVMSG #lobby :nice, and the page works without a build step")
    grace.send("PRIVMSG #lobby :\x01ACTION ships it\x01")
    ada.ping()
    grace.sync()
    return grace, ada


def main(out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium on PATH (Debian: apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = Server("reactor", "--irc-port", "0", "--http-port", str(port), "--ephemeral")
    try:
        grace, ada = populate(server)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium)
            context = browser.new_context(viewport=DESKTOP, color_scheme="light")
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("Nickname").fill("sam")
            page.get_by_role("button", name="Connect").click()
            expect(page.locator("#status")).to_have_text("open")
            expect(page.locator("#log ol:not([hidden]) li.kind-msg")).to_have_count(3)
            ada.send("hi sam! the page reconnects by itself now")
            field = page.get_by_role("textbox", name="Message")
            field.fill("thanks ada, trying it on my phone")
            field.press("Enter")
            ada.expect(r"^sam: thanks ada")
            # A room with unread lines and a mention, not shown.
            field.fill("/join #design")
            field.press("Enter")
            expect(page.locator("#room-name")).to_have_text("#design")
            page.get_by_role("button", name="#lobby").click()
            grace.send("PRIVMSG #design :sam: the dark theme is ready for review")
            grace.send("PRIVMSG #design :and the phone layout")
            design = page.get_by_role("button", name="#design")
            expect(design.locator(".unread-badge")).to_contain_text("2")
            page.get_by_role("textbox", name="Message").blur()

            page.screenshot(path=str(out / "light.png"))
            page.emulate_media(color_scheme="dark")
            expect(page.get_by_role("button", name=re.compile("^Theme"))).to_contain_text("dark")
            page.screenshot(path=str(out / "dark.png"))
            context.close()

            for scheme in ("light", "dark"):
                phone = browser.new_context(
                    viewport=PHONE,
                    device_scale_factor=2,
                    is_mobile=True,
                    has_touch=True,
                    color_scheme=scheme,
                )
                page = phone.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_label("Nickname").fill(f"sam_{scheme}")
                page.get_by_role("button", name="Connect").click()
                expect(page.locator("#status")).to_have_text("open")
                expect(page.locator("#log ol:not([hidden]) li.kind-msg")).to_have_count(5)
                page.screenshot(path=str(out / f"phone-{scheme}.png"))
                phone.close()
            browser.close()
        grace.close()
        ada.close()
    finally:
        server.finish()
    for name in ("light", "dark", "phone-light", "phone-dark"):
        print(out / f"{name}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
