"""The contrib files run the swcmp that an install puts in place: /usr/bin/swcmp, where the
Debian package links it (a pipx or venv install links it there too, as the README says)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testpaths import REPO

CONTRIB = REPO / "contrib"
#: Every contrib file that starts swcmp, and how many times it does.
RUNNERS = {
    "systemd/swcmp.service": 1,
    "systemd/swcmp-renew.service": 1,
    "strongswan/swcmp.conf": 1,
    "cron/swcmp": 1,
}
SWCMP_PATH = re.compile(r"(/[\w./-]*/)swcmp(?=\s)")


def commands(path: Path) -> list[str]:
    """The swcmp program paths in a file's non-comment lines."""
    found: list[str] = []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        found += [m.group(0) for m in SWCMP_PATH.finditer(line)
                  if "/etc/" not in m.group(1) and "/var/" not in m.group(1)]
    return found


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_contrib_file_runs_usr_bin_swcmp(name: str) -> None:
    found = commands(CONTRIB / name)
    assert len([c for c in found if c.startswith(("/usr/bin/swcmp", "/opt/"))]) >= RUNNERS[name]
    assert set(found) == {"/usr/bin/swcmp"}, found


def test_units_start_swcmp_by_its_installed_path() -> None:
    for unit in (CONTRIB / "systemd").glob("*.service"):
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=", "ExecStop=")):
                assert line.split("=", 1)[1].split()[0] in ("/usr/bin/swcmp", "/bin/kill"), line


def test_cron_runs_only_where_systemd_does_not() -> None:
    (line,) = [x for x in (CONTRIB / "cron" / "swcmp").read_text().splitlines()
               if x.strip() and not x.startswith("#")]
    assert "test ! -d /run/systemd/system" in line
    assert line.index("test ! -d /run/systemd/system") < line.index("/usr/bin/swcmp renew")
