"""What a Locust user of ``loadtest/chat.py`` sees: errors, the verdict, the UI, scenarios.

Every test runs ``locust`` as a subprocess (never imported: it monkey-patches the test
process) for a few seconds against chatd or nothing on loopback:

* a missing or malformed ``--host`` (or entry of a ``--host`` list) ends the run at once
  with one line, no traceback;
* a host where nothing listens ends the run as soon as every user has failed its first
  connect, saying "0 of N users joined — is anything listening on HOST:PORT?", exit 1;
* ``--chat-max-p99-ms`` turns a latency limit into the exit code (a CI gate);
* the web UI has a "Chat verdict" tab fed by every ``/stats/requests`` poll, the options'
  help reads as plain text there, and time options take ``30s`` in its form;
* a custom scenario is an ordinary ``@task`` with a ``wait_time`` on ``ChatClientUser``;
* ``--chat-tls`` load-tests chatd's TLS listeners in both dialects, and a certificate it
  cannot verify is a connect failure saying so.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from chatwire import Server, TLSFiles
from test_loadtest import (
    LOADTEST,
    LOCUSTFILE,
    SMOKE_USERS,
    _check_run,
    _clean_env,
    _require_locust,
    _run_locust,
    _verdict_block,
    verdict,
)


@pytest.fixture(name="locust_exe")
def locust_exe_fixture() -> str:
    return _require_locust()


@pytest.fixture
def chatd(start_server: Callable[..., Server]) -> int:
    """A reactor chatd's port (conftest's ``start_server`` checks how it ended)."""
    return start_server("reactor").port


def _free_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _locust(exe: str, tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = [exe, "-f", str(LOCUSTFILE), "--headless", "--only-summary", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=_clean_env()
    )


# --------------------------------------------------------------------------- bad targets


@pytest.mark.parametrize(
    ("host_args", "message"),
    [
        ((), "no --host given"),
        (("--host", "127.0.0.1:abc"), "the port must be a number"),
        (("--host", "127.0.0.1:4040/chat"), "malformed --host"),
        # a list of hosts: every entry is checked, and the message names the bad one
        (("--host", "127.0.0.1:4040,127.0.0.1:abc"), "--host entry 2 of 2 '127.0.0.1:abc'"),
        (("--host", "127.0.0.1:4040,,127.0.0.1:4041"), "--host entry 2 of 3 is empty"),
    ],
)
def test_a_missing_or_malformed_host_fails_once_with_one_line(
    locust_exe: str, tmp_path: Path, host_args: tuple[str, ...], message: str
) -> None:
    proc = _locust(locust_exe, tmp_path, *host_args, "-u", "50", "-r", "50", "-t", "30s")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if message in line]
    assert len(lines) == 1, output[-3000:]
    assert lines[0].startswith("loadtest/chat.py: ")


@pytest.mark.timeout(120)
def test_nothing_listening_ends_the_run_with_one_question_and_a_failing_verdict(
    locust_exe: str, tmp_path: Path
) -> None:
    port = _free_port()
    report = tmp_path / "latency.json"
    t0 = time.monotonic()
    proc = _locust(
        locust_exe,
        tmp_path,
        "--host",
        f"127.0.0.1:{port}",
        "-u",
        "20",
        "-r",
        "20",
        "-t",
        "60s",
        "--chat-hist-file",
        str(report),
    )
    wall = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert wall < 40, "the run went on although no user could join"
    question = f"0 of 20 users joined — is anything listening on 127.0.0.1:{port}?"
    assert output.count(question) == 1, output[-3000:]
    assert "rooms full" not in output
    assert "Traceback" not in output, output[-3000:]
    block = _verdict_block(output)
    assert "FAIL" in block and "0 of 20 users joined" in block and "connect" in block
    data = json.loads(report.read_text())
    assert data["connect"]["count"] == 0 and data["failures"]["by_kind"]["connect"] >= 20


# --------------------------------------------------------------------------- verdict


@pytest.mark.timeout(150)
def test_the_p99_gate_sets_the_exit_code(locust_exe: str, chatd: int, tmp_path: Path) -> None:
    """A limit no loopback run can meet (1 us) fails a run that is otherwise clean."""
    stats, report, output = _run_locust(
        locust_exe, chatd, tmp_path, "--chat-max-p99-ms", "0.001", expect_rc=1
    )
    assert sum(entry["num_failures"] for entry in stats) == 0
    assert report["latency_us"]["count"] > 0 and report["options"]["max_p99_ms"] == 0.001
    block = _verdict_block(output)
    assert "FAIL: p99" in block and "--chat-max-p99-ms 0.001" in block


# --------------------------------------------------------------------------- TLS


@pytest.mark.timeout(150)
@pytest.mark.parametrize("dialect", ["line", "irc"])
def test_the_load_test_speaks_tls_to_chatds_tls_listeners(
    locust_exe: str, start_server, tls_files: TLSFiles, tmp_path: Path, dialect: str
) -> None:
    server = start_server("reactor", "--irc-port", "0", "--irc-tls-port", "0", tls=tls_files)
    port = server.ports[f"{dialect} tls"]
    ca = ("--chat-tls-ca", str(tls_files.ca_file))
    stats, report, output = _run_locust(
        locust_exe, port, tmp_path, "--chat-dialect", dialect, "--chat-tls", *ca
    )
    _check_run(stats, report, SMOKE_USERS, output)
    assert report["options"]["tls"] is True
    # The same listener without our CA: the system's CAs do not know trustme's.
    unverified = tmp_path / "unverified"
    unverified.mkdir()
    proc = _locust(
        locust_exe,
        unverified,
        "--host",
        f"127.0.0.1:{port}",
        "-u",
        "5",
        "-r",
        "5",
        "-t",
        "30s",
        "--chat-dialect",
        dialect,
        "--chat-tls",
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "TLS: SSLCertVerificationError" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


# --------------------------------------------------------------------------- web UI


def _get(url: str, data: dict[str, str] | None = None) -> bytes:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with urllib.request.urlopen(url, data=body, timeout=10) as response:  # noqa: S310
        return response.read()


@pytest.mark.timeout(150)
def test_the_web_ui_shows_the_verdict_tab_and_readable_options(
    locust_exe: str, chatd: int, tmp_path: Path
) -> None:
    web_port = _free_port()
    argv = [
        locust_exe,
        "-f",
        str(LOCUSTFILE),
        "--host",
        f"127.0.0.1:{chatd}",
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(web_port),
        "--chat-hist-file",
        str(tmp_path / "latency.json"),
        "--chat-room-size",
        "4",
        "--chat-send-share",
        "0.5",
        "--chat-rate",
        "5",
        "--chat-timing-sample",
        "0.5",
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 30
        while not any("Starting web interface" in line for line in seen):
            seen.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        # Locust logs that line just before its server binds: retry a refused connect
        while True:
            try:
                page = _get(base + "/").decode()
                break
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert '"extended_tabs"' in page and "Chat verdict" in page
        # the options' help is shown verbatim: defaults spelt out, no %(default)s
        assert "%(default)s" not in page and "Default 1s" in page
        # start a run from the form, with a time option in Locust's own notation
        form = {"user_count": "4", "spawn_rate": "4", "host": f"127.0.0.1:{chatd}"}
        form.update(chat_warmup="500ms", chat_measure_time="2s")
        assert json.loads(_get(base + "/swarm", form))["success"]
        rows: dict[str, str] = {}
        deadline = time.monotonic() + 60
        # running, then stopping, then the final verdict (no parenthesised status)
        while time.monotonic() < deadline and rows.get("verdict", "(").startswith("("):
            stats = json.loads(_get(base + "/stats/requests"))
            tab = [e for e in stats.get("extended_stats", []) if e["key"] == "chat-verdict"]
            assert len(tab) == 1, stats.get("extended_stats")
            rows = {row["metric"]: row["value"] for row in tab[0]["data"]}
            assert set(rows) >= {"target", "broadcast latency (us)", "messages", "verdict"}
            time.sleep(0.5)  # polling a web page, as the UI itself does every 2 s
        # --chat-measure-time ended the run; the tab shows the verdict on its report
        report = json.loads((tmp_path / "latency.json").read_text())
        assert rows["verdict"] == verdict.judge(report).text(), rows
        assert rows["verdict"] == "PASS" or rows["verdict"].startswith("FAIL: ")
        assert f"p99 {report['latency_us']['p99']}" in rows["broadcast latency (us)"]
        assert json.loads(_get(base + "/chat/verdict"))["rows"][-1]["value"] == rows["verdict"]
        assert report["options"]["warmup"] == 0.5 and report["options"]["measure_time"] == 2.0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    # the exit code follows the verdict (a machine busy with other work can fail a run)
    assert proc.returncode == (0 if rows["verdict"] == "PASS" else 1), rows


# --------------------------------------------------------------------------- scenarios

SCENARIO = '''\
"""A custom scenario: ordinary Locust tasks on the load test's chat client."""

