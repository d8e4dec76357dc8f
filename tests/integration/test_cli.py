"""The `swcmp` command line through click's runner (and a few real subprocesses).

Requests to a CA are in test_cli_requests.py; here: sessions, checks, errors,
exit codes, --json shapes, help texts, start-up imports.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ec

from pki import TestPKI, make_cert, make_pki, pem_cert, pem_key
from pki import name as dn_name
from swcmp import cli as cli_module
from swcmp import session as session_module
from swcmp import sessionfile
from swcmp.cli import cli, iter_commands
from swcmp.cli import options as cli_options
from swcmp.cli.render import format_serial
from swcmp.cmp import keys

SECRET = "S3cret-never-PRINTED-4711"
ENTITY = "CN=gw1.example.net,O=Example,C=DE"
ENTITY_WIRE = "/C=DE/O=Example/CN=gw1.example.net"
CA_NAME = "/CN=swcmp Test Root CA"


@dataclass
class Env:
    """A private set of swcmp directories, a test PKI, and a way to run the CLI."""

    root: Path
    pki: TestPKI

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def state_dir(self) -> Path:
        return self.root / "var"

    @property
    def swanctl_dir(self) -> Path:
        return self.root / "swanctl"

    @property
    def secret_file(self) -> Path:
        return self.root / "secret"

    def run(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        base = [
            "--config-dir", str(self.config_dir),
            "--state-dir", str(self.state_dir),
            "--swanctl-dir", str(self.swanctl_dir),
            "--vici", "none",
        ]  # fmt: skip
        result = CliRunner().invoke(cli, [*base, *args], env=dict(env or {}), prog_name="swcmp")
        # Expected errors never escape as exceptions; only SystemExit (click's exit) may.
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"unexpected exception: {result.exception!r}\n{result.output}")
        return result

    def json(self, *args: str) -> Any:
        result = self.run("--json", *args)
        return json.loads(result.stdout)

    def snapshot(self) -> dict[str, tuple[bytes | None, int]]:
        """Every file and directory under the test root with content and mode."""
        out: dict[str, tuple[bytes | None, int]] = {}
        for path in sorted(self.root.rglob("*")):
            info = path.lstat()
            data = path.read_bytes() if path.is_file() else None
            out[str(path.relative_to(self.root))] = (data, stat.S_IMODE(info.st_mode))
        return out

    def install_key(self, key: keys.PrivateKey, name: str = "gw1") -> Path:
        private = self.swanctl_dir / "private"
        private.mkdir(parents=True, exist_ok=True)
        path = private / f"{name}.key"
        path.write_bytes(pem_key(key))
        path.chmod(0o600)
        return path

    def complete_session(self, name: str = "gw1") -> None:
        """A session whose every check passes (with --vici none), without a CA."""
        self.install_key(self.pki.gw_key, name)
        result = self.run(
            "session", "create", name,
            "--entity", "/CN=gw1.example.net", "--san", "DNS:gw1.example.net",
            "--ca-name", CA_NAME, "--server-url", "http://127.0.0.1:9/pkix/",
            "--mac-ref", "1234", "--mac-secret-file", "secret",
            "--auth-cert", "pki/gw.crt", "--auth-key", "pki/gw.key",
            "--trust", "pki/root.crt",
        )  # fmt: skip
        assert result.exit_code == 0, result.output


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.chdir(tmp_path)
    for var in ("SWCMP_CONFIG_DIR", "SWCMP_STATE_DIR", "SWCMP_SWANCTL_DIR", "SWCMP_VICI"):
        monkeypatch.delenv(var, raising=False)
    e = Env(tmp_path, make_pki(tmp_path / "pki"))
    e.secret_file.write_text(SECRET + "\n")
    e.secret_file.chmod(0o600)
    return e


# --- help, choices, start-up --------------------------------------------------------------


def _own_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    # testca belongs to the test CA and has its own tests.
    return [(p, c) for p, c in iter_commands() if "testca" not in p]


def test_every_command_and_option_has_help() -> None:
    paths = [" ".join(p) for p, _ in _own_commands()]
    for expected in (
        "swcmp session create", "swcmp session set", "swcmp session unset",
        "swcmp session show", "swcmp session list", "swcmp session delete",
        "swcmp session check", "swcmp session enable-auto-update",
        "swcmp session disable-auto-update", "swcmp request initial",
        "swcmp request certificate", "swcmp request keyupdate", "swcmp stats",
        "swcmp stats reset", "swcmp status", "swcmp renew", "swcmp serve",
        "swcmp hook charon-start",
    ):  # fmt: skip
        assert expected in paths
    for path, command in _own_commands():
        assert command.help, f"{' '.join(path)} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{' '.join(path)} {param.opts} has no help text"
        result = CliRunner().invoke(cli, [*path[1:], "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_expire_time_help_says_remaining_share() -> None:
    result = CliRunner().invoke(cli, ["session", "set", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert "validity period that must still REMAIN" in text
    assert "30d" in text


def test_choices_agree_with_the_library() -> None:
    from swcmp.cmp import MAC_ALGS, protection

    assert set(MAC_ALGS) == {*protection.MAC_ALGS, protection.PBMAC1}
    assert set(cli_options._OPTION_FIELDS.values()) == set(session_module.FIELDS) - {"auto_update"}


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == "swcmp 0.1.0"


HEAVY = ("pyasn1", "pyasn1_alt_modules", "requests", "vici", "pkcs11", "swcmp.cmp.client",
         "swcmp.cmp.codec")


def _modules_after(args: list[str], env: Env) -> set[str]:
    code = (
        "import sys\n"
        "from swcmp.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    run_env = dict(
        os.environ,
        SWCMP_CONFIG_DIR=str(env.config_dir),
        SWCMP_STATE_DIR=str(env.state_dir),
        SWCMP_SWANCTL_DIR=str(env.swanctl_dir),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=run_env, check=False
    )
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_and_status_import_no_protocol_stack(env: Env) -> None:
    env.complete_session()
    help_modules = _modules_after(["--help"], env)
    assert not {m for m in help_modules if m.split(".")[0] in ("cryptography", *HEAVY)}
    assert not {"swcmp.session", "swcmp.sessionfile"} & help_modules
    assert not {m for m in help_modules if m.startswith("swcmp.testca")}
    status_modules = _modules_after(["status"], env)
    assert "swcmp.state" in status_modules  # the command did run
    assert not {m for m in status_modules if m in HEAVY or m.split(".")[0] in HEAVY}


def test_a_renewal_pass_does_not_import_the_serve_loop(env: Env) -> None:
    """``swcmp.service`` hands out the serve loop only to ``swcmp serve``: a pass run by
    cron (and a request, which records through the same service) never imports it."""
    env.complete_session()
    modules = _modules_after(["--vici", "none", "renew", "--due"], env)
    assert "swcmp.service.passes" in modules  # the pass did run
    assert "swcmp.service.serve" not in modules


def test_a_keyupdate_does_not_import_the_template_reader_or_the_metrics(
        tmp_path: Path) -> None:
    # swcmp.cmp.template (four dataclasses built at import) is only for the genm
    # certReqTemplate question, swcmp.metrics only for a metrics file or a failed
    # renewal's count; a KUR against the test CA goes without either.
    from swcmp.testca import TestCA
    from testca_site import add_session, ca_config, make_site, swcmp_cmd

    ca = TestCA(tmp_path / "ca", config=ca_config()).start()
    try:
        site = make_site(tmp_path / "site")
        add_session(site, ca, "gw1")
        code = ("import runpy, sys\n"
                "sys.argv = ['swcmp', *sys.argv[1:]]\n"
                "try:\n"
                "    runpy.run_module('swcmp', run_name='__main__', alter_sys=True)\n"
                "except SystemExit as e:\n"
                "    print('EXIT', e.code, file=sys.stderr)\n"
                "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\n")
        cmd = swcmp_cmd(site, "request", "keyupdate", "gw1", "--no-deploy")
        proc = subprocess.run([sys.executable, "-c", code, *cmd[3:]], capture_output=True,
                              text=True, timeout=120, check=False)
    finally:
        ca.stop()
    assert "renewed" in proc.stdout, proc.stdout + proc.stderr  # the KUR did happen
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    modules = set(line.split()[1:])
    assert "swcmp.cmp.client" in modules
    assert "swcmp.cmp.template" not in modules
    assert "swcmp.service.passes" in modules
    assert "swcmp.metrics" not in modules


def test_python_m_swcmp_subprocess(env: Env) -> None:
    run_env = dict(
        os.environ,
        SWCMP_CONFIG_DIR=str(env.config_dir),
        SWCMP_STATE_DIR=str(env.state_dir),
        SWCMP_SWANCTL_DIR=str(env.swanctl_dir),
        SWCMP_VICI="none",
    )

    def swcmp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "swcmp", *args],
            capture_output=True, text=True, env=run_env, cwd=env.root, check=False,
        )  # fmt: skip

    created = swcmp("session", "create", "gw1", "--entity", ENTITY, "--trust", "pki/root.crt")
    assert created.returncode == 0, created.stderr
    assert (env.config_dir / "sessions" / "gw1.toml").is_file()  # the env vars were used
    shown = swcmp("--json", "session", "show", "gw1")
    assert shown.returncode == 0
    data = json.loads(shown.stdout)
    assert data["entity_wire"] == ENTITY_WIRE
    assert data["trust"] == [str(env.root / "pki" / "root.crt")]
    check = swcmp("session", "check", "gw1")
    assert check.returncode == 1 and "FAIL" in check.stdout
    bad = swcmp("session", "show", "../x")
    assert bad.returncode == 2 and "invalid session name" in bad.stderr
    missing = swcmp("session", "show", "nosuch")
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[0] == "error: no session named nosuch"
    assert missing.stderr.splitlines()[1].startswith("hint: ")
    assert "Traceback" not in missing.stderr
    version = swcmp("--version")
    assert version.returncode == 0 and version.stdout.strip() == "swcmp 0.1.0"


# --- create, set, show, unset, delete, list ------------------------------------------------


def test_create_defaults_key_to_name_and_shows_wire_order(env: Env) -> None:
    result = env.run("session", "create", "gw1", "--entity", ENTITY)
    assert result.exit_code == 0, result.output
    assert "created session gw1" in result.stdout
    data = env.json("session", "show", "gw1")
    assert data["key"] == "gw1"
    assert data["entity"] == ENTITY
    assert data["entity_wire"] == ENTITY_WIRE
    text = env.run("session", "show", "gw1").stdout
    assert ENTITY_WIRE in text
    assert "wire order" in text
    assert "REMAINS" in text  # expire_time explained
    assert env.json("session", "show", "gw1") == env.json("session", "create", "gw2",
                                                          "--entity", ENTITY) | {
        "name": "gw1", "key": "gw1"
    }  # fmt: skip


def test_create_with_key_option_and_existing_session(env: Env) -> None:
    assert env.run("session", "create", "gw1", "--key", "shared").exit_code == 0
    assert env.json("session", "show", "gw1")["key"] == "shared"
    before = env.snapshot()
    again = env.run("session", "create", "gw1")
    assert again.exit_code == 1
    assert "already exists" in again.stderr
    assert env.snapshot() == before


def _other_ca(env: Env, fname: str = "other-ca.crt") -> Path:
    """A second, unrelated CA certificate in the test PKI's directory."""
    key = ec.generate_private_key(ec.SECP256R1())
    return env.pki.write(fname, pem_cert(make_cert(dn_name("Other CA"), key.public_key(), key,
                                                   ca=True)))


