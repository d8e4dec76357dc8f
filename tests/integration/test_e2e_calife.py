"""End to end: the CA's own life under real IKE (issue 13, "Proof").

Two charon 5.9.8 daemons in network namespaces (tests/charon_net.py), the embedded
test CA in this process, and the real ``swcmp`` command line (see test_e2e_strongswan):

* a root rollover under ``swcmp serve`` while an IKE SA is up: the test CA rolls over
  (``swcmp testca rollover``), each gateway's ``serve`` takes the new root (genm
  rootCaCert) and loads both roots into its charon; the old IKE SA stays up; A renews
  from the new issuing key while B keeps its certificate of the old root, and a new
  IKE SA authenticates both (A's new-root certificate on B, B's old-root one on A);
* a revoked peer: B's certificate is revoked (``swcmp request revoke``); A still takes
  it until A fetches the CRL (``swcmp request crl``), which swcmp loads into A's charon;
  from then on A's charon refuses B.

Printed figures (``-s``; lines start with ``E2E-MEASURE``): the time from the CA's
rollover to both roots being loaded in both charons, and from the CRL fetch to the
first refused IKE SA.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from charon_net import CharonNode, wait_for
from swcmp.cli import cli
from test_e2e_strongswan import (  # noqa: F401  (e2e is a fixture)
    A_SESSION,
    B_SESSION,
    E2E,
    e2e,
    enroll_a,
    established,
)

pytestmark = [pytest.mark.integration, pytest.mark.root]


def ca_roots(node: CharonNode) -> set[bytes]:
    """The CA certificates in the node's charon (list-certs flag CA), as DER."""
    with node.session() as s:
        return {bytes(item["data"]) for item in s.list_certs({"type": "X509", "flag": "CA"})}


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def serve(gw: Any, log: Path) -> subprocess.Popen[str]:
    err = log.open("w")
    return subprocess.Popen(gw.argv("-v", "serve"), stdout=subprocess.DEVNULL, stderr=err,
                            text=True)


def stop(proc: subprocess.Popen[str], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(20)
    text = log.read_text()
    print(text)
    assert code == 0, text
    assert "Traceback" not in text and "ERROR" not in text, text
    return text


def test_root_rollover_under_serve_keeps_sas_and_both_roots_authenticate(
        e2e: E2E) -> None:  # noqa: F811  (the fixture)
    old_root = e2e.ca.ca_cert
    enroll_a(e2e)
    b_cert = e2e.b.cert()
    for gw, name in ((e2e.a, A_SESSION), (e2e.b, B_SESSION)):
        assert gw.json("session", "enable-auto-update", name)["auto_update"] is True
    e2e.net.a.initiate()
    before = established(e2e.net.a)
    assert before

    rolled = CliRunner().invoke(cli, ["testca", "rollover", "--dir", str(e2e.tmp / "ca")],
                                prog_name="swcmp")
    assert rolled.exit_code == 0, rolled.output
    t_roll = time.monotonic()
    new_root = x509.load_pem_x509_certificate((e2e.tmp / "ca" / "ca.crt").read_bytes())
    assert new_root.subject == old_root.subject and new_root != old_root

    logs = (e2e.tmp / "serve-a.log", e2e.tmp / "serve-b.log")
    procs = [serve(e2e.a, logs[0]), serve(e2e.b, logs[1])]
    try:
        both = {der(old_root), der(new_root)}
        for node in (e2e.net.a, e2e.net.b):
            wait_for(lambda n=node: both <= ca_roots(n), 40,  # type: ignore[misc]
                     f"serve to load both roots into {node.label}'s charon")
        loaded = time.monotonic() - t_roll
        # the weekly questions are answered; the CRL came along (nothing revoked)
        wait_for(lambda: (e2e.a.swanctl_dir / "x509crl" / f"{A_SESSION}.crl").exists(), 20,
                 "serve to store A's CRL")
    finally:
        texts = [stop(p, log) for p, log in zip(procs, logs, strict=True)]
    assert "root CA rollover: now trusting the new root" in texts[0], texts[0]
    print(f"E2E-MEASURE rollover: CA rolled over -> both roots loaded in both charons "
          f"(two serve processes starting): {loaded * 1000:.0f} ms")

    # the IKE SA established before the rollover is still up on both sides
    assert set(before) <= set(established(e2e.net.a))
    assert set(before) <= set(established(e2e.net.b))
    status = e2e.a.status()["ca"]
    assert status["rollover"]["state"] == "both roots trusted"
    assert {r["sha256"] for r in status["roots"]} >= {
        c.fingerprint(hashes.SHA256()).hex() for c in (old_root, new_root)}

    # A renews: the CA issues with its new key; B keeps its certificate of the old root
    e2e.a.json("renew", "--force", A_SESSION)
    a_cert = e2e.a.cert()
    a_cert.verify_directly_issued_by(new_root)
    b_cert.verify_directly_issued_by(old_root)
    assert e2e.b.cert() == b_cert
    # a new IKE SA: B verifies A's new-root certificate, A verifies B's old-root one
    assert e2e.net.serial_b_saw_for_a() == a_cert.serial_number
    assert set(before) <= set(established(e2e.net.a))
    # after a restart of A's charon the start hook loads both roots again
    e2e.use_hook()
    e2e.net.a.restart()
    wait_for(lambda: {der(old_root), der(new_root)} <= ca_roots(e2e.net.a), 15,
             "the start hook to load both roots")
    assert e2e.net.serial_b_saw_for_a() == a_cert.serial_number


def test_revoked_peer_is_refused_once_the_crl_is_loaded(
        e2e: E2E) -> None:  # noqa: F811  (the fixture)
    enroll_a(e2e)
    b_serial = e2e.b.serial()
    e2e.net.a.initiate()
    revoked = e2e.b.json("request", "revoke", B_SESSION, "--reason", "keyCompromise", "--yes")
    assert "keyCompromise" in revoked["message"], revoked
    # charon has no CRL yet (and B's certificate names no distribution point): still taken
    e2e.net.a.initiate()
    t0 = time.monotonic()
    got = e2e.a.json("request", "crl", A_SESSION)
    assert got["changed"] is True and "loaded 1 CRL" in (got["charon"] or ""), got
    crl = x509.load_der_x509_crl((e2e.a.swanctl_dir / "x509crl" / f"{A_SESSION}.crl")
                                 .read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(b_serial) is not None
    with pytest.raises(RuntimeError) as refused:
        e2e.net.a.initiate()
    took = time.monotonic() - t0
    log = e2e.net.a.log_text()
    assert "revoked" in log, log[-3000:]
    print(f"E2E-MEASURE crl: CRL fetched and loaded -> first refused IKE SA: "
          f"{took * 1000:.0f} ms ({str(refused.value).splitlines()[0]})")
    # the restart hook loads the stored CRL again: still refused
    e2e.use_hook()
    e2e.net.a.restart()
    wait_for(lambda: "executing start script 'swcmp'" in e2e.net.a.log_text(), 15, "the hook")
    time.sleep(0.5)
    with pytest.raises(RuntimeError):
        e2e.net.a.initiate()
