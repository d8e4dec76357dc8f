"""Active/standby with real keepalived: the backup never asks the CA, the new master renews.

Two network namespaces joined by a veth pair share the VRRP address 10.252.0.100;
each runs Debian's keepalived (VRRP only, unicast adverts) whose notify command is
``contrib/keepalived-notify.sh -f ROLE -p PIDFILE``: it writes the node's role and wakes
that node's ``swcmp serve --pid-file PIDFILE`` with SIGHUP. Both serve processes run on
the host (the role file is their only link to keepalived) against the embedded test CA
on loopback, which counts the requests of each subject: node A is gw-a.example.net,
node B gw-b.example.net, and both sessions are due from the start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest
from prometheus_client.parser import text_string_to_metric_families

from charon_net import NS_PREFIX, cleanup_stale_namespaces
from testca_site import CAHolder, Site, add_session, ca_config, make_site, swcmp_cmd, swcmp_json
from testpaths import REPO

KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
NOTIFY = REPO / "contrib" / "keepalived-notify.sh"
VIP = "10.252.0.100"
#: serve's own rescan interval (service.RESCAN): a renewal sooner than this after the
#: failover was started by the notify script's SIGHUP, i.e. within one wake-up.
RESCAN = 30.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not Path(KEEPALIVED).exists(),
                       reason="keepalived is not installed (scripts/test installs it)"),
]


def _run(*args: str) -> None:
    res = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {res.stderr.strip()}")


def wait_until(cond: Callable[[], bool], timeout: float, what: str,
               log: Callable[[], str] = lambda: "") -> float:
    """Poll ``cond`` every 50 ms; return time.monotonic() when it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout}s\n{log()}")


@dataclass
class Node:
    label: str
    netns: str
    address: str
    peer: str
    priority: int
    dir: Path
    site: Site
    keepalived: subprocess.Popen[bytes] | None = None
    serve: subprocess.Popen[bytes] | None = None
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def role_file(self) -> Path:
        return self.dir / "run" / "role"

    @property
    def pid_file(self) -> Path:
        return self.dir / "run" / "serve.pid"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics" / "swcmp.prom"

    @property
    def session(self) -> str:
        return f"gw-{self.label}"

    @property
    def subject(self) -> str:
        return f"CN=gw-{self.label}.example.net"

    def role(self) -> str:
        try:
            return self.role_file.read_text().strip()
        except OSError:
            return ""

    def serve_log(self) -> str:
        p = self.dir / "serve.log"
        return p.read_text() if p.exists() else ""

    def keepalived_log(self) -> str:
        p = self.dir / "keepalived.log"
        return p.read_text() if p.exists() else ""

    def write_keepalived_conf(self) -> Path:
        conf = self.dir / "keepalived.conf"
        notify = f"{NOTIFY} -f {self.role_file} -p {self.pid_file}"
        conf.write_text(f"""global_defs {{
    router_id swcmp_{self.label}
    script_user root
}}
vrrp_instance swcmp {{
    state BACKUP
    interface swcmpha0
    virtual_router_id 52
    priority {self.priority}
    advert_int 1
    unicast_src_ip {self.address}
    unicast_peer {{
        {self.peer}
    }}
    virtual_ipaddress {{
        {VIP}/24
    }}
    notify "{notify}"
}}
""")
        return conf

    def start_keepalived(self) -> None:
        log = (self.dir / "keepalived.log").open("wb")
        self.logs.append(log)
        self.keepalived = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, KEEPALIVED, "--dont-fork", "--log-console",
             "--log-detail", "--vrrp", "--no-syslog", "-f", str(self.write_keepalived_conf()),
             "-p", str(self.dir / "keepalived.pid"), "-r", str(self.dir / "vrrp.pid")],
            stdout=log, stderr=subprocess.STDOUT)

    def start_serve(self) -> None:
        log = (self.dir / "serve.log").open("wb")
        self.logs.append(log)
        self.serve = subprocess.Popen(
            swcmp_cmd(self.site, "serve", "--pid-file", str(self.pid_file)),
            stdout=subprocess.DEVNULL, stderr=log)
        wait_until(lambda: "swcmp serve: watching" in self.serve_log() and
                   self.pid_file.exists(), 30, f"serve {self.label} start-up", self.serve_log)

    def has_vip(self) -> bool:
        res = subprocess.run(["ip", "-n", self.netns, "-o", "addr", "show", "dev", "swcmpha0"],
                             capture_output=True, text=True, timeout=10, check=False)
        return f" {VIP}/" in res.stdout

    def stop(self) -> None:
        for proc in (self.serve, self.keepalived):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in self.logs:
            log.close()


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[tuple[CAHolder, Node, Node]]:
    cleanup_stale_namespaces()
    prefix = f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    # Five-minute certificates with expire_time 10m: due from the moment they are issued.
    ca = CAHolder(tmp_path / "ca", ca_config(validity=timedelta(minutes=5)))
    nodes: list[Node] = []
    made: list[str] = []
    try:
        for label, address, peer, prio in (("a", "10.252.0.1", "10.252.0.2", 150),
                                           ("b", "10.252.0.2", "10.252.0.1", 100)):
            d = tmp_path / label
            site = make_site(d / "gw")
            add_session(site, ca.ca, f"gw-{label}", expire_time="10m")
            nodes.append(Node(label, f"{prefix}-{label}", address, peer, prio, d, site))
            (site.paths.config_dir / "swcmp.toml").write_text(
                f'[ha]\nrole_file = "{d / "run" / "role"}"\n'
                f'[metrics]\ntextfile = "{d / "metrics" / "swcmp.prom"}"\n')
        # Renewed certificates live a day: not due again during the test. A restarted CA
        # also starts counting requests from zero, so the enrolments are not counted.
        ca.restart(ca_config(validity=timedelta(days=1)))
        for n in nodes:
            _run("ip", "netns", "add", n.netns)
            made.append(n.netns)
            _run("ip", "-n", n.netns, "link", "set", "lo", "up")
        a, b = nodes
        _run("ip", "link", "add", "swcmpha0", "netns", a.netns, "type", "veth",
             "peer", "name", "swcmpha0", "netns", b.netns)
        for n in nodes:
            _run("ip", "-n", n.netns, "addr", "add", f"{n.address}/24", "dev", "swcmpha0")
            _run("ip", "-n", n.netns, "link", "set", "swcmpha0", "up")
        yield ca, a, b
    finally:
        for n in nodes:
            with suppress(Exception):
                n.stop()
        for netns in made:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        ca.stop()


