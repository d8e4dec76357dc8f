"""The role swcmp.gateway.swcmp renders swcmp's own contrib/ files: with the command at
/usr/bin/swcmp, the default directories and no metrics textfile, the unit and the
charon start hook are exactly contrib/systemd/swcmp.service and contrib/strongswan/swcmp.conf
(after the role's one header line), so a change to contrib/ that the role misses fails here."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import jinja2

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "ansible" / "roles" / "swcmp" / "templates"
DEFAULTS = {"swcmp_executable": "/usr/bin/swcmp", "swcmp_config_dir": "/etc/swcmp",
            "swcmp_vici": "", "swcmp_metrics_textfile": "", "swcmp_ha_role_file": "",
            "swcmp_ha_role_command": "", "swcmp_post_renew": [],
            "ansible_managed": "Ansible managed"}


def render(name: str, **values: Any) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["dirname"] = os.path.dirname
    env.filters["to_json"] = json.dumps
    return env.get_template(name).render(**(DEFAULTS | values))


def test_unit_and_hook_are_contrib_files() -> None:
    unit = render("swcmp.service.j2").split("\n", 1)[1]
    assert unit == (REPO / "contrib" / "systemd" / "swcmp.service").read_text()
    hook = render("strongswan-swcmp.conf.j2").split("\n", 1)[1]
    assert hook == (REPO / "contrib" / "strongswan" / "swcmp.conf").read_text()


def test_metrics_directory_is_writable_for_the_service() -> None:
    unit = render("swcmp.service.j2", swcmp_metrics_textfile="/var/lib/node/swcmp.prom",
                  swcmp_vici="unix:///run/charon.vici")
    assert "ExecStart=/usr/bin/swcmp --vici unix:///run/charon.vici serve" in unit
    rw = next(line for line in unit.splitlines() if line.startswith("ReadWritePaths="))
    assert rw.split()[-1] == "/var/lib/node"


def test_swcmp_toml_is_what_swcmp_reads() -> None:
    text = render("swcmp.toml.j2", swcmp_metrics_textfile="/var/lib/node/swcmp.prom",
                  swcmp_ha_role_file="/run/swcmp/role", swcmp_post_renew=["/bin/true", "x"])
    assert tomllib.loads(text) == {"ha": {"role_file": "/run/swcmp/role"},
                                   "hooks": {"post_renew": ["/bin/true", "x"]},
                                   "metrics": {"textfile": "/var/lib/node/swcmp.prom"}}
    assert tomllib.loads(render("swcmp.toml.j2")) == {}
