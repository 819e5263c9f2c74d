"""Chat over WebSocket and the HTTP listener, on every engine.

Real servers on loopback (``--http-port 0``), a wsproto client over a plain socket
(``wsclient``), and the TCP users of both dialects in the same rooms: a browser's user
is one more member, whatever the others connect with. Every read has a deadline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from importlib import resources

import pytest
from wsclient import (
    BINARY_IRC,
    TEXT_IRC,
    Refused,
    WsClient,
    http_port,
    http_request,
    problems_since,
    read_response,
    request_bytes,
    stderr_size,
)

from chatwire import ENGINES, Client, IrcClient, Server, TLSFiles, open_socket

ServerFactory = Callable[..., Server]

#: The options of every server here: both TCP dialects and the HTTP listener.
OPTIONS = ("--ephemeral", "--irc-port", "0", "--http-port", "0", "--server-name", "irc.test")

#: The page's Content-Security-Policy must hold at least these (no inline script, no
#: framing, sockets to this origin only).
CSP_MUST = ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors")


@pytest.fixture
def web(engine: str, start_server: ServerFactory) -> Server:
    """A server of its own, for a test that reads whole sequences of #lobby's lines."""
    return start_server(engine, *OPTIONS)


@pytest.fixture(scope="module", params=ENGINES)
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per engine for the tests that stay out of each other's way (their own
    nicks and rooms, counts as differences), to start fewer servers; stopped and checked
    (exit status, stderr) after the module's last test."""
    server = Server(request.param, *OPTIONS, log_dir=tmp_path_factory.mktemp("web"))
    try:
        yield server
    finally:
        server.finish()


@pytest.fixture
def shared(shared_server: Server) -> Iterator[Server]:
    """The shared server; the test fails if the server wrote a traceback or an ERROR
    record meanwhile, or died, as with a server of its own."""
    offset = stderr_size(shared_server)
    yield shared_server
    problems = problems_since(shared_server, offset)
    if problems:
        pytest.fail(f"{shared_server.describe()}: " + "; ".join(problems), pytrace=False)


def stats(client: Client) -> dict[str, int]:
    client.send("/stats")
    line = client.expect(r"^\* stats: ")[-1]
    pairs = (item.split("=", 1) for item in line.removeprefix("* stats: ").split())
    return {key: int(value) for key, value in pairs}


def lobby_irc(server: Server, nick: str) -> IrcClient:
    """A TCP IRC user in #lobby (where line users start), its join read away."""
    irc = server.irc(nick)
    irc.send("JOIN #lobby")
    irc.expect(rf" 366 {nick} #lobby ")
    return irc


def static_files() -> dict[str, str]:
    """The page's files in the package (``name`` → extension), as the server reads them."""
    folder = resources.files("chatd.web.static")
    return {
        entry.name: entry.name.rsplit(".", 1)[-1]
        for entry in folder.iterdir()
        if entry.is_file() and "." in entry.name and not entry.name.endswith(".py")
    }


# =========================================================================== the line dialect