def metric(node: Node, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(node.metrics.read_text()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_backup_sends_nothing_and_new_master_renews_after_failover(
        ha: tuple[CAHolder, Node, Node]) -> None:
    ca, a, b = ha
    old_a, old_b = a.site.cert(a.session), b.site.cert(b.session)
    for n in (a, b):
        n.start_keepalived()
    wait_until(lambda: a.role() == "MASTER" and b.role() == "BACKUP", 30,
               "VRRP roles MASTER/BACKUP", lambda: a.keepalived_log() + b.keepalived_log())
    assert a.has_vip() and not b.has_vip()

    for n in (a, b):
        n.start_serve()
    # The master renews its due session; the backup reports standby and asks nothing.
    wait_until(lambda: a.site.cert(a.session).serial_number != old_a.serial_number, 60,
               "renewal on the master", a.serve_log)
    wait_until(lambda: "skipped: standby (this node's HA role is BACKUP)" in b.serve_log(),
               30, "standby on the backup", b.serve_log)
    assert ca.ca.request_counts(a.subject).get("kur") == 1
    assert ca.ca.request_counts(b.subject) == {}
    assert b.site.cert(b.session).serial_number == old_b.serial_number
    status = swcmp_json(b.site, "status", b.session)["sessions"][0]
    assert status["state"] == "standby" and "BACKUP" in status["reason"]
    wait_until(lambda: metric(b, "swcmp_ha_standby") == 1, 10, "standby in B's metrics")
    assert metric(b, "swcmp_ha_role_info", role="BACKUP") == 1
    assert metric(a, "swcmp_ha_standby") == 0
    # a while later (keepalived adverts every second, serve keeps running): still nothing
    time.sleep(3)
    assert ca.ca.request_counts(b.subject) == {}

    # Failover: keepalived stops on A (STOP), B takes the address and becomes MASTER.
    assert a.keepalived is not None
    a.keepalived.send_signal(signal.SIGTERM)
    a.keepalived.wait(15)
    became_master = wait_until(lambda: b.role() == "MASTER", 30, "failover to B",
                               b.keepalived_log)
    renewed = wait_until(lambda: b.site.cert(b.session).serial_number != old_b.serial_number,
                         RESCAN, "renewal on the new master", b.serve_log)
    assert b.has_vip() and a.role() == "STOP"
    print(f"HA-MEASURE: new master renewed {renewed - became_master:.2f}s after its role "
          "file said MASTER")
    # one wake-up: serve was asleep (nothing due), the notify script's SIGHUP woke it
    assert renewed - became_master < RESCAN / 2
    assert "SIGHUP: re-reading the sessions" in b.serve_log()
    assert ca.ca.request_counts(b.subject).get("kur") == 1
    assert b.site.pair_ok(b.session)
    kur_a = ca.ca.request_counts(a.subject)
    wait_until(lambda: metric(b, "swcmp_ha_standby") == 0, 10, "B active in its metrics")

    # A role source that cannot be read is standby, and says so.
    os.unlink(b.role_file)
    os.kill(int(b.pid_file.read_text()), signal.SIGHUP)
    wait_until(lambda: metric(b, "swcmp_ha_role_source_ok") == 0, 10,
               "the unreadable role file in B's metrics", b.serve_log)
    assert metric(b, "swcmp_ha_standby") == 1
    status = swcmp_json(b.site, "status", b.session)["sessions"][0]
    assert status["state"] == "standby" and "unreadable" in status["reason"]
    assert ca.ca.request_counts(a.subject) == kur_a  # the stopped node asked nothing more