def test_set_stores_relative_paths_absolute_and_keeps_other_settings(env: Env) -> None:
    _other_ca(env)
    env.run("session", "create", "gw1", "--entity", ENTITY, "--mac-ref", "1234")
    result = env.run(
        "session", "set", "gw1", "--trust", "pki/root.crt", "--trust", "pki/other-ca.crt",
        "--san", "DNS:gw1.example.net", "--san", "IP:192.0.2.1", "--expire-time", "30d",
        "--regenerate", "--key-type", "ecdsa:p256", "--connection", "site-a",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = env.json("session", "show", "gw1")
    assert data["trust"] == [str(env.root / "pki/root.crt"), str(env.root / "pki/other-ca.crt")]
    assert data["sans"] == ["DNS:gw1.example.net", "IP:192.0.2.1"]
    assert data["expire_time"] == "30d"
    assert data["regenerate"] is True
    assert data["key_type"] == "ecdsa:p256"
    assert data["connections"] == ["site-a"]
    assert data["mac_ref"] == "1234"  # untouched
    assert data["entity"] == ENTITY
    env.run("session", "set", "gw1", "--no-regenerate", "--expire-time", "20%")
    data = env.json("session", "show", "gw1")
    assert data["regenerate"] is False and data["expire_time"] == "20%"


def test_set_without_options_is_a_usage_error(env: Env) -> None:
    env.run("session", "create", "gw1")
    result = env.run("session", "set", "gw1")
    assert result.exit_code == 2
    assert "nothing to set" in result.stderr


def test_unset(env: Env) -> None:
    env.run("session", "create", "gw1", "--mac-ref", "1234", "--san", "DNS:a.example")
    result = env.run("session", "unset", "gw1", "mac-ref", "san")
    assert result.exit_code == 0, result.output
    data = env.json("session", "show", "gw1")
    assert data["mac_ref"] is None and data["sans"] == []
    unknown = env.run("session", "unset", "gw1", "colour")
    assert unknown.exit_code == 1
    assert "unknown setting 'colour'" in unknown.stderr
    assert "hint: known settings:" in unknown.stderr
    auto = env.run("session", "unset", "gw1", "auto_update")
    assert auto.exit_code == 1 and "disable-auto-update" in auto.stderr


def test_delete_leaves_keys_and_certificates(env: Env) -> None:
    env.complete_session()
    key = env.swanctl_dir / "private" / "gw1.key"
    result = env.run("session", "delete", "gw1")
    assert result.exit_code == 0
    assert not (env.config_dir / "sessions" / "gw1.toml").exists()
    assert key.exists()
    assert env.run("session", "show", "gw1").exit_code == 1
    assert env.run("session", "delete", "gw1").exit_code == 1
    data = env.json("session", "create", "gw2")
    assert data["name"] == "gw2"
    assert env.json("session", "delete", "gw2") == {
        "session": "gw2",
        "deleted": True,
        "path": str(env.config_dir / "sessions" / "gw2.toml"),
    }


def test_list_and_json_shape(env: Env) -> None:
    assert env.json("session", "list") == {"sessions": [], "errors": []}
    assert "no sessions" in env.run("session", "list").stdout
    env.run("session", "create", "gw1", "--entity", ENTITY)
    env.run("session", "create", "gw2")
    data = env.json("session", "list")
    assert [s["name"] for s in data["sessions"]] == ["gw1", "gw2"]
    assert data["sessions"][0] == env.json("session", "show", "gw1")
    text = env.run("session", "list").stdout
    assert "gw1" in text and ENTITY_WIRE in text and "gw2" in text


# --- bad input: clear error, exit code, nothing written ------------------------------------


BAD_SETTINGS = {
    "bad DN": (["--entity", "CN=gw1,,O=x"], "invalid distinguished name"),
    "bad DN type": (["--ca-name", "/XX=foo/CN=ca"], "invalid distinguished name"),
    "bad URL": (["--server-url", "ftp://ca.example.net/"], "invalid server URL"),
    "URL without host": (["--server-url", "http:///pkix/"], "invalid server URL"),
    "bad SAN": (["--san", "MAIL:x@example.net"], "subjectAltName"),
    "bad expire time": (["--expire-time", "5"], "expire_time"),
    "bad expire duration": (["--expire-time", "3 fortnights"], "expire_time"),
    "missing trust file": (["--trust", "pki/nope.crt"], "does not exist"),
    "missing secret file": (["--mac-secret-file", "nope"], "does not exist"),
    "secret file others may read": (["--mac-secret-file", "pki/root.crt"],
                                    "lets others read the MAC secret"),
    "directory as file": (["--auth-cert", "pki"], "not a regular file"),
    "trust is not a certificate": (["--trust", "pki/gw.key"], "not a PEM or DER X.509"),
    "auth key is not a key": (["--auth-key", "pki/root.crt"], "private key"),
    "wrong key for the cert": (
        ["--auth-cert", "pki/gw.crt", "--auth-key", "pki/srv.key"],
        "does not belong to the key",
    ),
    "bad key name": (["--key", "../../etc/shadow"], "invalid key name"),
    "bad connection": (["--connection", "a b"], "invalid connection name"),
}


@pytest.mark.parametrize("command", ["create", "set"])
@pytest.mark.parametrize("case", list(BAD_SETTINGS), ids=list(BAD_SETTINGS))
def test_bad_settings_are_refused_and_nothing_is_written(
    env: Env, command: str, case: str
) -> None:
    options, expected = BAD_SETTINGS[case]
    name = "gw1" if command == "set" else "new"
    if command == "set":
        env.run("session", "create", "gw1", "--entity", ENTITY)
    before = env.snapshot()
    result = env.run("session", command, name, *options)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert lines[1].startswith("hint: ") and len(lines[1]) > len("hint: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert env.snapshot() == before
    as_json = env.run("--json", "session", command, name, *options)
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert set(data) == {"error", "hint", "code"} and expected in data["error"]
    assert data["code"] in ("refused", "session_file", "certificate")
    assert env.snapshot() == before


def test_set_warns_when_expire_time_leaves_less_than_the_renewal_floor(env: Env) -> None:
    env.run("session", "create", "gw1", "--entity", ENTITY)
    result = env.run("session", "set", "gw1", "--expire-time", "95")
    assert result.exit_code == 0, result.output
    assert "warning: expire_time 95% leaves less than 90%" in result.stderr
    assert env.json("session", "show", "gw1")["expire_time"] == "95%"  # set all the same
    ok = env.run("session", "set", "gw1", "--expire-time", "90")
    assert ok.exit_code == 0 and "warning: expire_time" not in ok.stderr
    # a duration is judged against the current certificate (a year-long one here)
    (env.swanctl_dir / "x509").mkdir(parents=True, exist_ok=True)
    (env.swanctl_dir / "x509" / "gw1.crt").write_bytes((env.root / "pki" / "gw.crt").read_bytes())
    long = env.run("session", "set", "gw1", "--expire-time", "340d")
    assert "warning: expire_time 340d is 10% or more" in long.stderr, long.stderr
    short = env.run("session", "set", "gw1", "--expire-time", "30d")
    assert "warning: expire_time" not in short.stderr


def test_wrong_key_for_the_existing_session_key_is_refused(env: Env) -> None:
    env.run("session", "create", "gw1")
    env.install_key(keys.generate_key("ecdsa:p256"))  # the session's own key, another one
    before = env.snapshot()
    result = env.run("session", "set", "gw1", "--auth-cert", "pki/gw.crt")
    assert result.exit_code == 1
    assert "does not belong to the key" in result.stderr
    assert env.snapshot() == before


@pytest.mark.parametrize("name", ["../x", "..", ".hidden", "a/b", "x y", "", "-x", "é"])
@pytest.mark.parametrize(
    "args", [["session", "create"], ["session", "show"], ["session", "delete"],
             ["session", "check"], ["request", "initial"], ["status"], ["stats", "reset"]]
)  # fmt: skip
def test_invalid_session_names_are_usage_errors(env: Env, name: str, args: list[str]) -> None:
    before = env.snapshot()
    result = env.run(*args, name)
    assert result.exit_code == 2, result.output
    assert "invalid session name" in result.stderr or "No such option" in result.stderr
    assert env.snapshot() == before


def test_invalid_name_with_json_gives_json(env: Env) -> None:
    result = env.run("--json", "session", "show", "../x")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert "invalid session name '../x'" in data["error"]
    assert data["hint"] == "see `swcmp session show --help`"
    assert data["code"] == "usage"
    stats = env.run("stats", "../x")
    assert stats.exit_code == 2 and "invalid session name" in stats.stderr


def test_unknown_choice_is_a_usage_error(env: Env) -> None:
    env.run("session", "create", "gw1")
    before = env.snapshot()
    result = env.run("session", "set", "gw1", "--key-type", "rsa:1024")
    assert result.exit_code == 2
    assert env.snapshot() == before


# --- corrupted session files ----------------------------------------------------------------


def test_corrupted_session_file_does_not_break_other_commands(env: Env) -> None:
    env.complete_session()
    sessions = env.config_dir / "sessions"
    (sessions / "broken.toml").write_text('entity = "CN=x"\nserver_url = "http://ok/"\nkey = [\n')
    (sessions / "typo.toml").write_text('entity = "CN=x"\nmac_reff = "1"\n')

    shown = env.run("session", "show", "broken")
    assert shown.exit_code == 1
    assert f"error: {sessions / 'broken.toml'}:" in shown.stderr
    assert "Traceback" not in shown.output
    typo = env.run("session", "show", "typo")
    assert f"{sessions / 'typo.toml'}:2: unknown setting 'mac_reff'" in typo.stderr

    listing = env.run("session", "list")
    assert listing.exit_code == 0
    assert "gw1" in listing.stdout
    assert f"broken: {sessions / 'broken.toml'}" in listing.stdout
    assert f"broken: {sessions / 'typo.toml'}:2" in listing.stdout
    data = env.json("session", "list")
    assert [s["name"] for s in data["sessions"]] == ["gw1"]
    assert {Path(e["path"]).name for e in data["errors"]} == {"broken.toml", "typo.toml"}
    typo_error = next(e for e in data["errors"] if e["path"].endswith("typo.toml"))
    assert typo_error["line"] == 2 and typo_error["hint"]

    status = env.run("status")
    assert status.exit_code == 1  # a broken session file renews nothing: never silent
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:-1]}
    assert set(rows) == {"gw1", "broken", "typo"}
    assert f"broken session file: {sessions / 'broken.toml'}" in rows["broken"]
    assert env.json("status")["errors"][0]["path"].endswith("broken.toml")
    assert env.run("session", "check", "gw1").exit_code == 0
    assert env.run("stats").exit_code == 0
    assert env.run("session", "delete", "broken").exit_code == 0