def test_line_dialect_over_websocket_chats_with_tcp_line_and_irc_users(web: Server) -> None:
    port = http_port(web)
    assert json.loads(http_request(port, "GET", "/health").body)["clients"] == 0
    tcp = web.client("tcpline")
    irc = lobby_irc(web, "tcpirc")
    tcp.ping()
    browser = WsClient(port, "/line")
    assert browser.subprotocol is None
    confirmation = browser.register_line("browser")
    assert confirmation[-1].startswith("* you are browser, in #lobby")
    tcp.expect(r"^\* browser joined #lobby")
    irc.expect(r"^:browser!\S+ JOIN #lobby$")
    # /health counts the chat sessions, the WebSocket one too (not the HTTP requests).
    health = json.loads(http_request(port, "GET", "/health").body)
    assert (health["clients"], health["rooms"]) == (3, 1)
    # The browser's lines reach both dialects, once each, in order.
    for text in ("hello from the browser", "second line", "/me waves"):
        browser.send_line(text)
    assert tcp.expect(r"waves") == [
        "browser: hello from the browser",
        "browser: second line",
        "* browser waves",
    ]
    assert irc.expect(r"ACTION waves") == [
        ":browser!line@127.0.0.1 PRIVMSG #lobby :hello from the browser",
        ":browser!line@127.0.0.1 PRIVMSG #lobby :second line",
        ":browser!line@127.0.0.1 PRIVMSG #lobby :\x01ACTION waves\x01",
    ]
    # ...and theirs reach the browser, one message per line.
    tcp.send("from the terminal")
    assert browser.read_line() == "tcpline: from the terminal"
    irc.send("PRIVMSG #lobby :from irssi")
    assert browser.read_line() == "tcpirc: from irssi"
    assert tcp.read_line() == "tcpirc: from irssi"
    irc.send("PRIVMSG browser :a private word")
    assert browser.read_line() == "tcpirc (private): a private word"
    browser.send_line("/msg tcpline psst")
    assert browser.read_line() == "* -> tcpline: psst"
    assert tcp.read_line() == "browser (private): psst"
    assert browser.sync() == []
    assert [kind for kind, _ in browser.messages] == []
    # /quit: the goodbye, then a Close 1000, then the end of the connection.
    browser.send_line("/quit see you")
    lines, close = browser.lines_until_close()
    assert close.code == 1000, browser.close_description()
    assert all(not line.startswith("! ") for line in lines), lines
    tcp.expect(r"^\* browser (left|quit).*see you")
    irc.expect(r"^:browser!\S+ QUIT :.*see you")
    tcp.no_more_lines()


def test_every_line_message_is_a_text_frame(shared: Server) -> None:
    port = http_port(shared)
    browser = WsClient(port, "/line")
    browser.register_line("kinds")
    browser.sync()
    tcp = shared.client("kindsother")
    tcp.send("caf\u00e9 \u2603")
    browser.expect("^kindsother: caf\u00e9 \u2603$")
    assert set(browser.kinds_seen) == {"text"}


def test_a_browser_closing_first_gets_its_close_answered_and_leaves(shared: Server) -> None:
    port = http_port(shared)
    tcp = shared.client("closewatch")
    browser = WsClient(port, "/line")
    browser.register_line("closer")
    tcp.expect(r"^\* closer joined")
    answer = browser.close(1000, "tab closed")
    assert answer.code == 1000
    tcp.expect(r"^\* closer (left|quit)")


# =========================================================================== IRC


SUBPROTOCOLS = [
    pytest.param(1, "/", [BINARY_IRC], BINARY_IRC, id="binary-only"),
    pytest.param(2, "/irc", [TEXT_IRC], TEXT_IRC, id="text-only"),
    pytest.param(3, "/irc", [BINARY_IRC, TEXT_IRC], BINARY_IRC, id="binary-first"),
    pytest.param(4, "/", [TEXT_IRC, BINARY_IRC], TEXT_IRC, id="text-first"),
    pytest.param(5, "/irc", ["chat.example", TEXT_IRC], TEXT_IRC, id="unknown-then-text"),
    pytest.param(6, "/", [], None, id="none"),
]


