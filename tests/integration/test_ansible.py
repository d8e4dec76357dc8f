"""The swcmp.gateway Ansible collection (ansible/) driving a fleet of gateways.

Three gateways, each its own swcmp directories (config, state, swanctl) on this machine,
reached with connection local; swcmp's embedded test CA enrols them for real. The play
is the collection's own ansible/playbooks/fleet.yml (the one docs/fleet.md shows), run
with ansible-playbook from ansible-core as an operator would: first run enrols (changed),
second run changes nothing, check mode reports and changes nothing, a changed setting is
applied and shows in --diff, state absent deletes (and revokes when asked), and the MAC
secret appears in no module output and no play log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from swcmp.names import format_dn
from swcmp.testca import TestCA
from testca_site import MAC_REF, MAC_SECRET, ca_config, issued

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "ansible"
FLEET = COLLECTION / "playbooks" / "fleet.yml"
BIN = Path(sys.executable).parent
GATEWAYS = ("gw1", "gw2", "gw3")


@dataclass
class Run:
    rc: int
    log: str
    records: list[dict[str, Any]]
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return next(r["recap"] for r in self.records if "recap" in r)

    def results(self, host: str, action: str) -> list[dict[str, Any]]:
        """The results of the tasks of ``action`` that ran on ``host`` (not skipped)."""
        return [r["result"] for r in self.records if r.get("host") == host
                and r.get("action", "").endswith(action) and r["status"] != "skipped"]


@dataclass
class Fleet:
    root: Path
    ca: TestCA
    inventory: Path
    logs: list[str] = field(default_factory=list)
    timings: list[float] = field(default_factory=list)

    def dirs(self, gw: str) -> dict[str, Path]:
        base = self.root / gw
        return {"config": base / "etc", "state": base / "var", "swanctl": base / "swanctl"}

    def session_file(self, gw: str) -> Path:
        return self.dirs(gw)["config"] / "sessions" / f"{gw}.toml"

    def swcmp(self, gw: str, *args: str) -> Any:
        d = self.dirs(gw)
        res = subprocess.run(
            [str(BIN / "swcmp"), "--config-dir", str(d["config"]), "--state-dir", str(d["state"]),
             "--swanctl-dir", str(d["swanctl"]), "--vici", "none", "--json", *args],
            capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout)

    def play(self, playbook: Path, *args: str, limit: str | None = None) -> Run:
        record = self.root / f"record-{len(self.logs)}.jsonl"
        env = dict(os.environ,
                   ANSIBLE_COLLECTIONS_PATH=str(self.root / "collections"),
                   ANSIBLE_CALLBACK_PLUGINS=str(REPO / "tests" / "ansible_plugins"),
                   ANSIBLE_CALLBACKS_ENABLED="swcmp_record",
                   ANSIBLE_HOME=str(self.root / "ansible-home"),
                   ANSIBLE_LOCAL_TEMP=str(self.root / "ansible-tmp"),
                   ANSIBLE_REMOTE_TEMP=str(self.root / "ansible-tmp"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_FORKS="3", ANSIBLE_PIPELINING="1",
                   LC_ALL="C.UTF-8", SWCMP_ANSIBLE_RECORD=str(record))
        argv = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), "-v", *args,
                str(playbook)]
        if limit:
            argv += ["--limit", limit]
        start = time.monotonic()
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
        seconds = time.monotonic() - start
        log = res.stdout + res.stderr
        self.logs.append(log)
        self.logs.append(record.read_text() if record.exists() else "")
        self.timings.append(seconds)
        records = ([json.loads(line) for line in record.read_text().splitlines()]
                   if record.exists() else [])
        return Run(res.returncode, log, records, seconds)

    def write_play(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    ca = TestCA(root / "ca", config=ca_config(validity=timedelta(hours=1))).start()
    collections = root / "collections" / "ansible_collections" / "swcmp"
    collections.mkdir(parents=True)
    (collections / "gateway").symlink_to(COLLECTION)
    hosts = {}
    for gw in GATEWAYS:
        base = root / gw
        hosts[gw] = {"swcmp_config_dir": str(base / "etc"), "swcmp_state_dir": str(base / "var"),
                     "swcmp_swanctl_dir": str(base / "swanctl")}
    inventory = {"all": {"children": {"gateways": {"hosts": hosts, "vars": {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "swcmp_executable": str(BIN / "swcmp"),
        "swcmp_vici": "none",
        "swcmp_entity": "CN={{ inventory_hostname }}.example.net,O=Example",
        "swcmp_sans": ["DNS:{{ inventory_hostname }}.example.net"],
        "swcmp_ca_name": format_dn(ca.ca_cert.subject),
        "swcmp_server_url": ca.url,
        "swcmp_mac_ref": MAC_REF,
        "swcmp_mac_secret": MAC_SECRET,
        "swcmp_expire_time": "50%",
    }}}}}
    inv = root / "inventory.json"  # JSON is YAML
    inv.write_text(json.dumps(inventory))
    f = Fleet(root, ca, inv)
    try:
        yield f
    finally:
        ca.stop()
        print(f"ansible-playbook runs (s): {', '.join(f'{t:.1f}' for t in f.timings)}")


def _certs_issued(f: Fleet) -> int:
    return len(issued(f.root / "ca"))


#: A play's settings for the swcmp modules on the test's gateways, up to its tasks.
PLAY_DEFAULTS = """  gather_facts: false
  module_defaults:
    group/swcmp.gateway.swcmp:
      executable: "{{ swcmp_executable }}"
      config_dir: "{{ swcmp_config_dir }}"
      state_dir: "{{ swcmp_state_dir }}"
      swanctl_dir: "{{ swcmp_swanctl_dir }}"
      vici: none
  tasks:
