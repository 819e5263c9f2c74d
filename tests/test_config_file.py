"""``--config FILE``, ``CHATD_*`` variables and ``--check-config`` (chatd.config_file).

These run the real command line in this process (click's runner): ``--check-config``
binds nothing, and :func:`chatd.cli.load` (what SIGHUP runs) only parses. What a
reload does to a running server is in ``test_reload.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from chatd.cli import load, main
from chatd.config import ReloadError
from chatd.config_file import SourcedOption, env_name, long_name

#: Every CHATD_* variable of this process unset, so the caller's shell cannot leak in.
CLEAN_ENV: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CHATD_")}


def check(*args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(main, ["--check-config", *args], env={**CLEAN_ENV, **(env or {})})


def shown(result: Result, key: str) -> tuple[str, str]:
    """``key``'s value and source as ``--check-config`` prints them."""
    for line in result.output.splitlines():
        match = re.match(rf"^{re.escape(key)} = (.*)  # (.*)$", line)
        if match:
            return match.group(1), match.group(2)
        match = re.match(rf"^# {re.escape(key)}: not set \((.*)\)$", line)
        if match:
            return "", match.group(1)
    raise AssertionError(f"{key} not in the output:\n{result.output}")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def options() -> list[SourcedOption]:
    return [p for p in main.params if isinstance(p, SourcedOption) and p.in_file]


def test_every_option_has_a_key_in_the_file_and_a_chatd_variable() -> None:
    names = {long_name(p) for p in options()}
    assert {"port", "irc-port", "max-clients", "motd", "oper", "allowed-origin"} <= names
    assert len(names) >= 50
    for param in options():
        assert param.envvar == env_name(long_name(param)), param.name
    # --version is not a setting; --config and --check-config are not keys of the file
    # (one names it, the other is what the process does).
    others = [p for p in main.params if not (isinstance(p, SourcedOption) and p.in_file)]
    assert sorted(long_name(p) for p in others) == ["check-config", "config", "version"]


@pytest.mark.parametrize("layers", ["default", "file", "env", "cli"])
def test_precedence_is_command_line_then_environment_then_file_then_default(
    tmp_path: Path, layers: str
) -> None:
    """One setting given at every layer up to ``layers``: the highest one wins, and
    --check-config and a reload's parse (load) agree on it."""
    conf = write(tmp_path / "chatd.toml", "# a comment\nmax-clients = 300\n")
    args: list[str] = []
    env: dict[str, str] = {}
    expected, source = 10000, "default"
    if layers in ("file", "env", "cli"):
        args += ["--config", str(conf)]
        expected, source = 300, f"{conf}, line 2"
    if layers in ("env", "cli"):
        env["CHATD_MAX_CLIENTS"] = "200"
        expected, source = 200, "$CHATD_MAX_CLIENTS"
    if layers == "cli":
        args += ["--max-clients", "100"]
        expected, source = 100, "command line"
    result = check(*args, env=env)
    assert result.exit_code == 0, result.output
    assert shown(result, "max-clients") == (str(expected), source)
    os.environ.update(env)
    try:
        assert load(args).max_clients == expected
    finally:
        for key in env:
            del os.environ[key]


def test_the_file_sets_every_kind_of_option(tmp_path: Path) -> None:
    (tmp_path / "motd.txt").write_text("line one\nline two\n")
    (tmp_path / "opers").write_text("alice:secret\n")
    conf = write(
        tmp_path / "chatd.toml",
        """
host = "127.0.0.1"
port = 4141
irc-port = 6668
engine = "asyncio"
server-name = "irc.example"
motd = "motd.txt"
oper-file = "opers"
oper = ["bob:hunter2"]
ping-interval = 60
ephemeral = true
room = "#hall"
max-line = 2048
connect-rate = 0.5
exempt-loopback = false
allowed-origin = ["https://a.example", "https://b.example"]
log-level = "debug"
log-format = "json"
""",
    )
    result = check("--config", str(conf))
    assert result.exit_code == 0, result.output
    where = f"{conf}, line"
    assert shown(result, "port") == ("4141", f"{where} 3")
    assert shown(result, "engine") == ('"asyncio"', f"{where} 5")
    assert shown(result, "ping-interval") == ("60.0", f"{where} 10")
    assert shown(result, "exempt-loopback") == ("false", f"{where} 15")
    assert shown(result, "allowed-origin")[0] == '["https://a.example", "https://b.example"]'
    # Relative paths are from the file's directory, not the working directory.
    assert shown(result, "motd")[0] == f'"{tmp_path / "motd.txt"}"'
    assert shown(result, "oper") == ("(hidden)", f"{where} 9")
    config = load(["--config", str(conf)])
    assert config.motd == ("line one", "line two")
    assert config.opers == {"alice": "secret", "bob": "hunter2"}
    assert config.port == 4141 and config.listeners[0].port == 6668
    assert config.data_dir is None and config.room == "#hall"
    assert (config.log_level, config.log_format) == ("debug", "json")
    assert config.allowed_origins == ("https://a.example", "https://b.example")


