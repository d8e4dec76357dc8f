"""Pinned mode (``local.certs = a.pem``) against real charon 5.9.8 daemons.

A's connection names its certificate file, so a renewal must re-send the
connection (load-conn built from swanctl.conf, like ``swanctl --load-conns``)
besides loading the new key and certificate. B tells us which certificate A
presented (tests/charon_net.py).

What charon 5.9.8 does, as these tests show:

* ``load-conn`` with a changed certificate *replaces* the connection (log:
  ``replaced vici connection``); IKE SAs established before keep running with
  the same SPIs on both ends: they hold a reference to the old config (and so
  the old certificate), which is why the old key stays loaded.
* Re-sending the unchanged connection (``swanctl --load-conns`` after our
  deploy) only ``updated`` it: our message equals swanctl's.
* A childless IKE SA cannot be re-authenticated in 5.9.8 (``unable to
  reauthenticate IKE_SA, no CHILD_SA to recreate``): charon deletes it and
  does not set up a new one. This sandbox's kernel has no XFRM (ESP), so
  CHILD_SAs, ``start_action = start`` re-initiation and the re-authentication
  of an old-config IKE SA with the old certificate cannot be exercised here.
* charon 6.0.1 (Debian 13's, with ESP in charon through kernel-libipsec so that
  IKE SAs can carry CHILD_SAs) closes the replaced connection's IKE SAs without
  CHILD_SA and keeps the others (the last test).

The integration tests need root and charon; they skip only when either is
missing. The unit tests at the top run anywhere.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from charon_net import CharonNet, CharonNode, TestPKI, available, pem_cert, pem_key, wait_for
from swcmp.checks import CheckResult
from swcmp.deploy import CredentialPair, DeployError, DeployUnavailable
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.strongswan import (
    PinnedDeployer,
    ViciDeployer,
    binding_check,
    choose_deployer,
    key_id_from_public_key,
    pinned_release_warning,
    unload_stale_keys,
)

_UNAVAILABLE = available()
charon_test = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


def _pair(node: CharonNode, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
          ca_pem: bytes) -> CredentialPair:
    return CredentialPair.of_files(
        session="gw-a",
        key_path=node.swanctl_dir / "private" / f"{node.label}.pem",
        cert_path=node.swanctl_dir / "x509" / f"{node.label}.pem",
        key_pem=pem_key(key),
        cert_pem=pem_cert(cert),
        ca_certs_pem=(ca_pem,),
    )


def _renew(net: CharonNet) -> tuple[CredentialPair, CredentialPair, x509.Certificate]:
    """Issue A a new key and certificate and rewrite its files in place (the engine's commit)."""
    previous = _pair(net.a, net.a_key, net.a_cert, net.pki.cert_pem)
    key, cert = net.pki.issue(net.a.identity)
    net.a.write_credentials(pem_key(key), pem_cert(cert), net.pki.cert_pem)
    return previous, _pair(net.a, key, cert, net.pki.cert_pem), cert


def _ids(*certs: x509.Certificate) -> set[str]:
    return {key_id_from_public_key(c.public_key()) for c in certs}


def _replaced(node: CharonNode) -> int:
    return node.log_text().count("replaced vici connection: gw\n")


def _list_conns(node: CharonNode) -> list[dict[str, Any]]:
    with node.session() as s:
        return [dict(item) for item in s.list_conns()]


# --------------------------------------------------------------------------- unit tests


def _offline_tree(tmp_path: Path, extra: str = "") -> tuple[Path, CredentialPair,
                                                            CredentialPair]:
    base = tmp_path / "swanctl"
    for sub in ("x509", "x509ca", "private"):
        (base / sub).mkdir(parents=True)
    pki = TestPKI()
    old_key, old_cert = pki.issue("a.swcmp.test")
    new_key, new_cert = pki.issue("a.swcmp.test")
    (base / "x509" / "a.pem").write_bytes(pem_cert(new_cert))
    (base / "swanctl.conf").write_text(textwrap.dedent("""\
        connections {
          gw {
            local { certs = a.pem }
            @EXTRA@
          }
          other { local { id = a.swcmp.test } }
        }
        """).replace("@EXTRA@", extra))

    def pair(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> CredentialPair:
        return CredentialPair.of_files("gw-a", base / "private" / "a.pem", base / "x509" / "a.pem",
                              pem_key(key), pem_cert(cert), (pki.cert_pem,))

    return base, pair(old_key, old_cert), pair(new_key, new_cert)


def test_dead_socket_is_unavailable_and_start_children_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, previous, new = _offline_tree(
        tmp_path, "children { net { start_action = trap|start } idle { } }")
    deployer = PinnedDeployer(f"unix://{tmp_path}/none.vici", swanctl_conf=base / "swanctl.conf")
    with caplog.at_level(logging.WARNING, logger="swcmp.strongswan"), \
            pytest.raises(DeployUnavailable, match="not reachable"):
        deployer.deploy(new, previous)
    warned = [r.getMessage() for r in caplog.records]
    assert any("gw/net has start_action = start" in m for m in warned), warned
    assert not any("idle" in m for m in warned)
    assert deployer.stale_keys == []


def test_connection_lost_midway_is_unavailable(tmp_path: Path) -> None:
    """A VICI peer that hangs up on the first command and then disappears (a crash)."""
    base, previous, new = _offline_tree(tmp_path)
    path = tmp_path / "dying.vici"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve_once() -> None:
        conn, _ = server.accept()
        conn.recv(4)
        # gone before the client sees the hang-up, so its reconnect cannot race into the
        # listen backlog of a closing server
        path.unlink()
        server.close()
        conn.close()

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    deployer = PinnedDeployer(f"unix://{path}", swanctl_conf=base / "swanctl.conf", timeout=5)
    with pytest.raises(DeployUnavailable, match="stopped answering"):
        deployer.deploy(new, previous)
    thread.join(5)


def test_nothing_pinned_or_file_out_of_step_changes_nothing(tmp_path: Path) -> None:
    base, previous, new = _offline_tree(tmp_path)
    uri = f"unix://{tmp_path}/none.vici"
    (base / "swanctl.conf").write_text("connections { gw { local { id = a } } }\n")
    with pytest.raises(DeployError, match=r"no connection .* pins") as info:
        PinnedDeployer(uri, swanctl_conf=base / "swanctl.conf").deploy(new, previous)
    assert not isinstance(info.value, DeployUnavailable)
    with pytest.raises(DeployError, match="no connection 'nope'"):
        PinnedDeployer(uri, swanctl_conf=base / "swanctl.conf",
                       connections=["nope"]).deploy(new, previous)
    base2, previous2, new2 = _offline_tree(tmp_path / "2")
    (base2 / "x509" / "a.pem").write_bytes(previous2.cert_pem)  # the engine did not commit
    with pytest.raises(DeployError, match="does not hold the certificate"):
        PinnedDeployer(uri, swanctl_conf=base2 / "swanctl.conf").deploy(new2, previous2)
    (base2 / "swanctl.conf").write_text("connections {\n gw {\n")
    with pytest.raises(DeployError, match=r"swanctl\.conf:2: .*not closed"):
        PinnedDeployer(uri, swanctl_conf=base2 / "swanctl.conf").deploy(new2, previous2)


def test_choose_deployer(tmp_path: Path) -> None:
    base, _, new = _offline_tree(tmp_path)
    uri = f"unix://{tmp_path}/none.vici"
    conf = base / "swanctl.conf"
    assert isinstance(choose_deployer(uri, new.cert_path, swanctl_conf=conf), PinnedDeployer)
    assert isinstance(choose_deployer(uri, new.cert_path, swanctl_conf=conf,
                                      connections=["other"]), ViciDeployer)
    assert isinstance(choose_deployer(uri, base / "x509" / "b.pem", swanctl_conf=conf),
                      ViciDeployer)
    assert isinstance(choose_deployer(uri, new.cert_path, swanctl_conf=tmp_path / "none"),
                      ViciDeployer)


# --------------------------------------------------------------------------- with charon


@pytest.fixture
def net(tmp_path: Path) -> Iterator[CharonNet]:
    """Two running charons; A's connection pins its certificate file (local.certs = a.pem)."""
    with CharonNet(tmp_path) as n:
        n.a.write_config(pinned=True)
        n.a.swanctl("--load-conns")
        print(f"charon logs: {n.a.log} {n.b.log}")  # shown when a test fails
        yield n


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_pinned_renewal(net: CharonNet) -> None:
    established = net.a.initiate()
    assert net.serial_b_saw_for_a() == net.a_cert.serial_number
    before_sas = {sa.uniqueid for sa in net.a.list_sas()}
    replaced = _replaced(net.a)
    previous, new, cert = _renew(net)

    # charon 5.9.8 keeps every IKE SA: session check does not warn about pinned mode
    assert pinned_release_warning(net.a.uri, pem_cert(net.a_cert)) is None
    assert _binding_check(net.a, net.a_cert, net.base / "check").level == "ok"
    deployer = PinnedDeployer(net.a.uri, swanctl_conf=net.a.swanctl_conf)
    result = deployer.deploy(new, previous)
    assert result.deployed and "re-sent connection(s) gw" in result.detail
    assert "without CHILD_SA" not in result.detail
    assert _replaced(net.a) == replaced + 1

    # (a) a new IKE SA authenticates A with the new certificate, as B sees it
    assert net.serial_b_saw_for_a() == cert.serial_number

    # (b) charon keeps the IKE SAs established with the old config: same SPIs, both ends
    after = {sa.uniqueid: sa for sa in net.a.list_sas()}
    assert before_sas <= set(after)
    assert after[established.uniqueid].spis == established.spis
    assert after[established.uniqueid].state == "ESTABLISHED"
    assert [sa.state for sa in net.b.list_sas() if sa.spis == established.spis] == [
        "ESTABLISHED"]

    # our load-conn equals swanctl's: re-loading the same files only "updates" the connection
    conns = _list_conns(net.a)
    net.a.swanctl("--load-conns")
    assert "updated vici connection: gw" in net.a.log_text()
    assert _replaced(net.a) == replaced + 1
    assert _list_conns(net.a) == conns

    # the old key stays loaded while old-config IKE SAs are up, then it can go
    assert net.a.key_ids() == _ids(net.a_cert, cert)
    [stale] = deployer.stale_keys
    assert stale.key_id == key_id_from_public_key(net.a_cert.public_key())
    assert stale.ike_sas == frozenset(before_sas)
    cleanup = unload_stale_keys(net.a.uri, deployer.stale_keys)
    assert cleanup.unloaded == () and len(cleanup.kept) == 1
    assert net.a.key_ids() == _ids(net.a_cert, cert)

    # a childless IKE SA is not re-authenticated by charon 5.9.8: reauth just deletes it
    with net.a.session() as s:
        for _ in s.rekey({"ike-id": str(established.uniqueid), "reauth": "yes"}):
            pass
    wait_for(lambda: established.uniqueid not in {sa.uniqueid for sa in net.a.list_sas()},
             5, "the re-authenticated IKE SA to go")
    for uid in before_sas - {established.uniqueid}:
        with net.a.session() as s:
            for _ in s.terminate({"ike-id": str(uid), "timeout": 5000}):
                pass
    assert not before_sas & {sa.uniqueid for sa in net.a.list_sas()}
    assert unload_stale_keys(net.a.uri, deployer.stale_keys, keep=[stale.key_id]).unloaded == ()
    cleanup = unload_stale_keys(net.a.uri, deployer.stale_keys)
    assert cleanup.unloaded == (stale.key_id,) and cleanup.kept == ()
    assert net.a.key_ids() == _ids(cert)
    assert net.serial_b_saw_for_a() == cert.serial_number


_BROKEN = """\
    connections {
      gw2 {
        version = not-a-number
        local { certs = a.pem }
      }
    }
    """


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_load_conn_failure_rolls_back(net: CharonNet) -> None:
    established = net.a.initiate()
    replaced = _replaced(net.a)
    previous, new, cert = _renew(net)
    # since the last load somebody broke a second connection that pins the same file
    (net.a.swanctl_dir / "conf.d" / "gw2.conf").write_text(textwrap.dedent(_BROKEN))
    deployer = PinnedDeployer(net.a.uri, swanctl_conf=net.a.swanctl_conf)
    with pytest.raises(DeployError) as info:
        deployer.deploy(new, previous)
    err = info.value
    assert not isinstance(err, DeployUnavailable)
    assert "load-conn gw2" in str(err) and "gw use the previous certificate again" in str(err)
    assert "BEGIN" not in str(err)
    assert _replaced(net.a) == replaced + 2  # the new certificate, then back to the old one
    # the old pair is live again: new key unloaded, gw authenticates with the old certificate
    assert net.a.key_ids() == _ids(net.a_cert)
    assert net.serial_b_saw_for_a() == net.a_cert.serial_number
    assert established.uniqueid in {sa.uniqueid for sa in net.a.list_sas()}
    assert deployer.stale_keys == []
    # once the broken connection is fixed, the same renewal goes through
    (net.a.swanctl_dir / "conf.d" / "gw2.conf").unlink()
    deployer.deploy(new, previous)
    assert net.serial_b_saw_for_a() == cert.serial_number


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_refused_key_changes_no_connection(net: CharonNet) -> None:
    replaced = _replaced(net.a)
    previous, good, _ = _renew(net)
    other = ec.generate_private_key(ec.SECP256R1())
    bad = CredentialPair.of_files(good.session, good.key.path, good.cert_path, pem_key(other),
                         good.cert_pem, good.ca_certs_pem)
    with pytest.raises(DeployError, match="does not match"):
        PinnedDeployer(net.a.uri, swanctl_conf=net.a.swanctl_conf).deploy(bad, previous)
    assert _replaced(net.a) == replaced
    assert net.a.key_ids() == _ids(net.a_cert)
    assert net.serial_b_saw_for_a() == net.a_cert.serial_number


# --------------------------------------------------------------------------- charon 6.0

def _binding_check(node: CharonNode, cert: x509.Certificate, base: Path) -> CheckResult:
    """``swcmp session check``'s strongswan item for a session with ``cert``."""
    paths = Paths(base / "etc", base / "var", base / "swanctl")
    paths.x509_dir.mkdir(parents=True)
    paths.cert_file("gw1").write_bytes(pem_cert(cert))
    return binding_check(node.uri)(Session(name="gw1", key="gw1"), paths, dt.datetime.now(dt.UTC))


def _session_set(node: CharonNode, cert: x509.Certificate, base: Path) -> str:
    """What ``swcmp session set`` says on stderr for a session whose certificate is ``cert``."""
    from click.testing import CliRunner

    from swcmp.cli import cli

    options = ["--config-dir", str(base / "etc"), "--state-dir", str(base / "var"),
               "--swanctl-dir", str(base / "swanctl"), "--vici", node.uri]
    runner = CliRunner()
    created = runner.invoke(cli, [*options, "session", "create", "gw1"], prog_name="swcmp")
    assert created.exit_code == 0, created.output
    (base / "swanctl" / "x509").mkdir(parents=True, exist_ok=True)
    (base / "swanctl" / "x509" / "gw1.crt").write_bytes(pem_cert(cert))
    result = runner.invoke(cli, [*options, "session", "set", "gw1", "--connection", "gw"],
                           prog_name="swcmp")
    assert result.exit_code == 0, result.output
    return result.stderr


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_charon_6_pinned_renewal_closes_only_ike_sas_without_child_sa(tmp_path: Path) -> None:
    """What strongSwan 6.0.1 does to a pinned connection's IKE SAs, and what swcmp says.

    charon 6.0 closes the IKE SAs of a replaced connection that have no CHILD_SA
    (``vici closing IKE_SA``, swcmp.strongswan.releases); 5.9.8 kept them (see
    test_pinned_renewal). An IKE SA with a CHILD_SA stays up with the old config. ESP
    runs in charon (kernel-libipsec): this kernel has no XFRM.
    """
    from debian_root import trixie

    with CharonNet(tmp_path, root=trixie(), userspace_esp=True) as net:
        print(f"charon logs: {net.a.log} {net.b.log}")
        assert "(strongSwan 6.0." in net.a.log_text()
        # kernel-libipsec: libcharon-extra-plugins, a dependency of strongswan-pki (TRIXIE_PEERS)
        assert "kernel-libipsec" in net.a.log_text()
        net.a.write_config(pinned=True)  # with child "net" (charon_net.ESP_SUBNETS)
        net.a.swanctl("--load-conns")
        childless = net.a.initiate()
        tunnel = net.a.initiate_child("net")
        assert childless.children == 0 and tunnel.children == 1

        # session check / session set's warning: this charon costs IKE SAs in pinned mode
        why = pinned_release_warning(net.a.uri, pem_cert(net.a_cert))
        assert why is not None and "charon 6.0.1" in why and "replaces gw" in why, why
        assert pinned_release_warning(net.b.uri, pem_cert(net.b_cert)) is None  # identity
        check = _binding_check(net.a, net.a_cert, tmp_path / "check-a")
        assert check.level == "warn" and "charon 6.0.1" in check.detail, check
        assert "identity mode" in check.fix, check
        assert _binding_check(net.b, net.b_cert, tmp_path / "check-b").level == "ok"
        said = _session_set(net.a, net.a_cert, tmp_path / "cli-a")
        assert "warning: charon 6.0.1 (strongSwan 6.0 or later)" in said, said
        assert "fix: use identity mode" in said, said
        assert "warning" not in _session_set(net.b, net.b_cert, tmp_path / "cli-b")

        previous, new, cert = _renew(net)
        deployer = PinnedDeployer(net.a.uri, swanctl_conf=net.a.swanctl_conf)
        result = deployer.deploy(new, previous)
        assert "re-sent connection(s) gw" in result.detail
        assert "closing 1 IKE SA(s) without CHILD_SA" in result.detail, result.detail
        assert "stays loaded for 1 IKE SA(s)" in result.detail, result.detail

        # charon closed the childless IKE SA, on both ends ...
        wait_for(lambda: childless.uniqueid not in {sa.uniqueid for sa in net.a.list_sas()},
                 10, "charon 6.0 to close the childless IKE SA")
        assert f"vici closing IKE_SA 'gw' #{childless.uniqueid}" in net.a.log_text()
        wait_for(lambda: childless.spis not in {sa.spis for sa in net.b.list_sas()}, 10,
                 "B to see the childless IKE SA go")
        # ... and kept the one with a CHILD_SA: same SPIs, both ends, its CHILD_SA up
        after = {sa.uniqueid: sa for sa in net.a.list_sas()}
        assert after[tunnel.uniqueid].spis == tunnel.spis
        assert after[tunnel.uniqueid].children == 1
        assert [(sa.state, sa.children) for sa in net.b.list_sas()
                if sa.spis == tunnel.spis] == [("ESTABLISHED", 1)]
        # the old key waits for that IKE SA only; new IKE SAs use the new certificate
        [stale] = deployer.stale_keys
        assert stale.ike_sas == frozenset({tunnel.uniqueid})
        assert net.a.key_ids() == _ids(net.a_cert, cert)
        assert net.serial_b_saw_for_a() == cert.serial_number

        # charon 6.0 does the same when the connection is loaded again unchanged, as
        # `swanctl --load-conns` does (docs/interop.md): not swcmp's doing
        again = net.a.initiate()
        updated = net.a.log_text().count("updated vici connection: gw\n")
        net.a.swanctl("--load-conns")
        assert net.a.log_text().count("updated vici connection: gw\n") == updated + 1
        wait_for(lambda: again.uniqueid not in {sa.uniqueid for sa in net.a.list_sas()}, 10,
                 "charon 6.0 to close the childless IKE SA on an unchanged reload")
        assert tunnel.uniqueid in {sa.uniqueid for sa in net.a.list_sas()}
