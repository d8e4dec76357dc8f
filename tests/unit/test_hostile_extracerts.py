"""Audit: hostile extraCerts come out as swcmp errors, never as tracebacks.

extraCerts are outside the protected part of a PKIMessage, so anyone on the
path of an http:// CMP URL can add certificates to any answer without the MAC
secret or the CA's key. A certificate with an invalid version number escaped
``certs.load_certificate`` as cryptography's InvalidVersion (not a
ValueError), and one whose names cryptography only parses when first read
escaped later as a KeyError: either killed ``swcmp serve`` and left the
session's state at "in_progress".
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt

import pytest

from pki import TestPKI, name
from scripted_ca import SECRET, ScriptedCA
from swcmp.cmp import certs, codec, protection
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import MacProtection
from swcmp.errors import CertificateError, SwcmpError
from testpaths import DATA

ROOT = certs.load_certificate((DATA / "pki" / "root.crt").read_bytes())
WHEN = dt.datetime(2026, 11, 27, 17, 0, tzinfo=dt.UTC)  # inside the captures' validity


def bad_version(cert_der: bytes) -> bytes:
    i = cert_der.index(bytes.fromhex("a003020102"))  # [0] version v3
    return cert_der[:i] + bytes.fromhex("a003020145") + cert_der[i + 5:]


def bad_name(cert_der: bytes, which: int) -> bytes:
    """The CN of the issuer (0) or subject (1) given an unknown string tag."""
    cert = certs.load_certificate(cert_der)
    from cryptography.x509.oid import NameOID

    def cn(n: object) -> bytes:
        return str(n.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value).encode()  # type: ignore[attr-defined]

    i = cert_der.index(cn(cert.issuer))
    if which == 1:
        i = cert_der.index(cn(cert.subject), i + 1)
    tag = i - 2
    assert cert_der[tag] in (0x0C, 0x13)
    return cert_der[:tag] + b"\x42" + cert_der[tag + 1:]


def hostile(cert_der: bytes) -> list[bytes]:
    return [bad_version(cert_der), bad_name(cert_der, 0), bad_name(cert_der, 1)]


def test_load_certificate_never_leaks_a_foreign_exception() -> None:
    for der in hostile(certs.der_of(ROOT)):
        with pytest.raises(CertificateError):
            c = certs.load_certificate(der)
            c.subject.rfc4514_string()
            c.issuer.rfc4514_string()


@pytest.mark.parametrize("which", [0, 1, 2], ids=["version", "issuer", "subject"])
@pytest.mark.parametrize("position", ["first", "last"])
def test_signed_answer_with_a_hostile_extra_cert(which: int, position: str) -> None:
    msg = codec.decode_message((DATA / "kup_sig.der").read_bytes())
    evil = hostile(msg.extra_certs[0])[which]
    extra = (evil, *msg.extra_certs) if position == "first" else (*msg.extra_certs, evil)
    tampered = dataclasses.replace(msg, extra_certs=extra)
    with contextlib.suppress(SwcmpError):  # refusing is fine; ignoring the stray one too
        protection.verify_response(tampered, mac=None, trust=[ROOT], now=WHEN)


def test_signer_with_an_unsupported_curve() -> None:
    msg = codec.decode_message((DATA / "kup_sig.der").read_bytes())
    signer = msg.extra_certs[0]
    p256 = bytes.fromhex("06082a8648ce3d030107")
    i = signer.index(p256)
    evil = signer[:i] + bytes.fromhex("06082a8648ce3d03017f") + signer[i + len(p256):]
    tampered = dataclasses.replace(msg, extra_certs=(evil, *msg.extra_certs[1:]))
    with pytest.raises(SwcmpError):
        protection.verify_response(tampered, mac=None, trust=[ROOT], now=WHEN)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["version", "issuer", "subject"])
def test_mac_answer_with_a_hostile_extra_cert(pki: TestPKI, which: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    evil = hostile(certs.der_of(pki.root))[which]
    assemble = codec.assemble

    def with_evil(header: bytes, body: bytes, prot: bytes | None,
                  extra: object = ()) -> bytes:
        return assemble(header, body, prot, [*extra, evil])  # type: ignore[misc]

    monkeypatch.setattr(codec, "assemble", with_evil)
    ca = ScriptedCA(pki, pki.gw)
    client = CMPClient(ca, recipient=pki.root.subject, trust=[pki.root], sleep=lambda s: None)
    with contextlib.suppress(SwcmpError):
        client.initial(key=pki.gw_key, subject=name("gw1.example.net"),
                       protection=MacProtection(reference=b"ca", secret=SECRET))