# --- checks and auto-update ---------------------------------------------------------------


def test_check_fails_then_passes_and_enable_is_refused_then_accepted(env: Env) -> None:
    env.run("session", "create", "gw1", "--entity", ENTITY)
    check = env.run("session", "check", "gw1")
    assert check.exit_code == 1
    assert "FAIL     ca-name" in check.stdout and "fix: swcmp session set gw1 --ca-name" in (
        check.stdout
    )
    assert "ok       entity" in check.stdout

    before = env.snapshot()
    refused = env.run("session", "enable-auto-update", "gw1")
    assert refused.exit_code == 1
    assert refused.stdout == check.stdout  # the same report
    assert "error: auto-update not enabled" in refused.stderr
    assert env.snapshot() == before
    assert env.json("session", "show", "gw1")["auto_update"] is False

    env.run("session", "delete", "gw1")
    env.complete_session()
    passed = env.run("session", "check", "gw1")
    assert passed.exit_code == 0, passed.output
    assert "FAIL" not in passed.stdout and "all 12 checks passed" in passed.stdout
    enabled = env.run("session", "enable-auto-update", "gw1")
    assert enabled.exit_code == 0, enabled.output
    assert "auto-update enabled" in enabled.stdout
    assert env.json("session", "show", "gw1")["auto_update"] is True

    # A change that breaks a check is saved, with a warning.
    _other_ca(env, "other.crt")
    changed = env.run("session", "set", "gw1", "--trust", "pki/other.crt")
    assert changed.exit_code == 0
    assert "warning: auto-update is on but these checks now fail: auth-cert-chain" in (
        changed.stderr
    )
    disabled = env.run("--json", "session", "disable-auto-update", "gw1")
    assert json.loads(disabled.stdout) == {"session": "gw1", "auto_update": False}
    assert env.json("session", "show", "gw1")["auto_update"] is False