@pytest.mark.parametrize(("n", "path", "offered", "chosen"), SUBPROTOCOLS)
def test_irc_over_websocket_with_each_subprotocol(
    shared: Server, n: int, path: str, offered: list[str], chosen: str | None
) -> None:
    port = http_port(shared)
    web_nick, irc_nick, line_nick, room = f"web{n}", f"irc{n}", f"line{n}", f"#sub{n}"
    tcp_irc = shared.irc(irc_nick)
    tcp_line = shared.client(line_nick)
    web = WsClient(port, path, subprotocols=offered)
    assert web.subprotocol == chosen
    expected_kind = "binary" if chosen == BINARY_IRC else "text"
    welcome = web.register_irc(web_nick)
    assert welcome[0].startswith(f":irc.test 001 {web_nick} ")
    # To an IRC user and to a line user, and back from each.
    web.send_line(f"PRIVMSG {irc_nick} :hello over a websocket")
    assert re.fullmatch(
        rf":{web_nick}!\S+@127\.0\.0\.1 PRIVMSG {irc_nick} :hello over a websocket",
        tcp_irc.expect("PRIVMSG")[-1],
    )
    web.send_line(f"PRIVMSG {line_nick} :hello, line user")
    assert tcp_line.read_line() == f"{web_nick} (private): hello, line user"
    tcp_irc.send(f"PRIVMSG {web_nick} :hi from irssi")
    assert re.fullmatch(rf":{irc_nick}!\S+ PRIVMSG {web_nick} :hi from irssi", web.read_line())
    tcp_line.send(f"/msg {web_nick} hi from netcat")
    assert web.read_line() == f":{line_nick}!line@127.0.0.1 PRIVMSG {web_nick} :hi from netcat"
    # In a channel with both.
    tcp_line.send(f"/join {room}")
    tcp_line.expect(r"^\* you joined")
    web.send_line(f"JOIN {room}")
    web.expect(rf" 366 {web_nick} {room} ")
    tcp_line.expect(rf"^\* {web_nick} joined {room}")
    web.send_line(f"PRIVMSG {room} :to the room")
    assert tcp_line.read_line() == f"{web_nick}: to the room"
    tcp_line.send("room reply")
    assert web.read_line() == f":{line_nick}!line@127.0.0.1 PRIVMSG {room} :room reply"
    web.sync()
    # Every message the server sent was of the negotiated kind, and ends the same way.
    web.send_line("QUIT :done")
    lines, close = web.lines_until_close()
    assert close.code == 1000
    assert lines[-1].startswith("ERROR :Closing Link"), lines
    assert set(web.kinds_seen) == {expected_kind}


#: What a stopping server tells each dialect (issue 21): come back, here once restarted
#: or, on a cluster, through another node.
LINE_RECONNECT = "* server shutting down: please reconnect"
IRC_RECONNECT = "ERROR :Server shutting down: please reconnect"
#: WebSocket's Close code for it: 1012, Service Restart (see chatd.web.http.CLOSE_CODES).
SERVICE_RESTART = 1012


def irc_lines_until_eof(client: IrcClient) -> list[str]:
    """Every line until the server closes (each read has the client's deadline)."""
    lines = []
    while True:
        try:
            lines.append(client.read_line())
        except EOFError:
            return lines


def test_sigterm_tells_every_dialect_to_reconnect(web: Server) -> None:
    """A SIGTERM'd server tells each client to reconnect in its dialect's own terms, as
    its last words: the line dialect a notice, IRC an ERROR (after which IRC clients
    reconnect), WebSocket the same lines then a Close 1012 (Service Restart), which the
    page takes as "reconnect, spread out"; then it exits 0 (the fixture checks it wrote
    no traceback)."""
    tcp_line = web.client("tcpline")
    tcp_irc = web.irc("tcpirc")
    port = http_port(web)
    ws_line = WsClient(port, "/line")
    ws_line.register_line("wsline")
    ws_irc = WsClient(port, "/irc", subprotocols=[TEXT_IRC])
    ws_irc.register_irc("wsirc")
    # A round trip each: every client is registered and served before the signal.
    tcp_line.ping()
    tcp_irc.sync()
    ws_line.sync()
    ws_irc.sync()
    web.terminate()
    assert tcp_line.wait_closed()[-1] == LINE_RECONNECT
    assert irc_lines_until_eof(tcp_irc)[-1] == IRC_RECONNECT
    for client, last in ((ws_line, LINE_RECONNECT), (ws_irc, IRC_RECONNECT)):
        lines, close = client.lines_until_close()
        assert lines[-1] == last, lines
        assert close.code == SERVICE_RESTART, client.close_description()
    assert web.proc.wait(10) == 0


def test_irc_accepts_a_trailing_crlf_in_a_message_and_sends_none(shared: Server) -> None:
    """IRCv3: a message is a line without its CR LF; a client that sends one anyway is
    understood. The server's messages never carry it (wsclient asserts so)."""
    port = http_port(shared)
    web_client = WsClient(port, "/irc", subprotocols=[TEXT_IRC])
    web_client.send_text("NICK crlf\r\n")
    web_client.send_text("USER crlf 0 * :real\r\n")
    web_client.expect(r" (376|422) crlf ")
    assert web_client.sync() == []


# =========================================================================== pings


