"""``chatload`` is installed with chatd: importable from the environment alone (not from
``loadtest/`` on ``sys.path``), and ``setup.cfg`` lists every package it ships."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_chatload_imports_from_the_installed_package(tmp_path: Path) -> None:
    # -I: no PYTHONPATH, no script directory, no user site; run from an empty directory,
    # so only the installation (editable or not) can provide the package.
    # Sans-IO: importing every module pulls in no socket, selector, Locust or gevent.
    code = (
        "import sys, chatload, chatload.irc, chatload.line, chatload.resp, chatload.ws; "
        "bad = {'socket', 'selectors', 'locust', 'gevent'} & set(sys.modules); "
        "assert not bad, bad; print(chatload.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    path = Path(out.stdout.strip())
    assert path.parts[-2:] == ("chatload", "__init__.py")
    assert "tests" not in path.parts


def test_setup_cfg_lists_every_package() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    on_disk = {
        ".".join(init.parent.relative_to(REPO / "server").parts)
        for init in (REPO / "server" / "chatd").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to setup.cfg's packages: {sorted(on_disk - listed)}"
    assert "chatload" in listed
    assert "chatload = loadtest/chatload" in cfg["options"]["package_dir"]