def test_check_json_shape(env: Env) -> None:
    env.run("session", "create", "gw1", "--entity", ENTITY)
    result = env.run("session", "check", "gw1", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert set(data) == {"session", "ok", "checks"}
    assert data["session"] == "gw1" and data["ok"] is False
    names = [c["name"] for c in data["checks"]]
    assert names[:5] == ["entity", "ca-name", "server-url", "auth-cert", "auth-cert-key"]
    for item in data["checks"]:
        assert set(item) == {"name", "ok", "level", "detail", "fix"}
        assert isinstance(item["ok"], bool)
        assert item["level"] in ("ok", "warn", "pending", "fail")
        assert item["ok"] == (item["level"] in ("ok", "warn"))
        assert bool(item["fix"]) == (item["level"] != "ok")
    refused = json.loads(env.run("--json", "session", "enable-auto-update", "gw1").stdout)
    assert refused == data | {"auto_update": False}


def _run_with_vici(env: Env, uri: str, *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            "--config-dir", str(env.config_dir), "--swanctl-dir", str(env.swanctl_dir),
            "--state-dir", str(env.state_dir), "--vici", uri, *args,
        ],
    )  # fmt: skip


def test_charon_down_warns_and_enable_is_accepted(env: Env) -> None:
    env.complete_session()
    (env.swanctl_dir / "x509").mkdir()
    (env.swanctl_dir / "x509" / "gw1.crt").write_bytes(env.pki.dir.joinpath("gw.crt").read_bytes())
    dead = f"unix://{env.root / 'no-charon.vici'}"
    check = _run_with_vici(env, dead, "session", "check", "gw1")
    assert check.exit_code == 0, check.output  # warnings alone: exit 0
    assert "warn     strongswan" in check.stdout and "FAIL" not in check.stdout
    assert "1 warning" in check.stdout and "fix: start charon" in check.stdout
    data = json.loads(_run_with_vici(env, dead, "--json", "session", "check", "gw1").stdout)
    assert data["ok"] is True
    (item,) = [c for c in data["checks"] if c["level"] != "ok"]
    assert item["name"] == "strongswan" and item["level"] == "warn" and item["ok"] is True
    assert "--vici" in item["fix"]
    enabled = _run_with_vici(env, dead, "--json", "session", "enable-auto-update", "gw1")
    assert enabled.exit_code == 0, enabled.output
    assert json.loads(enabled.stdout)["auto_update"] is True
    assert env.json("session", "show", "gw1")["auto_update"] is True


