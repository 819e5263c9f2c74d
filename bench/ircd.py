"""The C IRC daemons the bench runs as peers (ngircd, InspIRCd): configs and command lines.

Why peers: chatd's IRC listener speaks the same protocol as these daemons, so the same
IRC load measures all three; a C reactor with per-connection buffers (both daemons are
one) shows what the design is worth without Python's interpreter in the way.

Both run on loopback with their flood protection off, because a benchmark sender that is
throttled measures the throttle: ngircd's ``MaxPenaltyTime = 0`` turns off its command
penalties and ``MaxConnectionsIP = 0`` its per-address limit; InspIRCd's connect class
gets a threshold and command rate no sender reaches, ``fakelag="no"``, a 16 MiB send
queue (InspIRCd counts its own buffer, which fills whenever the kernel's does, while
chatd's 1 MiB ``--max-sendq`` counts only what the kernel refused, beyond the few MiB of
a loopback socket buffer; with 1 MiB InspIRCd dropped the load generator's lazily read
members in a burst), a 1 MiB receive queue and no per-address limit, and
``<performance netbuffersize="65534">`` lets one read take 64 KiB. Both ping only once
an hour (the driver answers PINGs, but a bench job is far shorter), and neither
looks up DNS or ident, which on loopback would only add a delay per connection.

The configs are pure text from a port (and a directory for InspIRCd's pid and log
files), so the report can print exactly what ran, with the port shown as ``PORT``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

#: Daemon name -> executable (Debian packages ngircd and inspircd).
EXECUTABLES: dict[str, str] = {"ngircd": "ngircd", "inspircd": "inspircd"}


def ngircd_conf(port: int | str) -> str:
    """ngircd.conf(5) for one bench run on 127.0.0.1:port."""
    return f"""\
[Global]
	Name = bench.invalid
	Info = chatd bench peer
	AdminInfo1 = chatd bench
	AdminInfo2 = loopback only
	AdminEMail = bench@bench.invalid
	Listen = 127.0.0.1
	Ports = {port}
	MotdPhrase = bench
[Limits]
	MaxConnections = 0
	MaxConnectionsIP = 0
	MaxJoins = 0
	MaxPenaltyTime = 0
	PingTimeout = 3600
	PongTimeout = 3600
[Options]
	DNS = no
	Ident = no
	PAM = no
"""


def inspircd_conf(port: int | str, rundir: Path | str) -> str:
    """inspircd.conf for one bench run on 127.0.0.1:port (pid and log under rundir)."""
    return f"""\
<server name="bench.invalid" description="chatd bench peer" network="bench">
<admin name="bench" nick="bench" email="bench@bench.invalid">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="bench" allow="127.0.0.1" timeout="60" pingfreq="3600"
         hardsendq="16777216" softsendq="16777216" recvq="1048576"
         threshold="1000000" commandrate="1000000000" fakelag="no"
         localmax="100000" globalmax="100000" maxconnwarn="off" limit="100000"
         resolvehostnames="no" useident="no" maxchans="20">
<channels users="20" opers="60">
<pid file="{rundir}/inspircd.pid">
<options prefixquit="Quit: " syntaxhints="no" announcets="yes" hostintopic="yes"
         pingwarning="15" splitwhois="no" exemptchanops="">
<security hideserver="" userstats="Pu" customversion="" flatlinks="no" hidesplits="no"
          hideulines="no" hidebans="no" maxtargets="20">
<performance quietbursts="yes" softlimit="20000" somaxconn="4096" netbuffersize="65534"
             clonesonconnect="no">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
     target="{rundir}/inspircd.log">
"""


def config_text(name: str, port: int | str, rundir: Path | str) -> str:
    """The config file of daemon ``name``."""
    if name == "ngircd":
        return ngircd_conf(port)
    if name == "inspircd":
        return inspircd_conf(port, rundir)
    raise ValueError(f"not an IRC daemon the bench runs: {name!r}")


def argv(name: str, conf: Path) -> list[str]:
    """The foreground command line for daemon ``name`` reading ``conf``.

    InspIRCd refuses to run as root unless told it may (``--runasroot``); ngircd drops
    to ``nobody`` by itself when started as root.
    """
    if name == "ngircd":
        return [EXECUTABLES[name], "--nodaemon", "--config", str(conf)]
    if name == "inspircd":
        out = [EXECUTABLES[name], "--nofork", f"--config={conf}"]
        if os.geteuid() == 0:
            out.append("--runasroot")
        return out
    raise ValueError(f"not an IRC daemon the bench runs: {name!r}")


#: Exit statuses that mean "stopped cleanly on SIGTERM". InspIRCd exits 10
#: (EXIT_STATUS_SIGTERM) when it shuts down on SIGTERM; ngircd exits 0.
CLEAN_EXIT: dict[str, frozenset[int]] = {
    "ngircd": frozenset({0}),
    "inspircd": frozenset({0, 10}),
}


def available(name: str) -> bool:
    """True when the daemon's executable is on PATH."""
    return shutil.which(EXECUTABLES[name]) is not None


@functools.cache
def version(name: str) -> str:
    """The daemon's own version line (``ngIRCd 26.1-...``, ``InspIRCd-3.15.0-debian``)."""
    exe = shutil.which(EXECUTABLES[name])
    if exe is None:
        return ""
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""