def test_an_option_repeated_in_the_environment_is_split_on_spaces() -> None:
    result = check(env={"CHATD_ALLOWED_ORIGIN": "https://a.example https://b.example"})
    assert result.exit_code == 0, result.output
    assert shown(result, "allowed-origin") == (
        '["https://a.example", "https://b.example"]',
        "$CHATD_ALLOWED_ORIGIN",
    )


def test_the_config_file_can_come_from_chatd_config(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.toml", "port = 4242\n")
    result = check(env={"CHATD_CONFIG": str(conf)})
    assert result.exit_code == 0, result.output
    assert shown(result, "port") == ("4242", f"{conf}, line 1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 5050\nprot = 1\n", "line 2: unknown key 'prot' (did you mean 'port'?)"),
        ("max_line = 512\n", "line 1: unknown key 'max_line' (did you mean 'max-line'?)"),
        ('\n\nport = "5050"\n', "line 3: port: expected an integer, got a string"),
        ("max-clients = 1.5\n", "line 1: max-clients: expected an integer, got a float"),
        ("max-clients = true\n", "line 1: max-clients: expected an integer, got a boolean"),
        ("ephemeral = 1\n", "line 1: ephemeral: expected a boolean (true or false), got an"),
        ('oper = "a:b"\n', "line 1: oper: expected an array, got a string"),
        ("allowed-origin = [1]\n", "line 1: allowed-origin: in the array: expected a string"),
        ("port = 99999\n", "line 1: port: 99999 is not in the range 0<=x<=65535"),
        ('engine = "fork"\n', "line 1: engine: 'fork' is not one of"),
        ('motd = "nowhere.txt"\n', "line 1: motd: File"),
        ("[tls]\ncert = 'x'\n", "line 1: [tls]: the file has no tables, only keys"),
        ("config = 'other.toml'\n", "line 1: unknown key 'config'"),
        ("check-config = true\n", "line 1: unknown key 'check-config'"),
        ("port = \n", "not valid TOML: Invalid value (at line 1, column 8)"),
        ("port = " + "[" * 5000 + "]" * 5000 + "\n", "not usable TOML: nested too deeply"),
    ],
)
def test_a_bad_file_is_an_error_naming_the_file_the_line_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    conf = write(tmp_path / "chatd.toml", text)
    result = check("--config", str(conf))
    assert result.exit_code == 2, result.output
    assert f"Error: {conf}" in result.output
    assert message in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ReloadError, match=re.escape(message)):
        load(["--config", str(conf)])


def test_a_bad_variable_is_an_error_naming_the_variable() -> None:
    result = check(env={"CHATD_PORT": "forty"})
    assert result.exit_code == 2
    assert "Error: $CHATD_PORT: port: 'forty' is not a valid integer" in result.output
    result = check(env={"CHATD_EXEMPT_LOOPBACK": "maybe"})
    assert result.exit_code == 2
    assert "$CHATD_EXEMPT_LOOPBACK: exempt-loopback: 'maybe' is not a valid boolean" in (
        result.output
    )


def test_a_missing_or_unreadable_file_is_an_error(tmp_path: Path) -> None:
    result = check("--config", str(tmp_path / "absent.toml"))
    assert result.exit_code == 2
    assert f"Error: {tmp_path / 'absent.toml'}: No such file or directory" in result.output
    conf = tmp_path / "latin1.toml"
    conf.write_bytes(b'server-name = "caf\xe9"\n')
    result = check("--config", str(conf))
    assert result.exit_code == 2
    assert "not UTF-8" in result.output