def test_key_mismatch_fails_and_enable_is_refused(env: Env) -> None:
    env.complete_session()
    # another key under the certificate's key file: the pair no longer matches
    (env.root / "pki" / "gw.key").write_bytes(pem_key(keys.generate_key("ecdsa:p256")))
    dead = f"unix://{env.root / 'no-charon.vici'}"
    check = _run_with_vici(env, dead, "--json", "session", "check", "gw1")
    assert check.exit_code == 1
    levels = {c["name"]: c["level"] for c in json.loads(check.stdout)["checks"]}
    assert levels["auth-cert-key"] == "fail" and levels["strongswan"] == "warn"
    refused = _run_with_vici(env, dead, "session", "enable-auto-update", "gw1")
    assert refused.exit_code == 1
    assert "FAIL     auth-cert-key" in refused.stdout and "warn     strongswan" in refused.stdout
    assert "error: auto-update not enabled for session gw1: 1 check(s) failed" in refused.stderr
    assert env.json("session", "show", "gw1")["auto_update"] is False


# --- secrets -------------------------------------------------------------------------------


def test_secret_never_printed(env: Env) -> None:
    env.complete_session()
    outputs = [
        env.run("session", "show", "gw1"),
        env.run("--json", "session", "show", "gw1"),
        env.run("--json", "session", "list"),
        env.run("session", "check", "gw1"),
        env.run("--json", "session", "check", "gw1"),
        env.run("status"),
        env.run("-vv", "--json", "status"),
        env.run("-vv", "request", "initial", "gw1", "--no-deploy"),  # nothing listens on :9
        env.run("-vv", "--json", "request", "initial", "gw1"),
        env.run("--json", "session", "set", "gw1", "--mac-secret-file", "pki"),
    ]
    assert outputs[7].exit_code == 1 and "error: " in outputs[7].stderr
    assert "Traceback" in outputs[7].stderr  # -v shows it
    for result in outputs:
        assert SECRET not in result.output
        assert SECRET not in result.stderr
    shown = outputs[0].stdout
    assert str(env.secret_file) in shown and "content not shown" in shown


