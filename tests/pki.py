"""A throwaway test PKI made with cryptography: root CA, CMP server, gateway certs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from swcmp.cmp import keys, oids

CMC_RA = x509.ObjectIdentifier(oids.KP_CMC_RA)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    subject: x509.Name,
    pub: keys.PublicKey,
    issuer_key: keys.PrivateKey,
    issuer: x509.Name | None = None,
    *,
    ca: bool = False,
    serial: int | None = None,
    sans: list[x509.GeneralName] | None = None,
    not_before: dt.datetime | None = None,
    days: float = 365,
    issuer_cert: x509.Certificate | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    key_usage: x509.KeyUsage | None = None,
) -> x509.Certificate:
    nb = not_before or NOW - dt.timedelta(hours=1)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(pub)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(nb + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    )
    if issuer_cert is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    if key_usage is not None:
        b = b.add_extension(key_usage, critical=True)
    elif ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    algo = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(issuer_key, algo)  # type: ignore[arg-type]


def pem_key(key: keys.PrivateKey) -> bytes:
    return keys.private_key_pem(key)


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class TestPKI:
    __test__ = False  # not a test class, despite the name
    root_key: keys.PrivateKey
    root: x509.Certificate
    srv_key: keys.PrivateKey
    srv: x509.Certificate
    gw_key: keys.PrivateKey
    gw: x509.Certificate
    dir: Path

    def issue(self, key: keys.PrivateKey | keys.PublicKey, cn: str = "gw1.example.net", *,
              serial: int | None = None, days: float = 365,
              sans: list[x509.GeneralName] | None = None,
              not_before: dt.datetime | None = None,
              eku: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
        pub = key.public_key() if hasattr(key, "private_bytes") else key
        return make_cert(name(cn), pub, self.root_key, self.root.subject, serial=serial,  # type: ignore[arg-type]
                         days=days, issuer_cert=self.root, not_before=not_before,
                         sans=sans if sans is not None else [x509.DNSName(cn)], eku=eku)

    def write(self, fname: str, data: bytes) -> Path:
        p = self.dir / fname
        p.write_bytes(data)
        return p


def make_pki(tmp: Path, *, key_type: str = "ecdsa:p256") -> TestPKI:
    tmp.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(name("swcmp Test Root CA"), root_key.public_key(), root_key, ca=True,
                     days=3650)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    # The CA's CMP signer: an RA certificate (RFC 6402 extendedKeyUsage id-kp-cmcRA)
    srv = make_cert(name("swcmp Test CMP Server"), srv_key.public_key(), root_key,
                    root.subject, issuer_cert=root, eku=[CMC_RA])
    gw_key = keys.generate_key(key_type)
    pki = TestPKI(root_key, root, srv_key, srv, gw_key, root, tmp)
    pki.gw = pki.issue(gw_key)
    for fname, data in [("root.crt", pem_cert(root)), ("srv.crt", pem_cert(srv)),
                        ("srv.key", pem_key(srv_key)), ("gw.crt", pem_cert(pki.gw)),
                        ("gw.key", pem_key(gw_key))]:
        pki.write(fname, data)
    return pki


def big_crl(issuer: x509.Name, key: keys.PrivateKey, entries: int, *,
            serial_bytes: int = 19) -> x509.CertificateRevocationList:
    """A CRL of ``entries`` revoked serials (of ``serial_bytes`` bytes) with a reason code
    each: about 52 bytes an entry, so 20,000 entries make a CRL just under 1 MiB."""
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
         .last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=7))
         .add_extension(x509.CRLNumber(1), critical=False))
    when = NOW - dt.timedelta(days=1)
    reason = x509.CRLReason(x509.ReasonFlags.superseded)
    top = 1 << (8 * serial_bytes - 2)
    for i in range(entries):
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(top + i).revocation_date(when)
            .add_extension(reason, critical=False).build())
    return b.sign(key, hashes.SHA256())  # type: ignore[arg-type]


__all__ = ["CMC_RA", "NOW", "TestPKI", "big_crl", "make_cert", "make_pki", "name", "pem_cert",
           "pem_key", "rsa"]
