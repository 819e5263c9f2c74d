"""The public IRC conformance suite (irctest, pinned in ../shared/irctest) on every engine.

Each case runs ``tests/irc/run_irctest.py`` for one engine, with the selection of
PINNED.md, and holds the engine to issue 9's bar: at least :data:`MIN_PASSED` passed,
nothing failed or errored, no hang (the runner's per-test timeout, and this test's).
From the same run's junit report it also checks that websocket.py's tests ran against
chatd's WebSocket listener on that engine (:data:`WEBSOCKET_OUTCOMES`): a skip for a
missing ``websockets`` package or a controller without WebSocket fails here, where the
overall count would hide it. A missing suite is a skip with the reason, not a pass.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chatwire import ALL_ENGINES

HERE = Path(__file__).resolve().parent
#: Characters of each failure's text quoted from the junit report.
REASON_CHARS = 1500
sys.path.insert(0, str(HERE))

from run_irctest import IRCTEST_DIR  # noqa: E402

#: Issue 9: "done at >= 175 passed, 0 failed, no hang, on every engine", then "beating
#: InspIRCd is the next step": more than its 258 passed (PINNED.md) on this selection.
#: Since then every engine passes 274, and 280 with websocket.py's 6 (IRCTEST_NOTES.md):
#: a test that stops passing (a new skip) fails the gate.
MIN_PASSED = 280
#: websocket.py's cases and how each must end on every engine. The two non-UTF-8 ones
#: skip by design: chatd advertises UTF8ONLY and answers ``FAIL PRIVMSG INVALID_UTF8``,
#: which the test accepts and then reports as the optional behaviour of relaying
#: non-UTF-8 not being supported (a skip that needs a live WebSocket session to reach).
WEBSOCKET_FILE = "irctest.server_tests.websocket.WebsocketTestCase"
NON_UTF8_SKIP = "Optional behavior not supported: OptionalBehaviors.NON_UTF8_MESSAGE"
WEBSOCKET_OUTCOMES = {
    "testSubprotocolNegotiation[binary-only]": "passed",
    "testSubprotocolNegotiation[text-only]": "passed",
    "testSubprotocolNegotiation[binary-first]": "passed",
    "testSubprotocolNegotiation[text-first]": "passed",
    "testSendTruncation": "passed",
    "testReceiveTruncation": "passed",
    "testSendNonUtf8Text": NON_UTF8_SKIP,
    "testReceiveNonUtf8Text": NON_UTF8_SKIP,
}
SUMMARY = re.compile(
    r"irctest (\S+): (\d+) passed, (\d+) failed, (\d+) skipped, (\d+) xfailed, (\d+) errors"
)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_irctest_passes_on_every_engine(engine: str, tmp_path: Path) -> None:
    if IRCTEST_DIR is None:
        pytest.skip("irctest not found: set IRCTEST_DIR or put it in ../shared/irctest")
    junit = tmp_path / "irctest.xml"
    runner = [sys.executable, str(HERE / "run_irctest.py"), "--engine", engine, "-n", "3"]
    proc = subprocess.run(
        [*runner, "--junit", str(junit)],
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    match = SUMMARY.search(proc.stdout)
    assert match, proc.stdout[-3000:] + proc.stderr[-3000:]
    passed, failed, errors = int(match[2]), int(match[3]), int(match[6])
    print(match[0])
    failures = "\n".join(
        line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))
    )
    assert failed == 0 and errors == 0, f"{match[0]}\n{failures}\n{_reasons(proc.stdout)}"
    assert websocket_outcomes(junit) == WEBSOCKET_OUTCOMES, match[0]
    assert passed >= MIN_PASSED, match[0]


def websocket_outcomes(junit: Path) -> dict[str, str]:
    """websocket.py's cases in a junit report: ``passed``, else the first line of why
    they did not (a skip's message, a failure's)."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.get("classname") == WEBSOCKET_FILE:
            outcome = "passed"
            for child in case:
                if child.tag in ("skipped", "failure", "error"):
                    message = (child.get("message") or "").partition("\n")[0]
                    outcome = message if child.tag == "skipped" else f"{child.tag}: {message}"
            outcomes[str(case.get("name"))] = outcome
    return outcomes


def _reasons(stdout: str) -> str:
    """Each failed or errored case's own text, from the run's junit report (named on the
    runner's summary line), so that a rare failure explains itself in the CI log."""
    found = re.search(r"junit: (\S+?)\)", stdout)
    if not found or not Path(found[1]).exists():
        return "(no junit report to quote)"
    quoted = []
    for case in ET.parse(found[1]).getroot().iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                text = (child.get("message") or "") + "\n" + (child.text or "")
                name = f"{case.get('classname')}::{case.get('name')} ({child.tag})"
                quoted.append(f"--- {name}\n{text.strip()[-REASON_CHARS:]}")
    return "\n".join(quoted)