# --- errors in one place -------------------------------------------------------------------


def test_errors_have_message_and_hint_traceback_only_with_verbose(env: Env) -> None:
    quiet = env.run("session", "show", "nosuch")
    assert quiet.exit_code == 1
    assert quiet.stderr == (
        "error: no session named nosuch\nhint: create it with `swcmp session create nosuch`\n"
    )
    loud = env.run("-v", "session", "show", "nosuch")
    assert loud.exit_code == 1
    assert "Traceback" in loud.stderr and "ConfigError" in loud.stderr
    assert loud.stderr.endswith(quiet.stderr)
    as_json = env.run("--json", "session", "show", "nosuch")
    assert as_json.exit_code == 1 and as_json.stderr == ""
    assert json.loads(as_json.stdout) == {
        "error": "no session named nosuch",
        "hint": "create it with `swcmp session create nosuch`",
        "code": "refused",
    }


def test_directories_from_environment(env: Env) -> None:
    variables = {
        "SWCMP_CONFIG_DIR": str(env.root / "cfg2"),
        "SWCMP_STATE_DIR": str(env.root / "state2"),
        "SWCMP_SWANCTL_DIR": str(env.root / "swan2"),
        "SWCMP_JSON": "1",
    }
    result = CliRunner().invoke(cli, ["session", "create", "e1"], env=variables)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "e1"
    assert (env.root / "cfg2" / "sessions" / "e1.toml").is_file()
    status = CliRunner().invoke(cli, ["status", "e1"], env=variables)
    assert json.loads(status.stdout)["sessions"][0]["session"] == "e1"
    # An option beats the environment.
    other = CliRunner().invoke(
        cli, ["--config-dir", str(env.config_dir), "session", "list"], env=variables
    )
    assert json.loads(other.stdout) == {"sessions": [], "errors": []}


