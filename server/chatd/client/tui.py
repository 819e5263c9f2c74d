"""The interactive client: a prompt_toolkit line editor on the bottom row, chat above it.

prompt_toolkit owns the terminal: it edits the input line (history on Up/Down, Emacs
keys, Tab completion) and, when a line arrives, erases the prompt, prints the line and
redraws the prompt with whatever was half typed, so nothing arriving garbles the input.
``patch_stdout`` routes any other write to stdout or stderr the same way. It restores
the terminal when the prompt ends, which this module makes sure happens on every way
out: Ctrl-D, ``/quit``, a lost connection, SIGTERM/SIGHUP (see :mod:`chatd.client.cli`)
and exceptions, since each of them ends the prompt task by returning or cancelling it.

Completion is readline-like (Tab completes what is unambiguous, a second Tab lists the
rest above the prompt) rather than a pop-up menu, because a menu needs rows below the
prompt and the prompt is meant to stay on the bottom row.

The terminal stays in raw mode for the whole session (:class:`RawInput`, and
:func:`run_tui`): in cooked mode the terminal itself echoes what is typed, wherever the
cursor happens to be, which is exactly the garbling this client exists to prevent.

This module imports prompt_toolkit, the ``tui`` extra; :mod:`chatd.client.cli` imports
it only once it knows prompt_toolkit is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import get_app_or_none
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input.vt100 import Vt100Input
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import CompleteStyle, print_formatted_text
from prompt_toolkit.styles import Style

from chatd.client import look
from chatd.client.complete import candidates
from chatd.client.lines import echo_of
from chatd.client.link import Endpoint
from chatd.client.session import Session, Settings
from chatd.client.tracker import Tracker, key

_STYLE = Style.from_dict(look.STYLE)


class RawInput(Vt100Input):
    """The terminal input, left in raw mode while lines print above the prompt.

    prompt_toolkit prints above a running prompt through ``run_in_terminal``, which puts
    the terminal in cooked mode meanwhile, for programs that read from it themselves.
    A key typed in that instant is then echoed by the terminal into the output (found
    by tests/test_client_tui.py: ``and morebob: incoming 0``) and shows up a second time
    in the input line. Nothing here reads the terminal while printing, so it stays raw:
    keys wait in the kernel, unechoed, and go into the input line after the print.
    """

    def cooked_mode(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class TuiScreen:
    """Lines printed above the prompt, styled by :mod:`chatd.client.look`."""

    def __init__(self, timestamps: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.timestamps = timestamps
        self.clock = clock
        self.tracker: Tracker | None = None

    def _when(self) -> str | None:
        return look.stamp(self.clock()) if self.timestamps else None

    def _print(self, fragments: look.Fragments) -> None:
        # Above the prompt while it runs (prompt_toolkit erases and redraws it), plainly
        # otherwise; either way in order, and never into the half-typed line.
        print_formatted_text(FormattedText(fragments), style=_STYLE, end="")

    def show(self, lines: Sequence[str]) -> None:
        tracker = self.tracker
        me = tracker.nick if tracker else None
        when = self._when()

        def known(nick: str) -> bool:
            return tracker is not None and key(nick) in tracker.members

        fragments: look.Fragments = []
        for line in lines:
            fragments += [*look.render(line, me, when, known), ("", "\n")]
        self._print(fragments)

    def status(self, text: str) -> None:
        self._print([*look.render_status(text, self._when()), ("", "\n")])

    def changed(self) -> None:
        app = get_app_or_none()
        if app is not None:
            app.invalidate()  # the prompt shows the nick, the room and the link state


class ChatCompleter(Completer):
    """prompt_toolkit's view of :func:`chatd.client.complete.candidates`."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        for text, start in candidates(document.text_before_cursor, self.tracker):
            yield Completion(text, start_position=start)


def submit(text: str, session: Session, screen: TuiScreen) -> bool:
    """Send what was typed (a paste may hold several lines); True once the user quit."""
    tracker = session.tracker
    for line in text.splitlines():
        if not line.strip():
            continue
        if not session.connected.is_set():
            screen.status(f"not connected, not sent: {line}")
            continue
        registered = tracker.registered
        session.send_line(line)
        if line.split(" ")[0].lower() == "/quit":
            session.quit()
            return True
        if registered and tracker.nick and (echo := echo_of(line, tracker.nick)) is not None:
            screen.show([echo])
    return False


async def _typing(prompt: PromptSession[str], session: Session, screen: TuiScreen) -> None:
    """Prompt for lines until the user leaves."""
    while True:
        try:
            text = await prompt.prompt_async()
        except KeyboardInterrupt:  # Ctrl-C drops the line being typed, as in a shell
            if not prompt.default_buffer.text:
                screen.status("Ctrl-D or /quit leaves")
            continue
        except EOFError:  # Ctrl-D on an empty line
            session.quit()
            return
        if submit(text, session, screen):
            return


def _prompt_at_bottom() -> None:
    """Start on the bottom row, so the prompt is there from the first line on (the
    screen's old content scrolls up into the terminal's scrollback, as with ``clear``)."""
    rows = shutil.get_terminal_size().lines
    sys.stdout.write("\n" * max(0, rows - 1))
    sys.stdout.flush()


async def run_tui(endpoint: Endpoint, settings: Settings, timestamps: bool) -> int:
    """Connect and chat at the terminal; the exit status."""
    screen = TuiScreen(timestamps)
    settings = replace(settings, auto_who=True, lost_hint="; use --reconnect to retry")
    session = Session(endpoint, settings, screen)
    tracker = screen.tracker = session.tracker

    def message() -> FormattedText:
        return FormattedText(
            look.prompt(tracker.nick, tracker.room, tracker.registered, session.connected.is_set())
        )

    prompt: PromptSession[str] = PromptSession(
        message,
        completer=ChatCompleter(tracker),
        complete_style=CompleteStyle.READLINE_LIKE,
        reserve_space_for_menu=0,
        erase_when_done=True,
        history=InMemoryHistory(),
        style=_STYLE,
        input=RawInput(sys.stdin),
    )
    _prompt_at_bottom()
    tasks: list[asyncio.Task[object]] = []
    # Raw for the whole session, not only while a prompt runs: a key typed between two
    # prompts (right after Enter) would otherwise be echoed by the terminal at the
    # cursor, and the next prompt drawn after it. Leaving this block restores the mode
    # the terminal had, whichever way the session ends.
    with prompt.input.raw_mode(), patch_stdout():
        screen.status(f"connecting to {endpoint}")
        try:
            await session.open()
            relay: asyncio.Task[object] = asyncio.create_task(session.run())
            typing: asyncio.Task[object] = asyncio.create_task(_typing(prompt, session, screen))
            tasks += [relay, typing]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if typing.done():
                typing.result()  # the user left; the relay ends when the server closes
            else:
                typing.cancel()  # the connection is gone for good: end the prompt
                await asyncio.gather(typing, return_exceptions=True)
            code = await relay
            assert isinstance(code, int)
            return code
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if session.link is not None:
                session.link.close()
