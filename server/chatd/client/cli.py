"""The ``chatd-client`` command: options, which front end, and a clean exit on signals.

The interactive front end is chosen when both stdin and stdout are terminals (a client
whose output is piped into a file or ``tee`` should write plain lines there), unless
``--plain`` says otherwise or prompt_toolkit (the ``tui`` extra) is missing; the latter
falls back to the plain client with a one-line hint, since a plain client that works
beats one that refuses to start.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click

from chatd.client.link import ConnectError, Endpoint, tls_context
from chatd.client.piped import err, run_piped
from chatd.client.session import Settings

INSTALL_HINT = "pip install 'chatd[tui]'"


def _have_prompt_toolkit() -> bool:
    try:
        import prompt_toolkit  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` to its exit status; SIGTERM and SIGHUP end it as cleanly as a quit.

    Their default action kills the process on the spot, which would leave a terminal in
    raw mode (or stdin non-blocking). Here they cancel the main task instead, so every
    ``finally`` runs (prompt_toolkit's restores the terminal) and the status is
    128 + the signal's number, as a shell reports a death by signal.
    """

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        caught: list[int] = []

        def on_signal(signum: int) -> None:
            caught.append(signum)
            task.cancel()

        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await main
        except asyncio.CancelledError:
            if caught:
                return 128 + caught[0]
            raise

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=4040, show_default=True)
@click.option("--nick", default=None, help="Send this nickname first.")
@click.option(
    "--password",
    default=None,
    envvar="CHATD_PASSWORD",
    show_envvar=True,
    help="Send '/pass PASSWORD' before the nickname (the environment variable keeps it "
    "out of the process list).",
)
@click.option("--tls", is_flag=True, help="Connect with TLS, verifying the server's certificate.")
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With --tls: also trust the CA certificates in this PEM file.",
)
@click.option(
    "--insecure", is_flag=True, help="With --tls: do not verify the server's certificate."
)
@click.option(
    "--reconnect",
    is_flag=True,
    help="After a lost connection, connect again (1 s doubling to 30 s between attempts), "
    "with the same nick, and rejoin the room.",
)
@click.option("--timestamps", is_flag=True, help="Prefix each line with the time (HH:MM).")
@click.option(
    "--plain", is_flag=True, help="The plain line client even on a terminal (no line editor)."
)
@click.option(
    "--linger",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="After input ends or /quit, seconds to wait for the server to close.",
)
def main(
    host: str,
    port: int,
    nick: str | None,
    password: str | None,
    tls: bool,
    ca: str | None,
    insecure: bool,
    reconnect: bool,
    timestamps: bool,
    plain: bool,
    linger: float,
) -> None:
    """Connect to a chatd server and chat: interactively on a terminal, else through
    stdin and stdout."""
    if (ca or insecure) and not tls:
        raise click.UsageError("--ca and --insecure apply to --tls connections only")
    if insecure:
        err(
            "--insecure: the server's certificate is not checked; anyone in between can "
            "read and change this chat"
        )
    try:
        context = tls_context(ca, insecure) if tls else None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot use --ca {ca}: {exc}") from None
    endpoint = Endpoint(host, port, context)
    settings = Settings(nick=nick, password=password, reconnect=reconnect, linger=linger)
    interactive = not plain and sys.stdin.isatty() and sys.stdout.isatty()
    if interactive and not _have_prompt_toolkit():
        err(f"plain mode: the interactive client needs prompt_toolkit: {INSTALL_HINT}")
        interactive = False
    if interactive:
        from chatd.client.tui import run_tui

        main_coro = run_tui(endpoint, settings, timestamps)
    else:
        main_coro = run_piped(endpoint, settings, timestamps)
    try:
        code = run(main_coro)
    except ConnectError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