@pytest.mark.parametrize("path", ["/line", "/irc"])
def test_a_websocket_ping_gets_a_pong_with_the_same_payload(shared: Server, path: str) -> None:
    port = http_port(shared)
    client = WsClient(port, path, subprotocols=[BINARY_IRC])
    for payload in (b"", b"token-1", bytes(range(125))):
        client.ping(payload)
        assert client.wait_pong() == payload
    # Still chatting afterwards: the pings cost a flood token each, nothing more.
    if path == "/line":
        client.register_line("pinger")
    else:
        client.register_irc("pinger")
    assert client.sync() == []


# =========================================================================== HTTP


def test_the_page_is_served_with_its_security_headers(shared: Server) -> None:
    port = http_port(shared)
    files = static_files()
    response = http_request(port, "GET", "/")
    if "index.html" not in files:
        assert response.status == 404, "no index.html in the package, yet / was served"
        return
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    for part in CSP_MUST:
        assert part in csp, csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.body.lstrip().lower().startswith(b"<!doctype html")
    assert int(response.headers["content-length"]) == len(response.body)
    assert http_request(port, "GET", "/static/index.html").body == response.body


CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "ico": "image/x-icon",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "webmanifest": "application/manifest+json",
}


def test_static_files_have_their_content_types_and_head_has_no_body(shared: Server) -> None:
    port = http_port(shared)
    files = static_files()
    assert any(ext == "js" for ext in files.values()), files  # the page's modules at least
    for name, ext in files.items():
        got = http_request(port, "GET", f"/static/{name}")
        assert got.status == 200, name
        assert got.headers["content-type"] == CONTENT_TYPES[ext], name
        assert "content-security-policy" in got.headers
        package_bytes = (resources.files("chatd.web.static") / name).read_bytes()
        assert got.body == package_bytes, name
        head = http_request(port, "HEAD", f"/static/{name}")
        assert head.status == 200 and head.body == b"" and head.rest == b""
        assert head.headers["content-length"] == str(len(package_bytes))
        assert head.headers["content-type"] == got.headers["content-type"]
    # The package's Python files are no page files.
    assert http_request(port, "GET", "/static/__init__.py").status == 404


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/page", 404),
        ("GET", "/static/", 404),
        ("GET", "/static/../http.py", 404),
        ("HEAD", "/missing.js", 404),
        ("POST", "/", 405),
        ("PUT", "/health", 405),
        ("DELETE", "/static/app.js", 405),
        ("GET", "/irc", 426),
        ("GET", "/line", 426),
    ],
)
def test_what_is_not_served(shared: Server, method: str, path: str, status: int) -> None:
    port = http_port(shared)
    response = http_request(port, method, path)
    assert response.status == status, response
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"
    if status == 426:
        assert response.headers["upgrade"].lower() == "websocket"


def test_health_says_ok_with_the_engine_and_version(shared: Server) -> None:
    """(Its counts are checked exactly on a server of its own, in the first test.)"""
    port = http_port(shared)
    got = http_request(port, "GET", "/health")
    assert got.status == 200
    assert got.headers["content-type"] == "application/json"
    assert got.headers["cache-control"] == "no-store"
    health = json.loads(got.body)
    assert health["status"] == "ok"
    assert health["engine"] == shared.engine
    assert health["version"]
    assert isinstance(health["clients"], int) and isinstance(health["rooms"], int)
    head = http_request(port, "HEAD", "/health")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == got.headers["content-length"]


def test_a_connection_serves_requests_in_turn(shared: Server) -> None:
    port = http_port(shared)
    sock = open_socket("127.0.0.1", port)
    host = f"127.0.0.1:{port}"
    try:
        for path in ("/health", "/nothing", "/health"):
            sock.sendall(request_bytes("GET", path, host=host))
            response = read_response(sock)
            assert response.status == (200 if path == "/health" else 404)
            assert response.rest == b""
        # Pipelined: both answered, in order.
        sock.sendall(request_bytes("GET", "/nothing", host=host) * 2)
        first = read_response(sock)
        second = read_response(sock, buf=first.rest)
        assert (first.status, second.status) == (404, 404)
        # Connection: close is obeyed.
        sock.sendall(request_bytes("GET", "/health", host=host, headers=[("Connection", "close")]))
        last = read_response(sock, wait_close=True)
        assert last.status == 200 and last.closed
    finally:
        sock.close()