def test_shell_completion_of_session_names(env: Env) -> None:
    env.run("session", "create", "gw1")
    env.run("session", "create", "gw2")
    env.run("session", "create", "other")
    result = CliRunner().invoke(
        cli,
        [],
        prog_name="swcmp",
        env={
            "_SWCMP_COMPLETE": "bash_complete",
            "COMP_WORDS": f"swcmp --config-dir {env.config_dir} session show gw",
            "COMP_CWORD": "5",
        },
    )
    assert result.exit_code == 0
    assert result.stdout.split() == ["plain,gw1", "plain,gw2"]


# --- stats and status without a CA ----------------------------------------------------------


def test_stats_and_status_of_a_fresh_session(env: Env) -> None:
    env.run("session", "create", "gw1")
    stats = env.run("stats", "gw1")
    assert stats.exit_code == 0
    assert "ir" in stats.stdout and "pollReq" in stats.stdout and "sent" in stats.stdout
    data = env.json("stats")
    assert data["sessions"][0]["session"] == "gw1"
    assert data["sessions"][0]["stats"]["ir"] == {"sent": 0, "received": 0, "failed": 0}
    assert env.json("stats", "reset") == {"reset": ["gw1"]}
    assert env.json("stats", "reset", "gw1") == {"reset": ["gw1"]}
    missing = env.run("stats", "nosuch")
    assert missing.exit_code == 1 and "no session named nosuch" in missing.stderr
    assert env.run("stats", "reset", "nosuch").exit_code == 1
    status = env.json("status", "gw1")
    entry = status["sessions"][0]
    assert entry["state"] == "needs_ir" and entry["certificate"] is None
    assert entry["last_result"] is None and entry["next_renewal"] is None
    assert "needs_ir" in env.run("status").stdout


def test_status_with_a_certificate(env: Env) -> None:
    env.complete_session()
    x509_dir = env.swanctl_dir / "x509"
    x509_dir.mkdir(parents=True)
    (x509_dir / "gw1.crt").write_bytes((env.root / "pki" / "gw.crt").read_bytes())
    env.run("session", "enable-auto-update", "gw1")
    entry = env.json("status", "gw1")["sessions"][0]
    assert entry["state"] == "idle"
    assert entry["certificate"]["serial"] == f"{env.pki.gw.serial_number:x}"
    assert entry["certificate"]["expired"] is False
    assert entry["certificate"]["days_left"] in (363, 364)
    assert entry["next_renewal"] is not None
    text = env.run("status", "gw1").stdout
    # text: swanctl's serial form and ISO 8601 to the minute, UTC
    assert f"serial {format_serial(env.pki.gw.serial_number)}, valid until " \
        f"{env.pki.gw.not_valid_after_utc:%Y-%m-%dT%H:%MZ}" in text and "days left" in text


def test_testca_is_mounted_when_installed() -> None:
    listing = CliRunner().invoke(cli, ["--help"])
    if not (Path(cli_module.__file__).parent.parent / "testca" / "cli.py").is_file():
        assert "testca" not in listing.output
        return
    assert "testca" in listing.output
    result = CliRunner().invoke(cli, ["testca", "--help"], prog_name="swcmp")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: swcmp testca")


def test_serve_logs_progress_by_default(tmp_path: Path) -> None:
    """A service's log is what the journal shows: INFO lines without any -v."""
    import select
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, SWCMP_CONFIG_DIR=str(tmp_path / "etc"),
               SWCMP_STATE_DIR=str(tmp_path / "var"), SWCMP_SWANCTL_DIR=str(tmp_path / "sw"),
               SWCMP_VICI="none")
    proc = subprocess.Popen([sys.executable, "-m", "swcmp", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # SIGTERM once serve watches (its handlers are installed by then), however long the
    # start takes on a busy machine (a minute at most; the wait ends at EOF too)
    assert proc.stderr is not None
    first: list[str] = []
    deadline = time.monotonic() + 60
    while select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))[0]:
        line = proc.stderr.readline()
        first.append(line)
        if not line or "swcmp serve: watching" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _out, rest = proc.communicate(timeout=15)
    err = "".join(first) + rest
    assert proc.returncode == 0, err
    assert "INFO: swcmp serve: watching" in err
    assert "Traceback" not in err


