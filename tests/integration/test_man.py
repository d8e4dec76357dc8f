"""The man page swcmp(8): up to date with the click tree, renders with man(1), and the package
installs it."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from swcmp.cli import iter_commands
from swcmp.service import HostConfig
from testpaths import REPO

ROOT = REPO
PAGE = ROOT / "man" / "swcmp.8"
TOML_PAGE = ROOT / "man" / "swcmp.toml.5"
MAN = shutil.which("man")


def gen_man() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_man", ROOT / "scripts" / "gen_man.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_man_page_is_up_to_date() -> None:
    assert PAGE.read_text() == gen_man().render(), (
        "man/swcmp.8 is out of date: run python3 scripts/gen_man.py")


def test_check_mode_notices_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "swcmp.8"
    stale.write_text(PAGE.read_text().replace("auto\\-update", "autoupdate"))
    module = gen_man()
    assert module.main(["--check", "--output", str(stale)]) == 1
    assert module.main(["--check", "--output", str(PAGE)]) == 0
    stale_toml = tmp_path / "swcmp.toml.5"
    stale_toml.write_text(TOML_PAGE.read_text().replace("role_file", "rolefile"))
    assert module.main(["--check", "--toml-output", str(stale_toml)]) == 1


def test_swcmp_toml_page_is_up_to_date() -> None:
    assert TOML_PAGE.read_text() == gen_man().render_toml(), (
        "man/swcmp.toml.5 is out of date: run python3 scripts/gen_man.py")


def test_swcmp_toml_page_documents_every_setting_of_the_example() -> None:
    """The settings contrib/swcmp.toml shows (commented out) are the page's, table by table."""
    shown: set[tuple[str, str]] = set()
    table = ""
    for line in (ROOT / "contrib" / "swcmp.toml").read_text().splitlines():
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            table = m.group(1)
        m = re.match(r"^# (\w+) = ", line)
        if m:
            shown.add((table, m.group(1)))
    assert shown == {(t, k) for t, k, _, _ in gen_man().HOST_SETTINGS}
    # and the settings swcmp reads are those (HostConfig.load)
    source = inspect.getsource(HostConfig.load)
    for _table, key in shown:
        assert f'"{key}"' in source, key


def test_pages_have_examples_and_files() -> None:
    page = PAGE.read_text()
    for section in (".SH FILES", ".SH EXAMPLES"):
        assert section in page, section
    examples = page.split(".SH EXAMPLES", 1)[1].split(".SH ", 1)[0].replace("\\-", "-")
    for command in ("swcmp session create gw1", "swcmp request initial gw1",
                    "swcmp request keyupdate gw1", "swcmp testca serve"):
        assert command in examples, command
    files = page.split(".SH FILES", 1)[1].split(".SH ", 1)[0].replace("\\-", "-")
    for path in ("/etc/swcmp/swcmp.toml", "/lib/systemd/system/swcmp.service",
                 "/etc/strongswan.d/swcmp.conf", "/opt/swcmp/", "/usr/share/swcmp/"):
        assert path in files, path
    assert ".SH EXAMPLE" in TOML_PAGE.read_text() and ".SH FILES" in TOML_PAGE.read_text()


def test_every_command_and_option_is_on_the_page() -> None:
    text = PAGE.read_text().replace("\\-", "-")
    for path, command in iter_commands():
        assert f'.SS "{" ".join(path)} ' in text or path == ("swcmp",), path
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and opt not in ("-h", "--help"):
                    assert opt in text, (path, opt)


@pytest.mark.skipif(MAN is None, reason="man is not installed (Debian man-db; scripts/test "
                    "installs it)")
def test_man_renders_the_page_without_warnings() -> None:
    assert MAN is not None
    res = subprocess.run([MAN, "--warnings", "-l", "-P", "cat", str(PAGE)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8"))
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr  # groff's warnings (bad requests, escapes) go here
    assert res.stdout.startswith("SWCMP(8)")
    toml = subprocess.run([MAN, "--warnings", "-l", "-P", "cat", str(TOML_PAGE)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8"))
    assert toml.returncode == 0 and toml.stderr == "", toml.stderr
    assert toml.stdout.startswith("SWCMP.TOML(5)") and "role_file = PATH" in toml.stdout
    for words in ("swcmp session enable-auto-update [OPTIONS] NAME", "EXIT STATUS",
                  "--pid-file FILE", "swcmp status [OPTIONS] [NAME]"):
        assert words in res.stdout, words


def test_systemd_unit_points_to_this_page() -> None:
    unit = (ROOT / "contrib" / "systemd" / "swcmp.service").read_text()
    assert "Documentation=man:swcmp(8)" in unit
    assert '.TH SWCMP 8 ' in PAGE.read_text()


@pytest.mark.integration
def test_the_wheel_installs_the_page(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = tmp_path.glob("swcmp-*.whl")
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("/data/share/man/man8/swcmp.8"))
        assert z.read(name).decode() == PAGE.read_text()
        metadata = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()  # SPDX form of project.license