"""

def test_check_mode_on_new_gateways_reports_and_writes_nothing(fleet: Fleet) -> None:
    run = fleet.play(FLEET, "--check")
    assert run.rc == 0, run.log
    for gw in GATEWAYS:
        declared, auto = run.results(gw, "swcmp_session")
        assert declared["changes"][0] == "created" and "server_url" in declared["changes"]
        assert auto["changes"] == ["created", "auto_update"]
        assert run.results(gw, "swcmp_request")[0]["changed"] is True
        assert not fleet.session_file(gw).exists()
    assert not (fleet.root / "ca" / "state.json").exists() or _certs_issued(fleet) == 0


def test_first_run_creates_enrols_and_enables_auto_update(fleet: Fleet) -> None:
    run = fleet.play(FLEET)
    assert run.rc == 0, run.log
    for gw in GATEWAYS:
        assert run.recap[gw]["changed"] >= 3, (gw, run.recap)
        assert run.recap[gw]["failures"] == 0
        status = fleet.swcmp(gw, "status", gw)["sessions"][0]
        assert status["auto_update"] is True
        assert status["certificate"]["subject"] == f"/O=Example/CN={gw}.example.net"
        # the module returned the status as facts and as its result
        last = run.results(gw, "swcmp_session")[-1]
        assert last["status"]["certificate"]["serial"] == status["certificate"]["serial"]
        assert last["ansible_facts"]["swcmp_status"][gw]["auto_update"] is True
        assert last["status"]["next_renewal"]
        enrol = run.results(gw, "swcmp_request")[0]
        assert enrol["changed"] and enrol["result"]["action"] == "ir"
    assert _certs_issued(fleet) == len(GATEWAYS)


def test_second_run_changes_nothing(fleet: Fleet) -> None:
    files = {gw: fleet.session_file(gw).read_bytes() for gw in GATEWAYS}
    run = fleet.play(FLEET)
    assert run.rc == 0, run.log
    assert {gw: run.recap[gw]["changed"] for gw in GATEWAYS} == dict.fromkeys(GATEWAYS, 0)
    assert _certs_issued(fleet) == len(GATEWAYS)
    assert {gw: fleet.session_file(gw).read_bytes() for gw in GATEWAYS} == files


def test_check_mode_reports_and_changes_nothing(fleet: Fleet) -> None:
    files = {gw: fleet.session_file(gw).read_bytes() for gw in GATEWAYS}
    run = fleet.play(FLEET, "--check", "-e", "swcmp_expire_time=20d")
    assert run.rc == 0, run.log
    for gw in GATEWAYS:
        declared = run.results(gw, "swcmp_session")[0]
        assert declared["changed"] is True
        assert declared["changes"] == ["expire_time"]
        assert fleet.swcmp(gw, "session", "show", gw)["expire_time"] == "50%"
    assert {gw: fleet.session_file(gw).read_bytes() for gw in GATEWAYS} == files
    assert _certs_issued(fleet) == len(GATEWAYS)


def test_changed_setting_is_applied_and_shown_in_diff(fleet: Fleet) -> None:
    run = fleet.play(FLEET, "--diff", "-e", "swcmp_expire_time=480h", limit="gw1")
    assert run.rc == 0, run.log
    assert run.recap["gw1"]["changed"] == 1
    assert "gw2" not in run.recap
    # 480h is stored as swcmp shows it: 20d; the diff shows the old and the new value
    assert fleet.swcmp("gw1", "session", "show", "gw1")["expire_time"] == "20d"
    assert fleet.swcmp("gw2", "session", "show", "gw2")["expire_time"] == "50%"
    assert '-    "expire_time": "50%"' in run.log
    assert '+    "expire_time": "20d"' in run.log


def test_role_installs_the_command_hook_unit_and_metrics_textfile(fleet: Fleet) -> None:
    """The role from source, into this test's own venv (already holding swcmp, so pip
    changes nothing), every file under the gateway's directory; systemd left alone."""
    base = fleet.root / "gw1"
    textfile = base / "metrics" / "swcmp.prom"
    play = fleet.write_play("role.yml", f"""
- hosts: gw1
  gather_facts: false
  roles:
    - role: swcmp.gateway.swcmp
      vars:
        swcmp_venv: {BIN.parent}
        swcmp_source: swcmp
        swcmp_system_packages: false
        swcmp_bin_link: {base}/bin/swcmp
        swcmp_systemd_dir: {base}/systemd
        swcmp_strongswan_dir: {base}/strongswan.d
        swcmp_service: false
        swcmp_config_dir: {base}/etc
        swcmp_metrics_textfile: {textfile}
""")
    (base / "bin").mkdir()
    (base / "systemd").mkdir()
    (base / "strongswan.d").mkdir()
    run = fleet.play(play)
    assert run.rc == 0, run.log
    assert run.recap["gw1"]["changed"] >= 5, run.recap
    link = base / "bin" / "swcmp"
    assert link.resolve() == (BIN / "swcmp").resolve()
    unit = (base / "systemd" / "swcmp.service").read_text()
    # the inventory's swcmp_vici (none: no charon in this test) reaches the unit and the hook
    assert f"ExecStart={link} --config-dir {base}/etc --vici none serve" in unit, unit
    rw = next(line for line in unit.splitlines() if line.startswith("ReadWritePaths="))
    assert rw.split()[-2:] == [f"{base}/etc", str(textfile.parent)], rw
    hook = (base / "strongswan.d" / "swcmp.conf").read_text()
    assert f"swcmp = {link} --config-dir {base}/etc --vici none hook charon-start" in hook, hook
    # swcmp, called through the link, writes its metrics where the role told it to
    d = fleet.dirs("gw1")
    res = subprocess.run([str(link), "--config-dir", str(d["config"]), "--state-dir",
                          str(d["state"]), "--swanctl-dir", str(d["swanctl"]), "--vici", "none",
                          "renew"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'swcmp_session_state{session="gw1",state="idle"} 1' in textfile.read_text()

    again = fleet.play(play)
    assert again.rc == 0 and again.recap["gw1"]["changed"] == 0, again.log


def test_request_revoke_and_absent_with_and_without_revoke(fleet: Fleet) -> None:
    serials = {gw: fleet.swcmp(gw, "status", gw)["sessions"][0]["certificate"]["serial"]
               for gw in GATEWAYS}
    play = fleet.write_play("absent.yml", """
- hosts: gateways
""" + PLAY_DEFAULTS + """    - name: gw3 leaves the fleet, its certificate revoked
      swcmp.gateway.swcmp_session: {name: gw3, state: absent, revoke: true}
      when: inventory_hostname == "gw3"
    - name: gw2 leaves the fleet, its certificate left valid
      swcmp.gateway.swcmp_session: {name: gw2, state: absent}
      when: inventory_hostname == "gw2"
    - name: gw1 revokes its certificate (key compromise) and keeps the session
      swcmp.gateway.swcmp_request: {name: gw1, request: revoke, reason: keyCompromise}
      when: inventory_hostname == "gw1"
    - name: gw1 gets a certificate profile
      swcmp.gateway.swcmp_session: {name: gw1, cert_profile: gateway, connections: [a, b]}
      when: inventory_hostname == "gw1"
    - name: and loses it again (an empty value is swcmp's default)
      swcmp.gateway.swcmp_session: {name: gw1, cert_profile: "", connections: []}
      when: inventory_hostname == "gw1"
""")
    run = fleet.play(play)
    assert run.rc == 0, run.log
    assert {gw: run.recap[gw]["changed"] for gw in GATEWAYS} == {"gw1": 3, "gw2": 1, "gw3": 1}
    set_, unset = run.results("gw1", "swcmp_session")
    assert set_["session"]["cert_profile"] == "gateway" and set_["session"]["connections"] == [
        "a", "b"]
    assert unset["changes"] == ["connections", "cert_profile"] and unset["changed"]
    shown = fleet.swcmp("gw1", "session", "show", "gw1")
    assert (shown["cert_profile"], shown["connections"]) == (None, [])
    assert not fleet.session_file("gw3").exists()
    assert not fleet.session_file("gw2").exists()
    assert fleet.session_file("gw1").exists()
    ca_view = issued(fleet.root / "ca")
    status = {gw: ca_view[int(serials[gw], 16)]["status"] for gw in GATEWAYS}
    assert status == {"gw1": "revoked", "gw2": "confirmed", "gw3": "revoked"}
    assert ca_view[int(serials["gw1"], 16)]["reason_code"] == 1  # keyCompromise
    assert "revoked" in run.results("gw3", "swcmp_session")[0]

    again = fleet.play(play)
    assert again.rc == 0, again.log
    assert {gw: again.recap[gw]["changed"] for gw in ("gw2", "gw3")} == {"gw2": 0, "gw3": 0}
    assert again.results("gw1", "swcmp_request")[0]["changed"] is False  # already revoked


def test_a_declaration_that_moves_a_setting_between_two_that_exclude_each_other(
        fleet: Fleet) -> None:
    """A profile label needs a server URL without a path. A play that moves a session from
    a profile label to a server URL with a path (the label emptied in the same task) is a
    consistent declaration: the module applies it (it unsets before it sets) instead of
    failing on the half-way state swcmp refuses; and back again."""
    host = fleet.ca.url.removesuffix("/pkix/")  # http://127.0.0.1:PORT
    play = fleet.write_play("labels.yml", f"""
- hosts: gw1
{PLAY_DEFAULTS}    - name: an RFC 9811 profile on the CA's host
      swcmp.gateway.swcmp_session: {{name: pl, server_url: "{host}", profile_label: gw}}
    - name: the CA moves to one path for everything
      swcmp.gateway.swcmp_session: {{name: pl, server_url: "{host}/pkix/", profile_label: ""}}
    - name: and back to the profile
      swcmp.gateway.swcmp_session: {{name: pl, server_url: "{host}", profile_label: gw}}
""")
    run = fleet.play(play)
    try:
        assert run.rc == 0, run.log
        _, moved, back = run.results("gw1", "swcmp_session")
        assert moved["changed"] and sorted(moved["changes"]) == ["profile_label", "server_url"]
        assert (moved["session"]["server_url"], moved["session"]["profile_label"]) == (
            f"{host}/pkix/", None)
        assert (back["session"]["server_url"], back["session"]["profile_label"]) == (host, "gw")
    finally:
        fleet.swcmp("gw1", "session", "delete", "pl")


def test_poll_limit_is_declared_as_session_set_takes_it(fleet: Fleet) -> None:
    """``poll_limit: 1d`` (the form `swcmp session set --poll-limit` takes) is applied;
    the same limit in seconds is no change, and 12h is."""
    play = fleet.write_play("poll_limit.yml", """
- hosts: gw1
""" + PLAY_DEFAULTS + """    - swcmp.gateway.swcmp_session: {name: pollt, poll_limit: 2d}
    - swcmp.gateway.swcmp_session: {name: pollt, poll_limit: 172800}
    - swcmp.gateway.swcmp_session: {name: pollt, poll_limit: 12h}
    - swcmp.gateway.swcmp_session: {name: pollt, poll_limit: ""}
""")
    run = fleet.play(play)
    try:
        assert run.rc == 0, run.log
        days, seconds, hours, back = run.results("gw1", "swcmp_session")
        assert days["changed"] and "poll_limit" in days["changes"], days
        assert days["session"]["poll_limit"] == 172800, days["session"]
        assert not seconds["changed"], seconds
        assert hours["changed"] and hours["session"]["poll_limit"] == 43200, hours
        assert back["changed"] and back["session"]["poll_limit"] == 86400, back  # default
        assert fleet.swcmp("gw1", "session", "show", "pollt")["poll_limit"] == 86400
    finally:
        fleet.swcmp("gw1", "session", "delete", "pollt")


def test_every_session_setting_is_a_module_option(fleet: Fleet) -> None:
    """The module's options cover what `swcmp session show --json` prints."""
    shown = set(fleet.swcmp("gw1", "session", "show", "gw1"))
    derived = {"name", "entity_wire", "ca_name_wire"}
    doc = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", "swcmp.gateway.swcmp_session"], capture_output=True,
        text=True, timeout=120, check=True,
        env=dict(os.environ, LC_ALL="C.UTF-8", ANSIBLE_HOME=str(fleet.root / "ansible-home"),
                 ANSIBLE_COLLECTIONS_PATH=str(fleet.root / "collections")))
    options = set(json.loads(doc.stdout)["swcmp.gateway.swcmp_session"]["doc"]["options"])
    assert shown - derived <= options, sorted(shown - derived - options)


def test_the_secret_is_in_no_output_and_no_log(fleet: Fleet) -> None:
    assert len(fleet.logs) >= 16  # every run's log and record
    # the secret file itself is in place, root's only
    secret = fleet.dirs("gw1")["config"] / "gw1.secret"
    assert secret.read_text().strip() == MAC_SECRET
    assert secret.stat().st_mode & 0o777 == 0o600
    leaked = [i for i, log in enumerate(fleet.logs) if MAC_SECRET in log]
    assert leaked == []


def test_the_fleet_page_shows_the_play_that_is_tested() -> None:
    play = FLEET.read_text().removeprefix("---\n").rstrip("\n")
    assert f"```yaml\n{play}\n```" in (REPO / "docs" / "fleet.md").read_text()