def test_status_table_sorted_by_urgency(env: Env) -> None:
    import datetime as dt

    from pki import pem_cert
    from swcmp.paths import Paths
    from swcmp.state import StateStore

    now = dt.datetime.now(dt.UTC)
    x509_dir = env.swanctl_dir / "x509"
    x509_dir.mkdir(parents=True)
    certs = {  # session -> certificate
        "a-ok": env.pki.issue(env.pki.gw_key, days=365),
        "b-expired": env.pki.issue(env.pki.gw_key, not_before=now - dt.timedelta(days=30),
                                   days=29),
        "c-due": env.pki.issue(env.pki.gw_key, not_before=now - dt.timedelta(days=29),
                               days=30),
        "d-failing": env.pki.issue(env.pki.gw_key, days=200),
    }
    for name, cert in certs.items():
        env.run("session", "create", name, "--entity", ENTITY, "--trust", "pki/root.crt")
        (x509_dir / f"{name}.crt").write_bytes(pem_cert(cert))
        env.run("session", "set", name, "--expire-time", "50")
    paths = Paths(env.config_dir, env.state_dir, env.swanctl_dir)
    for name in certs:
        # auto-update on, as enable-auto-update would leave it (the checks are tested above)
        sessionfile.SessionStore(env.config_dir).update(name, set_values={"auto_update": True})
    with StateStore(paths).update("d-failing") as st:
        st.failures = 2
        st.state = "failed"
        st.record("kur", False, "CA rejected the request: failInfo badCertId", now=now)
    (env.config_dir / "sessions" / "e-broken.toml").write_text("entity = [\n")
    before = env.json("status")

    result = env.run("status")
    assert result.exit_code == 1, result.output  # e-broken's session file is broken
    lines = result.stdout.splitlines()
    assert lines[0].split()[:7] == ["SESSION", "URGENCY", "STATE", "AUTO", "DAYS", "LEFT",
                                    "NEXT"]
    rows = [line.split()[:2] for line in lines[1:-1]]
    assert rows == [["b-expired", "expired"], ["d-failing", "failing"],
                    ["e-broken", "failing"], ["c-due", "due"], ["a-ok", "ok"]]
    by_name = {line.split()[0]: line for line in lines[1:-1]}
    assert "EXPIRED" in by_name["b-expired"]
    assert "kur FAILED" in by_name["d-failing"] and "badCertId" in by_name["d-failing"]
    assert " 199 " in by_name["d-failing"] or " 200 " in by_name["d-failing"]
    assert "now" in by_name["c-due"]  # the next renewal is due already
    assert "broken session file" in by_name["e-broken"]
    assert lines[-1].startswith("1 expired, 2 failing, 1 due, 1 ok")
    # --json is unchanged: the sessions in file order, the broken file under errors
    data = env.json("status")
    assert data == before
    assert [e["session"] for e in data["sessions"]] == sorted(certs)
    assert set(data["sessions"][0]) == {
        "session", "auto_update", "state", "reason", "certificate", "next_renewal",
        "next_attempt", "failures", "journal_damaged", "last_result", "other_results",
        "charon", "ca"}
    assert data["errors"][0]["path"].endswith("e-broken.toml")


def test_status_says_standby_when_the_role_source_is_unreadable(env: Env) -> None:
    env.complete_session()
    role_file = env.root / "run" / "role"  # its directory does not exist
    (env.config_dir / "swcmp.toml").write_text(f'[ha]\nrole_file = "{role_file}"\n')
    text = env.run("status").stdout
    assert text.splitlines()[0] == (
        f"HA: the HA role file {role_file} is unreadable (No such file or directory): "
        "acting as standby to be safe (requests nothing)")
    assert "gw1" in text and "standby" in text
    entry = env.json("status", "gw1")["sessions"][0]
    assert entry["state"] == "standby" and "unreadable" in entry["reason"]
    role_file.parent.mkdir()
    role_file.write_text("BACKUP\n")
    entry = env.json("status", "gw1")["sessions"][0]
    assert entry["state"] == "standby" and "HA role is BACKUP" in entry["reason"]
    role_file.write_text("MASTER\n")
    entry = env.json("status", "gw1")["sessions"][0]
    assert entry["state"] != "standby"
    assert "HA role MASTER" in env.run("status").stdout


def test_request_initial_refuses_a_mac_secret_file_others_may_read(env: Env) -> None:
    env.complete_session()
    env.secret_file.chmod(0o644)
    before = env.snapshot()
    result = env.run("request", "initial", "gw1")
    assert result.exit_code == 1, result.output
    assert "others may read the secret" in result.stderr and "chmod 600" in result.stderr
    assert SECRET not in result.output
    # nothing sent, nothing stored (the state directory holds only locks and the result)
    assert {k: v for k, v in env.snapshot().items() if not k.startswith("var")} == before


def test_an_error_hint_names_the_session_in_the_command(env: Env) -> None:
    # the CMP library says which setting (server_url); the CLI names the session
    env.complete_session()
    env.run("session", "set", "gw1", "--server-url", "http://127.0.0.1:1/")
    result = env.run("request", "initial", "gw1")
    assert result.exit_code == 1, result.output
    assert "swcmp session set gw1 --server-url URL" in result.output, result.output