def test_settings_that_do_not_go_together_are_an_error_from_any_source(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.toml", "uvloop = true\n")
    result = check("--config", str(conf))
    assert result.exit_code == 2
    assert "--uvloop needs --engine asyncio" in result.output
    result = check("--config", str(conf), "--engine", "reactor")
    assert result.exit_code == 2


def test_check_config_loads_the_tls_files(tmp_path: Path) -> None:
    bad = write(tmp_path / "cert.pem", "not a certificate\n")
    result = check("--tls-port", "0", "--tls-cert", str(bad))
    assert result.exit_code == 2, result.output
    assert "TLS:" in result.output


def test_check_config_never_prints_a_secret(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.toml", 'password = "s3cret"\noper = ["root:t0psecret"]\n')
    result = check("--config", str(conf))
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output and "t0psecret" not in result.output
    assert shown(result, "password") == ("(hidden)", f"{conf}, line 1")


def test_the_command_line_help_names_each_variable() -> None:
    result = CliRunner().invoke(main, ["--help"], env=CLEAN_ENV)
    assert result.exit_code == 0
    assert "CHATD_MAX_CLIENTS" in result.output and "CHATD_CONFIG" in result.output


def test_a_real_start_reads_the_file_and_the_environment(tmp_path: Path) -> None:
    """The installed entry point, not the runner: the file gives the port range check,
    the environment overrides the file."""
    from chatwire import run_chatd

    conf = write(tmp_path / "c.toml", "max-line = 8\n")
    done = run_chatd("--config", str(conf), "--check-config")
    assert done.returncode == 2
    assert f"{conf}, line 1: max-line: 8 is not in the range 16<=x<=1048576" in done.stderr


def test_unknown_click_parameter_kinds_are_not_silently_accepted() -> None:
    """Every option's file type check knows its kind: flag, integer, number or text."""
    for param in options():
        assert param.is_flag or isinstance(
            param.type,
            click.types.IntParamType
            | click.types.FloatParamType
            | click.types.StringParamType
            | click.Choice
            | click.Path,
        ), param.name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("history-days = nan\n", "--history-days: nan is not a number of seconds or a rate"),
        ("connect-rate = inf\n", "--connect-rate: inf is not a number of seconds or a rate"),
        ('server-name = "a\\nb"\n', "a server name is one word"),
        ('password = "pass word"\n', "a password is one word"),
    ],
)
def test_values_a_type_check_lets_through_are_still_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    conf = write(tmp_path / "chatd.toml", text)
    result = check("--config", str(conf))
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_home_relative_path_in_the_file_is_expanded(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.toml", 'data-dir = "~/chat-state"\n')
    result = check("--config", str(conf), env={"HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    assert shown(result, "data-dir")[0] == f'"{tmp_path / "home" / "chat-state"}"'


def test_of_two_options_that_exclude_each_other_the_higher_layer_wins(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-the-file\n")
    conf = write(tmp_path / "c.toml", 'password-file = "secret"\ndata-dir = "state"\n')
    assert load(["--config", str(conf)]).password == "from-the-file"
    assert load(["--config", str(conf), "--password", "cli"]).password == "cli"
    config = load(["--config", str(conf), "--ephemeral"])
    assert config.data_dir is None
    # From one layer, both are still an error.
    with pytest.raises(ReloadError, match="give --password or --password-file, not both"):
        load(["--password-file", str(tmp_path / "secret"), "--password", "x"])


def test_the_state_directory_systemd_names_is_the_default_data_dir(tmp_path: Path) -> None:
    result = check(env={"STATE_DIRECTORY": str(tmp_path / "state")})
    assert result.exit_code == 0, result.output
    assert shown(result, "data-dir") == (f'"{tmp_path / "state"}"', "default")
    result = check("--redis", "redis://127.0.0.1:1", env={"STATE_DIRECTORY": str(tmp_path)})
    assert result.exit_code == 0, result.output  # a cluster node under the unit


def test_a_redis_password_is_never_printed(tmp_path: Path) -> None:
    result = check("--redis", "redis://user:hunter2@127.0.0.1:1/0")
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert shown(result, "redis")[0] == '"redis://user:***@127.0.0.1:1/0"'
    result = check("--redis", "redis://:hunter2@127.0.0.1:99999")
    assert result.exit_code == 2 and "hunter2" not in result.output