from locust import between, task

from chat import ChatClientUser


class Talker(ChatClientUser):
    wait_time = between(0.05, 0.15)
    timing = True

    @task
    def talk(self):
        self.client.say()


class Listener(ChatClientUser):
    """Reads in its own task instead of a background greenlet."""

    wait_time = between(0, 0.01)
    timing = True
    receive_in_background = False

    @task
    def listen(self):
        self.client.receive(timeout=0.2)
'''


@pytest.mark.timeout(150)
def test_a_custom_scenario_is_a_task_on_chatclientuser(
    locust_exe: str, chatd: int, tmp_path: Path
) -> None:
    locustfile = tmp_path / "scenario.py"
    locustfile.write_text(SCENARIO)
    env = {"PYTHONPATH": str(LOADTEST) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    stats, report, output = _run_locust(
        locust_exe,
        chatd,
        tmp_path,
        "--chat-room-size",
        "6",
        locustfile=locustfile,
        users=6,
        env=env,
    )
    by_name = {entry["name"]: entry for entry in stats}
    assert by_name["say"]["num_requests"] > 0
    _check_run(stats, report, 6, output)
    assert report["users"]["by_class"] == {"Talker": 3, "Listener": 3}
    assert report["received"]["timing_receivers"] == 6
    assert report["messages"]["senders"] == 3
