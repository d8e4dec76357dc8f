"""swcmp.strongswan against real charon 5.9.8 daemons (two network namespaces).

A and B authenticate each other with certificates from one test CA; A's
connection is in identity mode. A's certificate is renewed (new key, or the
same key re-certified) and pushed into A's charon with ViciDeployer; B tells us
which certificate A presented (see tests/charon_net.py for how).

The integration tests need root and charon; they skip only when either is
missing. The unit tests at the top run anywhere.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from charon_net import (
    CharonNet,
    CharonNode,
    TestPKI,
    available,
    pem_cert,
    pem_key,
    wait_for,
)
from swcmp.deploy import CredentialPair, DeployError, DeployUnavailable
from swcmp.errors import ConfigError
from swcmp.keystore.token import secrets_text
from swcmp.names import validate_session_name
from swcmp.strongswan import (
    ViciDeployer,
    key_id_from_cert_pem,
    key_id_from_public_key,
    key_id_from_spki,
    list_loaded_certs,
    load_current,
    vici_socket_path,
)

_UNAVAILABLE = available()
charon_test = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[CharonNet]:
    """Two running charons, credentials and connections loaded, no SA yet."""
    with CharonNet(tmp_path) as n:
        print(f"charon logs: {n.a.log} {n.b.log}")  # shown when a test fails
        yield n


def _pair(node: CharonNode, key_pem: bytes, cert: x509.Certificate, ca_pem: bytes
          ) -> CredentialPair:
    return CredentialPair.of_files(
        session="gw-a",
        key_path=node.swanctl_dir / "private" / f"{node.label}.pem",
        cert_path=node.swanctl_dir / "x509" / f"{node.label}.pem",
        key_pem=key_pem,
        cert_pem=pem_cert(cert),
        ca_certs_pem=(ca_pem,),
    )


def _current(net: CharonNet) -> CredentialPair:
    return _pair(net.a, pem_key(net.a_key), net.a_cert, net.pki.cert_pem)


def _renew(net: CharonNet, *, new_key: bool) -> tuple[CredentialPair, ec.EllipticCurvePrivateKey,
                                                      x509.Certificate]:
    """Issue A a new certificate and commit key and cert files, as the renewal engine does."""
    key, cert = net.pki.issue(net.a.identity, None if new_key else net.a_key)
    assert cert.serial_number != net.a_cert.serial_number
    net.a.write_credentials(pem_key(key), pem_cert(cert), net.pki.cert_pem)
    return _pair(net.a, pem_key(key), cert, net.pki.cert_pem), key, cert


def _cert_id(cert: x509.Certificate) -> str:
    return key_id_from_public_key(cert.public_key())


# --------------------------------------------------------------------------- unit tests


def test_key_id_is_sha1_of_subject_public_key() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ec_key = ec.generate_private_key(ec.SECP384R1()).public_key()
    ed_key = ed25519.Ed25519PrivateKey.generate().public_key()
    expected: list[tuple[PublicKeyTypes, bytes]] = [
        (rsa_key, rsa_key.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.PKCS1)),
        (ec_key, ec_key.public_bytes(serialization.Encoding.X962,
                                     serialization.PublicFormat.UncompressedPoint)),
        (ed_key, ed_key.public_bytes(serialization.Encoding.Raw,
                                     serialization.PublicFormat.Raw)),
    ]
    for key, raw in expected:
        assert key_id_from_public_key(key) == hashlib.sha1(raw).hexdigest()


def test_key_id_from_cert_matches_key() -> None:
    pki = TestPKI()
    key, cert = pki.issue("x.swcmp.test")
    assert key_id_from_cert_pem(pem_cert(cert)) == key_id_from_public_key(key.public_key())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert key_id_from_cert_pem(der) == key_id_from_public_key(key.public_key())


@pytest.mark.parametrize("bad", [b"", b"\x30\x03\x02\x01\x00", b"\x04\x02ab", b"\x30\x82\xff"])
def test_key_id_rejects_non_spki(bad: bytes) -> None:
    with pytest.raises(ValueError):
        key_id_from_spki(bad)


def test_vici_uri() -> None:
    assert vici_socket_path("unix:///var/run/charon.vici") == "/var/run/charon.vici"
    assert vici_socket_path("/tmp/x.vici") == "/tmp/x.vici"
    for bad in ("tcp://127.0.0.1:4502", "unix://relative", ""):
        with pytest.raises(ConfigError):
            ViciDeployer(bad)


def test_missing_socket_is_unavailable(tmp_path: Path) -> None:
    pki = TestPKI()
    key, cert = pki.issue("a.swcmp.test")
    pair = CredentialPair.of_files("s", tmp_path / "k", tmp_path / "c", pem_key(key),
                                   pem_cert(cert))
    with pytest.raises(DeployUnavailable) as info:
        ViciDeployer(f"unix://{tmp_path}/nothing.vici").deploy(pair, None)
    assert "not reachable" in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


# --------------------------------------------------------------------------- with charon


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_key_ids_match_charon(net: CharonNet) -> None:
    keys: list[PrivateKeyTypes] = [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ]
    with net.a.session() as s:
        for key in keys:
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            answer = s.request("load-key", {"type": "any", "data": pem})
            ours = key_id_from_public_key(key.public_key())
            assert answer["id"].decode() == ours
            # and charon finds the key by our id
            s.request("unload-key", {"id": ours})
    assert net.a.key_ids() == {_cert_id(net.a_cert)}


@charon_test
@pytest.mark.integration
@pytest.mark.root
@pytest.mark.parametrize("new_key", [True, False], ids=["new-key", "same-key"])
def test_renewal_hot_swap(net: CharonNet, new_key: bool) -> None:
    old_serial = net.a_cert.serial_number
    established = net.a.initiate()
    established_on_b = [sa for sa in net.b.list_sas() if sa.spis == established.spis]
    assert len(established_on_b) == 1
    assert net.serial_b_saw_for_a() == old_serial

    previous = _current(net)
    new, key, cert = _renew(net, new_key=new_key)
    result = ViciDeployer(net.a.uri).deploy(new, previous)
    assert result.deployed, result.detail
    new_id = key_id_from_public_key(key.public_key())
    assert (new_id != _cert_id(net.a_cert)) is new_key

    # (a) the IKE SA established before the swap is untouched, on both ends
    after = {sa.uniqueid: sa for sa in net.a.list_sas()}
    assert established.uniqueid in after
    assert after[established.uniqueid].spis == established.spis
    assert after[established.uniqueid].state == "ESTABLISHED"
    assert [sa.state for sa in net.b.list_sas() if sa.spis == established.spis] == [
        "ESTABLISHED"]

    # (b) a new IKE SA authenticates A with the new certificate, as B sees it
    assert net.serial_b_saw_for_a() == cert.serial_number

    # (c) charon holds exactly the new key; the new cert has it, the old one not (new key)
    assert net.a.key_ids() == {new_id}
    loaded = {c.serial: c for c in list_loaded_certs(net.a.uri)}
    assert loaded[cert.serial_number].has_privkey
    assert loaded[old_serial].has_privkey is (not new_key)

    # (d) after a charon restart the start hook's load_current restores the new pair
    net.a.restart()
    assert net.a.key_ids() == set()
    with pytest.raises(RuntimeError):
        net.a.initiate()  # no credentials yet: A cannot authenticate
    result = load_current(net.a.uri, [new])
    assert result.deployed
    assert net.a.key_ids() == {new_id}
    assert net.serial_b_saw_for_a() == cert.serial_number


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_deploy_to_stopped_charon_is_unavailable(net: CharonNet) -> None:
    previous = _current(net)
    new, _, _ = _renew(net, new_key=True)
    net.a.kill()  # the socket file stays behind, nobody listens
    assert net.a.vici_path.exists()
    with pytest.raises(DeployUnavailable) as info:
        ViciDeployer(net.a.uri).deploy(new, previous)
    assert str(net.a.vici_path) in str(info.value)
    # charon starts again: the hook loads the committed files
    net.a.restart()
    load_current(net.a.uri, [new])
    assert net.serial_b_saw_for_a() == x509.load_pem_x509_certificate(new.cert_pem).serial_number


# A stand-in for `swcmp hook charon-start` (not written yet): load the pair in
# swanctl's directory with load_current, as charon's start-scripts run it.
_HOOK = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from swcmp.deploy import CredentialPair
    from swcmp.strongswan import load_current
    uri, base = sys.argv[1], Path(sys.argv[2])
    key, cert = base / "private" / "a.pem", base / "x509" / "a.pem"
    pair = CredentialPair.of_files("gw-a", key, cert, key.read_bytes(), cert.read_bytes(),
                          ((base / "x509ca" / "ca.pem").read_bytes(),))
    print(load_current(uri, [pair]).detail)
    """)


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_start_script_loads_pair_renewed_while_charon_was_down(
    net: CharonNet, tmp_path: Path
) -> None:
    established = net.a.initiate()
    previous = _current(net)
    new, key, cert = _renew(net, new_key=True)
    net.a.stop()
    with pytest.raises(DeployUnavailable):
        ViciDeployer(net.a.uri).deploy(new, previous)
    hook = tmp_path / "hook.py"
    hook.write_text(_HOOK)
    net.a.start_scripts["swcmp"] = f"{sys.executable} {hook} {net.a.uri} {net.a.swanctl_dir}"
    net.a.write_config()
    net.a.restart()  # connections only: the credentials come from the start script
    new_id = key_id_from_public_key(key.public_key())
    wait_for(lambda: net.a.key_ids() == {new_id}, 10, "the start script to load the new key")
    assert "executing start script 'swcmp'" in net.a.log_text()
    assert established.uniqueid not in {sa.uniqueid for sa in net.a.list_sas()}
    assert net.serial_b_saw_for_a() == cert.serial_number


