"""The deployers and the start hook against a scripted charon over a socketpair.

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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki import TestPKI, make_pki, pem_cert, pem_key
from scripted_charon import ScriptedCharon
from swcmp.deploy import CredentialPair, DeployError, DeployUnavailable
from swcmp.strongswan import PinnedDeployer, ViciDeployer, load_current
from swcmp.strongswan.vici import key_id_from_cert_pem

URI = "unix:///nonexistent/charon.vici"  # never opened: every socket comes from connect=


def _pair(pki: TestPKI, base: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
          session: str = "gw-a") -> CredentialPair:
    return CredentialPair(session, base / "private" / "a.pem", base / "x509" / "a.pem",
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
    charon._answer("load-key", {"data": old.key_pem})
    charon._answer("load-cert", {"data": old.cert_pem, "flag": b"NONE"})


def _usable(charon: ScriptedCharon, pair: CredentialPair) -> bool:
    return key_id_from_cert_pem(pair.cert_pem) in charon.keys


def test_identity_swap_loads_new_and_unloads_old(pairs: tuple) -> None:
    _, old, new = pairs
    charon = ScriptedCharon()
    _live(charon, old)
    result = ViciDeployer(URI, connect=charon.connect).deploy(new, old)
    assert _usable(charon, new) and not _usable(charon, old)
    assert "old key" in result.detail and "unloaded" in result.detail
    assert charon.log == ["get-keys", "load-key", "load-cert", "load-cert", "list-certs",
                          "get-keys", "unload-key", "flush-certs"]


@pytest.mark.parametrize("step", ["load-cert", "list-certs", "unload-key", "flush-certs"])
def test_identity_refusal_at_each_step_restores_the_previous_pair(pairs: tuple,
                                                                  step: str) -> None:
    _, old, new = pairs
    charon = ScriptedCharon(refuse={step: "no thanks"})
    _live(charon, old)
    with pytest.raises(DeployError) as info:
        ViciDeployer(URI, connect=charon.connect).deploy(new, old)
    assert f"charon refused {step}: no thanks" in str(info.value)
    assert "the previous pair is live again" in str(info.value)
    assert _usable(charon, old) and not _usable(charon, new)


@pytest.mark.parametrize("step", ["load-cert", "list-certs", "unload-key", "flush-certs"])
def test_identity_connection_lost_at_each_step_restores_on_a_new_session(pairs: tuple,
                                                                         step: str) -> None:
    _, old, new = pairs
    charon = ScriptedCharon(drop_at=step)
    _live(charon, old)
    with pytest.raises(DeployError, match=f"connection to charon lost during {step}") as info:
        ViciDeployer(URI, connect=charon.connect).deploy(new, old)
    assert not isinstance(info.value, DeployUnavailable)
    assert "the previous pair is live again" in str(info.value)
    assert _usable(charon, old) and not _usable(charon, new)


def test_a_key_that_is_not_the_certificates_is_unloaded_again(pairs: tuple) -> None:
    _, old, new = pairs
    stray = pem_key(ec.generate_private_key(ec.SECP256R1()))
    wrong = CredentialPair(new.session, new.key_path, new.cert_path, stray, new.cert_pem)
    charon = ScriptedCharon()
    _live(charon, old)
    with pytest.raises(DeployError, match="does not match"):
        ViciDeployer(URI, connect=charon.connect).deploy(wrong, old)
    assert list(charon.keys) == [key_id_from_cert_pem(old.cert_pem)]


def _pinned_tree(base: Path, new: CredentialPair) -> Path:
    (base / "x509").mkdir(parents=True, exist_ok=True)
    (base / "private").mkdir(exist_ok=True)
    new.cert_path.write_bytes(new.cert_pem)  # the renewal engine committed it
    conf = base / "swanctl.conf"
    conf.write_text("connections {\n gw {\n  local { certs = a.pem }\n  remote { auth = pubkey }\n"
                    "  children { net { start_action = trap } }\n }\n}\n")
    return conf


def test_pinned_swap_resends_the_connection_and_keeps_the_old_key_for_old_sas(
        pairs: tuple, tmp_path: Path) -> None:
    _, old, new = pairs
    conf = _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(sas={7: "gw"})
    _live(charon, old)
    deployer = PinnedDeployer(URI, swanctl_conf=conf, connect=charon.connect,
                              stale_file=tmp_path / "stale.json")
    result = deployer.deploy(new, old)
    sent = charon.conns["gw"]["local"]["certs"][0]
    assert x509.load_pem_x509_certificate(sent).serial_number == 2
    assert _usable(charon, new) and _usable(charon, old)  # the old key waits for SA #7
    assert [s.ike_sas for s in deployer.stale_keys] == [frozenset({7})]
    assert "stays loaded for 1 IKE SA" in result.detail
    assert (tmp_path / "stale.json").exists()


@pytest.mark.parametrize("fault", ["refuse", "drop"])
@pytest.mark.parametrize("step", ["load-cert", "list-certs", "list-sas", "load-conn",
                                  "flush-certs"])
def test_pinned_failure_at_each_step_leaves_the_previous_certificate_in_use(
        pairs: tuple, tmp_path: Path, fault: str, step: str) -> None:
    _, old, new = pairs
    conf = _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(**({"refuse": {step: "busy"}} if fault == "refuse"
                               else {"drop_at": step}))
    _live(charon, old)
    with pytest.raises(DeployError, match="pinned mode") as info:
        PinnedDeployer(URI, swanctl_conf=conf, connect=charon.connect).deploy(new, old)
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
    conf = _pinned_tree(tmp_path, new)
    charon = ScriptedCharon(**({"refuse": {"load-cert": "no"}} if fault == "refuse"
                               else {"drop_at": "load-cert"}))
    _live(charon, old)
    charon._answer("load-key", {"data": new.key_pem})
    with pytest.raises(DeployError):
        PinnedDeployer(URI, swanctl_conf=conf, connect=charon.connect).deploy(new, old)
    assert _usable(charon, new) and _usable(charon, old), charon.log


def test_identity_same_key_refused_ca_cert_says_the_new_certificate_stays(
        pairs: tuple, tmp_path: Path) -> None:
    pki, old, _ = pairs
    key = serialization.load_pem_private_key(old.key_pem, None)
    same_key = _pair(pki, tmp_path, key, pki.issue(key, serial=3))  # type: ignore[arg-type]
    charon = _RefuseCaCert()
    charon._answer("load-key", {"data": old.key_pem})  # the old pair's key (the same)
    with pytest.raises(DeployError) as info:
        ViciDeployer(URI, connect=charon.connect).deploy(same_key, old)
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
    broken = CredentialPair("gw-b", tmp_path / "b.key", tmp_path / "b.crt",
                            pem_key(other_key), old.cert_pem)  # key of another certificate
    charon = ScriptedCharon()
    with pytest.raises(DeployError, match=r"1 of 2 pairs: gw-b: the key .*b\.key does not match"):
        load_current(URI, [new, broken], connect=charon.connect)
    assert list(charon.keys) == [key_id_from_cert_pem(new.cert_pem)]
    assert [flag for _, flag in charon.certs] == ["CA", "NONE"]
