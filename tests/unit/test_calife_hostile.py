"""The CA's life against answers that passed protection but must still be refused, and
against damaged state: trust-anchor files, CRL replays and partial CRLs, stale rollover
links, hand-edited calife.json, session names that prefix others.

No CA and no charon: the CMP exchange is replaced by overriding ``_ask`` (the answer as
it comes out of a verified genp); everything after it is the real code. Each test failed
before the fix it guards.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swcmp.calife import CaLife, CaLifeState, CaLifeStore, crl_file
from swcmp.calife.state import CA_CERTS, CRL_MAX_REFRESH
from swcmp.errors import SwcmpError
from swcmp.names import SessionName
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.store import load_trust

NOW = datetime.now(UTC).replace(microsecond=0)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None = None,
         issuer_key: ec.EllipticCurvePrivateKey | None = None, *, ca: bool = True,
         not_before: datetime | None = None, not_after: datetime | None = None,
         serial: int | None = None) -> x509.Certificate:
    b = (x509.CertificateBuilder()
         .subject_name(name(cn))
         .issuer_name(issuer.subject if issuer is not None else name(cn))
         .public_key(key.public_key())
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(not_before or NOW - timedelta(days=1))
         .not_valid_after(not_after or NOW + timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=True, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
             encipher_only=False, decipher_only=False), critical=True))
    return b.sign(issuer_key or key, hashes.SHA256())


def pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Scripted(CaLife):
    """CaLife whose CA exchange returns ``answer`` (as a verified genp would)."""

    answer: Any = None

    def _ask(self, session: Any, question: str, work: Callable[[Any], Any], *,
             remember: bool = True) -> Any:
        if question == "crlStatusList":  # a CRL comes as the one id-it-crls holds
            return (self.answer,) if isinstance(
                self.answer, x509.CertificateRevocationList) else None
        return self.answer


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    p.x509ca_dir.mkdir(parents=True)
    p.cert_file("gw1").parent.mkdir(parents=True)
    return p


# --------------------------------------------------------------------------- caCerts


def test_cacerts_never_deletes_a_trust_anchor_file(paths: Paths) -> None:
    """A caCerts answer shorter than the stored set keeps the trust-anchor file the session names
    (an IR may have stored it as ca3)."""
    rk, ak, bk, nk, lk = key(), key(), key(), key(), key()
    root = make("Root", rk)
    a = make("Issuing A", ak, root, rk)
    b = make("Issuing B", bk, a, ak)
    n = make("Issuing N", nk, root, rk)
    leaf = make("gw1", lk, n, nk, ca=False)  # the renewed certificate, from the new CA
    for i, c in enumerate((b, a, root), start=1):  # as an IR under MAC stores them
        paths.ca_cert_file("gw1", i).write_bytes(pem(c))
    paths.cert_file("gw1").write_bytes(pem(leaf))
    trust_file = paths.ca_cert_file("gw1", 3)
    session = SimpleNamespace(name="gw1", trust=(trust_file,))
    life = Scripted(paths)
    life.answer = (n,)  # the CA now has one issuing CA under the same root
    life.refresh_ca_certs(session)  # type: ignore[arg-type]
    assert trust_file.exists(), "caCerts deleted the session's trust anchor file"
    assert load_trust(session) == [root]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CRL


def _crl(issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey, this: datetime,
         nxt: datetime, revoked: tuple[int, ...] = (), *, number: int = 1,
         delta_of: int | None = None) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
         .last_update(this).next_update(nxt)
         .add_extension(x509.CRLNumber(number), critical=False))
    if delta_of is not None:
        b = b.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
    for s in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(this).build())
    return b.sign(issuer_key, hashes.SHA256())


def _crl_site(paths: Paths) -> tuple[Scripted, Any, x509.Certificate, ec.EllipticCurvePrivateKey]:
    rk, lk = key(), key()
    root = make("Root", rk)
    (paths.config_dir).mkdir(parents=True, exist_ok=True)
    trust = paths.config_dir / "root.crt"
    trust.write_bytes(pem(root))
    paths.cert_file("gw1").write_bytes(pem(make("gw1", lk, root, rk, ca=False)))
    return Scripted(paths), SimpleNamespace(name="gw1", trust=(trust,)), root, rk


def test_crl_replay_refused_even_when_calife_json_is_lost(paths: Paths) -> None:
    """An older CRL is refused by comparison with the stored CRL itself, even when calife.json is
    gone."""
    life, session, root, rk = _crl_site(paths)
    life.answer = _crl(root, rk, NOW - timedelta(days=1), NOW + timedelta(days=6), (0x77,),
                       number=9)
    life.refresh_crl(session)
    CaLifeStore(paths, "gw1").path.write_text("{damaged")
    life.answer = _crl(root, rk, NOW - timedelta(days=20), NOW - timedelta(days=13), (),
                       number=2)
    with pytest.raises(SwcmpError):
        life.refresh_crl(session)
    stored = x509.load_der_x509_crl(crl_file(paths, "gw1").read_bytes())
    assert stored.get_revoked_certificate_by_serial_number(0x77) is not None


def test_a_lower_crl_number_is_refused(paths: Paths) -> None:
    """A CRL with a lower cRLNumber than the stored one is refused."""
    life, session, root, rk = _crl_site(paths)
    life.answer = _crl(root, rk, NOW - timedelta(hours=1), NOW + timedelta(days=6), (0x77,),
                       number=9)
    life.refresh_crl(session)
    life.answer = _crl(root, rk, NOW - timedelta(hours=1), NOW + timedelta(days=6), (),
                       number=3)
    with pytest.raises(SwcmpError):
        life.refresh_crl(session)


def test_a_delta_crl_does_not_replace_the_full_crl(paths: Paths) -> None:
    """A delta CRL never replaces the complete CRL."""
    life, session, root, rk = _crl_site(paths)
    life.answer = _crl(root, rk, NOW - timedelta(days=1), NOW + timedelta(days=6), (0x77,),
                       number=9)
    life.refresh_crl(session)
    life.answer = _crl(root, rk, NOW - timedelta(hours=1), NOW + timedelta(days=6), (),
                       number=10, delta_of=9)
    with pytest.raises(SwcmpError):
        life.refresh_crl(session)


# --------------------------------------------------------------------------- root update


def test_root_update_with_an_expired_new_with_old_is_refused(paths: Paths) -> None:
    """A rollover whose newWithOld link has expired (a withdrawn rollover replayed) installs no
    root."""
    ok, nk = key(), key()
    old = make("Root", ok)
    new = make("Root", nk, not_after=NOW + timedelta(days=3650))
    link = (x509.CertificateBuilder().subject_name(new.subject).issuer_name(old.subject)
            .public_key(nk.public_key()).serial_number(5)
            .not_valid_before(datetime(2019, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2020, 1, 1, tzinfo=UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ok, hashes.SHA256()))
    update = SimpleNamespace(new_with_new=new.public_bytes(serialization.Encoding.DER),
                             new_with_old=link.public_bytes(serialization.Encoding.DER),
                             old_with_new=None)
    life = CaLife(paths)
    with pytest.raises(SwcmpError):
        life._verify_root_update(SimpleNamespace(name="gw1"), old, update)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- calife.json


def test_a_far_future_time_in_calife_json_does_not_crash() -> None:
    """Times no schedule can add a week to (year 9999) are read as none."""
    st = CaLifeState.from_json({"checked": {CA_CERTS: "9999-12-31T23:59:59+00:00"},
                                "unsupported": {"rootCaCert": {
                                    "since": "9999-12-31T23:59:59+00:00", "error": "x"}}})
    st.due(CA_CERTS, NOW)
    st.due("rootCaCert", NOW)


def test_a_hand_edited_pending_revocation_never_breaks_a_renewal(paths: Paths) -> None:
    """A malformed pending revocation is dropped; it never turns a committed renewal into an
    error."""
    lk = key()
    cert = make("gw1", lk, ca=False)
    paths.cert_file("gw1").write_bytes(pem(cert))
    store = CaLifeStore(paths, "gw1")
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps({"pending_revocations": [
        {"serial": "ab", "reason": None, "next_try": "2000-01-01T00:00:00+00:00"}],
        # caCerts skipped: this test is about the revocation queue only
        "unsupported": {CA_CERTS: {"since": NOW.isoformat(), "error": "x"}}}))
    life = CaLife(paths)
    session = Session(name=SessionName("gw1"), entity="CN=gw1", key="gw1",
                      revoke_superseded=True)
    with contextlib.suppress(SwcmpError):  # reported failures are fine; a TypeError is not
        life.after_renewal(session, cert, "1234")
    assert all(q["serial"] != "ab" for q in store.load().pending_revocations)


def test_crl_replay_refused_with_state_intact(paths: Paths) -> None:
    """An older CRL is refused while the state is intact."""
    life, session, root, rk = _crl_site(paths)
    life.answer = _crl(root, rk, NOW - timedelta(days=1), NOW + timedelta(days=6), (0x77,))
    life.refresh_crl(session)
    life.answer = _crl(root, rk, NOW - timedelta(days=20), NOW - timedelta(days=13), ())
    with pytest.raises(SwcmpError, match="replay"):
        life.refresh_crl(session)


# --------------------------------------------------------------------------- files


def test_root_files_of_one_session_are_not_another_sessions(paths: Paths) -> None:
    """Session gw does not take the rollover roots of session gw-root-x."""
    from swcmp.store import root_cert_files

    (paths.x509ca_dir / "gw-root-x-ca1.crt").write_bytes(pem(make("Other CA", key())))
    assert root_cert_files(paths, "gw") == ()


def test_a_far_future_crl_refresh_in_calife_json_never_stops_the_crl_fetches(
        paths: Paths) -> None:
    """A CRL's next fetch later than any fetch sets it (a damaged calife.json, one written
    while the clock was years ahead) is not waited for; a CRL whose nextUpdate is a year
    away is still asked for within CRL_MAX_REFRESH."""
    life, session, root, rk = _crl_site(paths)
    life.clock = lambda: NOW
    life.answer = _crl(root, rk, NOW - timedelta(hours=1), NOW + timedelta(days=365))
    life.refresh_crl(session)
    refresh = CaLifeStore(paths, "gw1").load().crl_refresh_at(NOW)
    assert refresh is not None and refresh <= NOW + CRL_MAX_REFRESH
    assert not life.crl_due(session)
    data = json.loads(CaLifeStore(paths, "gw1").path.read_text())
    data["crl"]["refresh_at"] = "2999-01-01T00:00:00+00:00"
    CaLifeStore(paths, "gw1").path.write_text(json.dumps(data))
    assert life.crl_due(session), "a far-future refresh_at stopped the CRL fetches"
    due = life.next_due(session)
    assert due is not None and due <= NOW