def _assert_old_pair_live(net: CharonNet, new_cert: x509.Certificate) -> None:
    assert net.a.key_ids() == {_cert_id(net.a_cert)}
    assert net.serial_b_saw_for_a() == net.a_cert.serial_number
    assert net.serial_b_saw_for_a() != new_cert.serial_number


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_refused_key_keeps_old_pair(net: CharonNet) -> None:
    established = net.a.initiate()
    previous = _current(net)
    good, _, cert = _renew(net, new_key=True)
    garbage = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    new = _pair(net.a, garbage, cert, net.pki.cert_pem)
    with pytest.raises(DeployError) as info:
        ViciDeployer(net.a.uri).deploy(new, previous)
    assert not isinstance(info.value, DeployUnavailable)
    message = str(info.value)
    assert "load-key" in message and "previous pair" in message
    assert "bm90IGEga2V5" not in message and "BEGIN" not in message
    assert cert.serial_number not in {c.serial for c in list_loaded_certs(net.a.uri)}
    _assert_old_pair_live(net, cert)
    assert established.uniqueid in {sa.uniqueid for sa in net.a.list_sas()}
    # the same renewal with the right key then goes through
    ViciDeployer(net.a.uri).deploy(good, previous)
    assert net.serial_b_saw_for_a() == cert.serial_number


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_key_not_matching_cert_keeps_old_pair(net: CharonNet) -> None:
    previous = _current(net)
    _, _, cert = _renew(net, new_key=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    new = _pair(net.a, pem_key(other_key), cert, net.pki.cert_pem)
    with pytest.raises(DeployError, match="does not match"):
        ViciDeployer(net.a.uri).deploy(new, previous)
    _assert_old_pair_live(net, cert)


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_failure_after_new_pair_loaded_rolls_back(net: CharonNet) -> None:
    previous = _current(net)
    good, key, cert = _renew(net, new_key=True)
    # charon takes the new key and cert, then refuses the CA certificate
    new = CredentialPair.of_files(good.session, good.key.path, good.cert_path, good.key.pem,
                         good.cert_pem, (b"-----BEGIN CERTIFICATE-----\nAAAA\n"
                                         b"-----END CERTIFICATE-----\n",))
    with pytest.raises(DeployError, match="load-cert"):
        ViciDeployer(net.a.uri).deploy(new, previous)
    loaded = {c.serial: c for c in list_loaded_certs(net.a.uri)}
    assert not loaded[cert.serial_number].has_privkey  # still loaded, but unusable
    assert loaded[net.a_cert.serial_number].has_privkey
    assert key_id_from_public_key(key.public_key()) not in net.a.key_ids()
    _assert_old_pair_live(net, cert)


def test_connection_lost_midway_is_unavailable(tmp_path: Path) -> None:
    """A VICI peer that hangs up on the first command and then disappears (a crash)."""
    path = tmp_path / "dying.vici"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve_once() -> None:
        conn, _ = server.accept()
        conn.recv(4)  # the start of the first request
        # Gone before hanging up: a deployer that reconnects to restore must find
        # no socket at all, not a listener about to close (that would race).
        path.unlink()
        server.close()
        conn.close()

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    pki = TestPKI()
    key, cert = pki.issue("a.swcmp.test")
    pair = CredentialPair.of_files("s", tmp_path / "k", tmp_path / "c", pem_key(key),
                                   pem_cert(cert))
    with pytest.raises(DeployUnavailable, match="stopped answering"):
        ViciDeployer(f"unix://{path}", timeout=5).deploy(pair, None)
    thread.join(5)


@charon_test
@pytest.mark.integration
@pytest.mark.root
def test_first_enrolment_without_previous_pair(net: CharonNet) -> None:
    net.a.restart()  # charon without any credentials, as before the first enrolment
    assert net.a.key_ids() == set()
    new, key, cert = _renew(net, new_key=True)
    result = ViciDeployer(net.a.uri).deploy(new, None)
    assert result.deployed and f"{cert.serial_number:#x}" in result.detail
    assert net.a.key_ids() == {key_id_from_public_key(key.public_key())}
    assert net.serial_b_saw_for_a() == cert.serial_number


@charon_test
@pytest.mark.parametrize("session_name", ["gw1.example.net", "gw_1", "a.b_c-d", "gw1"])
def test_every_session_name_gives_a_secrets_entry_swanctl_loads(net: CharonNet,
                                                                 session_name: str) -> None:
    # a token session's secrets entry in conf.d: with the name as it is, a '.' made
    # `swanctl --load-all` stop at a syntax error and load no connection at all
    validate_session_name(session_name)  # a name swcmp accepts
    node = net.a
    conf_d = node.swanctl_dir / "conf.d"
    (conf_d / f"swcmp-{session_name}.conf").write_text(
        secrets_text(session_name, "0123456789abcdef", "1234"))
    with node.session() as s:
        for conn in list(s.get_conns()["conns"]):
            s.unload_conn({"name": conn})
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"),
           "STRONGSWAN_CONF": str(node.conf), "SWANCTL_DIR": str(node.swanctl_dir)}
    proc = subprocess.run(["swanctl", "--load-all", "--noprompt", "--uri", node.uri,
                           "--file", str(node.swanctl_conf)], capture_output=True, text=True,
                          env=env, timeout=30, check=False)
    out = proc.stdout + proc.stderr
    assert "syntax error" not in out and "parsing" not in out.lower(), out
    # the connections were loaded (the token itself is absent: its key fails to load)
    with node.session() as s:
        assert "gw" in [c.decode() if isinstance(c, bytes) else c
                        for c in s.get_conns()["conns"]], out
