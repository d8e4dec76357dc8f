"""The charon port (ViciCharon: deployers, start hook, CA certificates and CRLs, key
queries, stale keys) against a scripted charon over a socketpair.

The real-charon tests (test_strongswan_integration.py, test_strongswan_pinned.py)
prove the swap against charon itself; these pin down the failure paths that a real
charon does not produce on request: a command refused at each step, the
connection dropped at each step. After every failure the previous pair must be
the one charon can use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki import TestPKI, make_pki, pem_cert, pem_key
from scripted_charon import ScriptedCharon
from swcmp.deploy import Charon, CredentialPair, DeployError, DeployUnavailable
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.strongswan import ViciCharon, load_stale_keys, stale_keys_file
from swcmp.strongswan.vici import key_id_from_cert_pem

URI = "unix:///nonexistent/charon.vici"  # never opened: every socket comes from connect=


SESSION = Session(name="gw-a")


def _paths(base: Path) -> Paths:
    return Paths(base / "etc", base / "var", base / "swanctl")


def _port(charon: ScriptedCharon, base: Path) -> Charon:
    """What the renewal, the service and the start hook are handed: the port, here
    talking to the scripted charon."""
    return ViciCharon(URI, _paths(base), connect=charon.connect)


def _pair(pki: TestPKI, base: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
          session: str = "gw-a") -> CredentialPair:
    paths = _paths(base)
    return CredentialPair.of_files(session, paths.key_file(session), paths.cert_file(session),
                          pem_key(key), pem_cert(cert), (pem_cert(pki.root),))


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[TestPKI, CredentialPair, CredentialPair]:
    pki = make_pki(tmp_path / "pki")
    old_key, new_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    old = _pair(pki, tmp_path, old_key, pki.issue(old_key, serial=1))
    new = _pair(pki, tmp_path, new_key, pki.issue(new_key, serial=2))
    return pki, old, new


def _live(charon: ScriptedCharon, old: CredentialPair) -> None:
    """charon as the previous deployment left it: the old pair loaded."""
    charon._answer("load-key", {"data": old.key.pem})
    charon._answer("load-cert", {"data": old.cert_pem, "flag": b"NONE"})


def _usable(charon: ScriptedCharon, pair: CredentialPair) -> bool:
    return key_id_from_cert_pem(pair.cert_pem) in charon.keys


def test_identity_swap_loads_new_and_unloads_old(pairs: tuple, tmp_path: Path) -> None:
    _, old, new = pairs
    charon = ScriptedCharon()
    _live(charon, old)
    result = _port(charon, tmp_path).deploy(SESSION, new, old)
    assert _usable(charon, new) and not _usable(charon, old)
    assert "old key" in result.detail and "unloaded" in result.detail
    assert charon.log == ["get-keys", "load-key", "load-cert", "load-cert", "list-certs",
                          "get-keys", "unload-key", "flush-certs"]


@pytest.mark.parametrize("step", ["load-cert", "list-certs", "unload-key", "flush-certs"])
def test_identity_refusal_at_each_step_restores_the_previous_pair(
        pairs: tuple, tmp_path: Path, step: str) -> None:
    _, old, new = pairs
    charon = ScriptedCharon(refuse={step: "no thanks"})
    _live(charon, old)
    with pytest.raises(DeployError) as info:
        _port(charon, tmp_path).deploy(SESSION, new, old)
    assert f"charon refused {step}: no thanks" in str(info.value)
    assert "the previous pair is live again" in str(info.value)
    assert _usable(charon, old) and not _usable(charon, new)


@pytest.mark.parametrize("step", ["load-cert", "list-certs", "unload-key", "flush-certs"])
def test_identity_connection_lost_at_each_step_restores_on_a_new_session(
        pairs: tuple, tmp_path: Path, step: str) -> None:
    _, old, new = pairs
    charon = ScriptedCharon(drop_at=step)
    _live(charon, old)
    with pytest.raises(DeployError, match=f"connection to charon lost during {step}") as info:
        _port(charon, tmp_path).deploy(SESSION, new, old)
    assert not isinstance(info.value, DeployUnavailable)
    assert "the previous pair is live again" in str(info.value)
    assert _usable(charon, old) and not _usable(charon, new)


def test_a_key_that_is_not_the_certificates_is_unloaded_again(pairs: tuple,
                                                              tmp_path: Path) -> None:
    _, old, new = pairs
    stray = pem_key(ec.generate_private_key(ec.SECP256R1()))
    wrong = CredentialPair.of_files(new.session, new.key.path, new.cert_path, stray, new.cert_pem)
    charon = ScriptedCharon()
    _live(charon, old)
    with pytest.raises(DeployError, match="does not match"):
        _port(charon, tmp_path).deploy(SESSION, wrong, old)
    assert list(charon.keys) == [key_id_from_cert_pem(old.cert_pem)]


def _pinned_tree(base: Path, new: CredentialPair) -> None:
    new.cert_path.parent.mkdir(parents=True, exist_ok=True)
    new.cert_path.write_bytes(new.cert_pem)  # the renewal engine committed it
    conf = _paths(base).swanctl_dir / "swanctl.conf"
    conf.write_text("connections {\n gw {\n  local { certs = gw-a.crt }\n"
                    "  remote { auth = pubkey }\n"
                    "  children { net { start_action = trap } }\n }\n}\n")


def test_pinned_swap_resends_the_connection_and_keeps_the_old_key_for_old_sas(
        pairs: tuple, tmp_path: Path) -> None:
    _, old, new = pairs
    _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(sas={7: "gw"})
    _live(charon, old)
    result = _port(charon, tmp_path).deploy(SESSION, new, old)
    sent = charon.conns["gw"]["local"]["certs"][0]
    assert x509.load_pem_x509_certificate(sent).serial_number == 2
    assert _usable(charon, new) and _usable(charon, old)  # the old key waits for SA #7
    stale = stale_keys_file(_paths(tmp_path), SESSION.name)
    assert [s.ike_sas for s in load_stale_keys(stale)] == [frozenset({7})]
    assert "stays loaded for 1 IKE SA" in result.detail


@pytest.mark.parametrize("version", ["5.9.8", "6.0.1", "6.1.0"])
def test_pinned_swap_names_the_ike_sas_without_child_sa_that_charon_6_closes(
        pairs: tuple, tmp_path: Path, version: str, caplog: pytest.LogCaptureFixture) -> None:
    # SA 7 has no CHILD_SA, SA 8 carries one: charon 6.0 and later close 7 when load-conn
    # replaces gw (swcmp.strongswan.releases); up to 5.9 both stay
    _, old, new = pairs
    _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(sas={7: "gw", 8: "gw", 9: "other"}, children={8: ("net",)},
                            version=version)
    _live(charon, old)
    with caplog.at_level("WARNING", logger="swcmp.strongswan"):
        result = _port(charon, tmp_path).deploy(SESSION, new, old)
    stale = load_stale_keys(stale_keys_file(_paths(tmp_path), SESSION.name))
    warned = [r.getMessage() for r in caplog.records if "without CHILD_SA" in r.getMessage()]
    if version == "5.9.8":
        assert "without CHILD_SA" not in result.detail and not warned
        assert [s.ike_sas for s in stale] == [frozenset({7, 8})]
    else:
        assert (f"charon {version} (strongSwan 6.0 or later) closes the IKE SAs of a "
                "connection it replaces that have no CHILD_SA") in result.detail
        assert "closing 1 IKE SA(s) without CHILD_SA" in result.detail
        assert "identity mode keeps them all" in result.detail
        assert len(warned) == 1 and "session gw-a" in warned[0]
        assert [s.ike_sas for s in stale] == [frozenset({8})]  # the old key waits for 8 only
        assert "stays loaded for 1 IKE SA" in result.detail


@pytest.mark.parametrize("fault", ["refuse", "drop"])
def test_pinned_swap_when_version_is_refused_or_the_connection_drops_there(
        pairs: tuple, tmp_path: Path, fault: str) -> None:
    _, old, new = pairs
    _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(sas={7: "gw"}, version="6.0.1",
                            **({"refuse": {"version": "no"}} if fault == "refuse"
                               else {"drop_at": "version"}))
    _live(charon, old)
    if fault == "refuse":  # an unknown release: swcmp says nothing about it, the swap goes on
        result = _port(charon, tmp_path).deploy(SESSION, new, old)
        assert "without CHILD_SA" not in result.detail and _usable(charon, new)
        return
    with pytest.raises(DeployError, match="pinned mode"):
        _port(charon, tmp_path).deploy(SESSION, new, old)
    assert not _usable(charon, new) and _usable(charon, old)


@pytest.mark.parametrize("fault", ["refuse", "drop"])
@pytest.mark.parametrize("step", ["load-cert", "list-certs", "list-sas", "load-conn",
                                  "flush-certs"])
def test_pinned_failure_at_each_step_leaves_the_previous_certificate_in_use(
        pairs: tuple, tmp_path: Path, fault: str, step: str) -> None:
    _, old, new = pairs
    _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(**({"refuse": {step: "busy"}} if fault == "refuse"
                               else {"drop_at": step}))
    _live(charon, old)
    with pytest.raises(DeployError, match="pinned mode") as info:
        _port(charon, tmp_path).deploy(SESSION, new, old)
    if "gw" in charon.conns:  # it was re-sent: then with the previous certificate again
        sent = charon.conns["gw"]["local"]["certs"][0]
        assert x509.load_pem_x509_certificate(sent).serial_number == 1, str(info.value)
    assert not _usable(charon, new) and _usable(charon, old)


@pytest.mark.parametrize("fault", ["refuse", "drop"])
def test_pinned_restore_keeps_a_new_key_that_was_loaded_before_the_swap(
        pairs: tuple, tmp_path: Path, fault: str) -> None:
    # the new key was already loaded (another session's, or re-certified): a failed
    # deploy must not take it out of charon
    _, old, new = pairs
    _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(**({"refuse": {"load-cert": "no"}} if fault == "refuse"
                               else {"drop_at": "load-cert"}))
    _live(charon, old)
    charon._answer("load-key", {"data": new.key.pem})
    with pytest.raises(DeployError):
        _port(charon, tmp_path).deploy(SESSION, new, old)
    assert _usable(charon, new) and _usable(charon, old), charon.log


def test_identity_same_key_refused_ca_cert_says_the_new_certificate_stays(
        pairs: tuple, tmp_path: Path) -> None:
    pki, old, _ = pairs
    key = serialization.load_pem_private_key(old.key.pem, None)
    same_key = _pair(pki, tmp_path, key, pki.issue(key, serial=3))  # type: ignore[arg-type]
    charon = _RefuseCaCert()
    charon._answer("load-key", {"data": old.key.pem})  # the old pair's key (the same)
    with pytest.raises(DeployError) as info:
        _port(charon, tmp_path).deploy(SESSION, same_key, old)
    assert "charon refused load-cert: CA refused" in str(info.value)
    assert "the new certificate (same key) stays loaded" in str(info.value)


class _RefuseCaCert(ScriptedCharon):
    """Takes the first end-entity certificate, then refuses the next load-cert (a CA's)."""

    armed = False

    def _answer(self, command: str, msg: dict[str, Any]) -> dict[str, Any]:
        answer = super()._answer(command, msg)
        if command == "load-cert" and msg["flag"] == b"NONE" and not self.armed:
            self.armed = True
            self.refuse["load-cert"] = "CA refused"
        return answer


def test_start_hook_loads_every_pair_and_names_the_one_charon_cannot_use(
        pairs: tuple, tmp_path: Path) -> None:
    _, old, new = pairs
    other_key = ec.generate_private_key(ec.SECP256R1())
    broken = CredentialPair.of_files("gw-b", tmp_path / "b.key", tmp_path / "b.crt",
                            pem_key(other_key), old.cert_pem)  # key of another certificate
    charon = ScriptedCharon()
    with pytest.raises(DeployError, match=r"1 of 2 pairs: gw-b: the key .*b\.key does not match"):
        _port(charon, tmp_path).load_current([new, broken])
    assert list(charon.keys) == [key_id_from_cert_pem(new.cert_pem)]
    assert [flag for _, flag in charon.certs] == ["CA", "NONE"]


# --------------------------------------------------------------------------- the rest of the port


def test_the_port_says_which_keys_charon_holds(pairs: tuple, tmp_path: Path) -> None:
    _, old, _ = pairs
    charon = ScriptedCharon()
    port = _port(charon, tmp_path)
    assert port.held_key_ids() == ()
    _live(charon, old)
    assert port.held_key_ids() == (key_id_from_cert_pem(old.cert_pem),)
    subject = x509.load_pem_x509_certificate(old.cert_pem).subject.rfc4514_string()
    assert port.certs_with_key() == frozenset({(subject, 1)})


def test_the_port_loads_ca_certificates_and_crls(pairs: tuple, tmp_path: Path) -> None:
    pki, _, _ = pairs
    charon = ScriptedCharon()
    crl = (x509.CertificateRevocationListBuilder().issuer_name(pki.root.subject)
           .last_update(pki.root.not_valid_before_utc)
           .next_update(pki.root.not_valid_after_utc)
           .sign(pki.root_key, hashes.SHA256()))
    crl_der = crl.public_bytes(serialization.Encoding.DER)
    said = _port(charon, tmp_path).load_authorities([pem_cert(pki.root)], [crl_der])
    assert said == "loaded 1 CA certificate(s) and 1 CRL(s) into charon"
    assert [flag for _, flag in charon.certs] == ["CA"] and charon.crls == [crl_der]
    charon.refuse["load-cert"] = "no"
    with pytest.raises(DeployError):
        _port(charon, tmp_path).load_authorities([pem_cert(pki.root)], [])


def test_the_port_resends_pinned_connections_for_the_start_hook(pairs: tuple,
                                                                tmp_path: Path) -> None:
    _, _, new = pairs
    charon = ScriptedCharon()
    port = _port(charon, tmp_path)
    assert port.reload_pinned(SESSION) == ()  # no swanctl.conf: nothing pins the file
    _pinned_tree(tmp_path, new)
    assert port.reload_pinned(SESSION) == ("gw",)
    sent = charon.conns["gw"]["local"]["certs"][0]
    assert x509.load_pem_x509_certificate(sent).serial_number == 2


def test_the_port_unloads_a_stale_key_once_its_sas_are_gone(pairs: tuple,
                                                            tmp_path: Path) -> None:
    _, old, new = pairs
    _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(sas={7: "gw"})
    _live(charon, old)
    port = _port(charon, tmp_path)
    port.deploy(SESSION, new, old)
    port.unload_stale_keys([SESSION])
    assert _usable(charon, old)  # IKE SA #7 still uses it
    charon.sas.clear()
    port.unload_stale_keys([SESSION])
    assert not _usable(charon, old) and _usable(charon, new)
    assert not stale_keys_file(_paths(tmp_path), SESSION.name).exists()


def test_an_unreachable_charon_is_unavailable_through_every_operation(tmp_path: Path) -> None:
    port = ViciCharon(f"unix://{tmp_path}/none.vici", _paths(tmp_path))
    for ask in (port.held_key_ids, port.certs_with_key,
                lambda: port.load_authorities([], []), lambda: port.load_current([])):
        with pytest.raises(DeployUnavailable):
            ask()


def test_unload_key_removes_one_key_and_says_when_charon_did_not_hold_it(
        pairs: tuple, tmp_path: Path) -> None:
    _, old, new = pairs
    charon = ScriptedCharon()
    _live(charon, old)
    charon._answer("load-key", {"data": new.key.pem})
    port = _port(charon, tmp_path)
    old_id = key_id_from_cert_pem(old.cert_pem)
    assert port.unload_key(old_id) is True
    assert not _usable(charon, old) and _usable(charon, new)  # only that key left
    assert port.unload_key(old_id) is False  # not held any more: nothing sent
    assert charon.log.count("unload-key") == 1
    charon.refuse["unload-key"] = "key busy"
    with pytest.raises(DeployError, match="refused unload-key: key busy"):
        port.unload_key(key_id_from_cert_pem(new.cert_pem))
    assert _usable(charon, new)


def test_pinned_swap_with_a_version_int_cannot_read_goes_on(
        pairs: tuple, tmp_path: Path) -> None:
    # a version of 5 000 digits made int() raise ValueError in the middle of the swap:
    # the new key stayed loaded and the previous pair was not restored
    _, old, new = pairs
    _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(sas={7: "gw"}, version="6" * 5000 + ".0")
    _live(charon, old)
    result = _port(charon, tmp_path).deploy(SESSION, new, old)
    assert result.deployed and _usable(charon, new) and _usable(charon, old)
    assert "without CHILD_SA" not in result.detail