# =========================================================================== origins


def refused_origin(port: int, origin: str, path: str = "/line") -> Refused:
    with pytest.raises(Refused) as caught:
        WsClient(port, path, origin=origin)
    return caught.value


def test_the_default_lets_in_the_pages_own_origin_and_no_other(shared: Server) -> None:
    port = http_port(shared)
    watcher = shared.client("watcher")
    own = WsClient(port, "/line", origin=f"http://127.0.0.1:{port}")
    own.register_line("sameorigin")
    watcher.expect(r"^\* sameorigin joined")
    no_origin = WsClient(port, "/irc")  # no browser: no Origin header, let in
    no_origin.register_irc("noorigin")
    before = stats(watcher)
    for origin in (
        "http://evil.example",
        f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}",
        f"http://localhost.evil.example:{port}",
        "null",
    ):
        for path in ("/line", "/", "/irc"):
            error = refused_origin(port, origin, path)
            assert error.status == 403, (origin, path)
            assert error.headers.get("connection") == "close"
    after = stats(watcher)
    assert after["clients"] <= before["clients"]  # no session (earlier tests' may end)
    assert after["websocket_refused"] == before.get("websocket_refused", 0) + 12
    assert after["websocket_upgrades"] == before["websocket_upgrades"]
    watcher.no_more_lines()  # nobody joined


def test_allowed_origins_replace_the_default(engine: str, start_server: ServerFactory) -> None:
    server = start_server(
        engine,
        *OPTIONS,
        "--allowed-origin",
        "https://chat.example",
        "--allowed-origin",
        "http://other.example:8080/",
    )
    port = http_port(server)
    for origin in ("https://chat.example", "HTTPS://Chat.Example", "http://other.example:8080"):
        client = WsClient(port, "/line", origin=origin)
        assert client.read_until(lambda line: "nickname" in line)
        client.abort()
    for origin in (
        "https://evil.example",
        "http://chat.example",  # another scheme is another origin
        "https://chat.example:8443",
        "http://other.example",
        f"http://127.0.0.1:{port}",  # the page's own is no longer enough
    ):
        assert refused_origin(port, origin).status == 403, origin


def test_a_star_lets_every_origin_in(engine: str, start_server: ServerFactory) -> None:
    server = start_server(engine, *OPTIONS, "--allowed-origin", "*")
    port = http_port(server)
    for origin in ("http://evil.example", "https://chat.example", "null"):
        client = WsClient(port, "/irc", subprotocols=[TEXT_IRC], origin=origin)
        client.register_irc("star" + str(abs(hash(origin)) % 1000))
        client.send_line("QUIT")
        assert client.wait_close().code == 1000


# =========================================================================== TLS


def test_wss_over_the_https_port(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    server = start_server(engine, *OPTIONS, *tls_files.args(), "--https-port", "0")
    port = http_port(server, tls=True)
    context = tls_files.client_context()
    tcp = server.client("plain")
    secure = WsClient(port, "/line", tls=context, origin=f"https://localhost:{port}",
                      host_header=f"localhost:{port}")  # fmt: skip
    secure.register_line("secure")
    tcp.expect(r"^\* secure joined")
    secure.send_line("over tls")
    assert tcp.read_line() == "secure: over tls"
    tcp.send("back over plain tcp")
    assert secure.read_line() == "plain: back over plain tcp"
    secure.ping(b"tls ping")
    assert secure.wait_pong() == b"tls ping"
    irc = WsClient(port, "/irc", tls=context, subprotocols=[BINARY_IRC])
    irc.register_irc("secureirc")
    irc.send_line("PRIVMSG plain :binary over tls")
    assert tcp.read_line() == "secureirc (private): binary over tls"
    health = http_request(port, "GET", "/health", tls=context)
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"
    secure.send_line("/quit")
    assert secure.wait_close().code == 1000
    # The plain HTTP port still answers next to the TLS one.
    assert http_request(http_port(server), "GET", "/health").status == 200
