"""Tests for swcmp.checks: the checks guarding enable-auto-update."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from swcmp.checks import CheckResult, all_passed, failed, run_checks, warnings
from swcmp.errors import ConfigError
from swcmp.names import SessionName, parse_dn
from swcmp.paths import Paths
from swcmp.session import Session, set_fields

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BUILTIN_ORDER = [
    "entity",
    "ca-name",
    "server-url",
    "auth-cert",
    "auth-cert-key",
    "auth-cert-chain",
    "auth-cert-validity",
    "key-pair",
    "trust-anchor",
]
MAC_ORDER = [*BUILTIN_ORDER, "mac-ref", "mac-secret"]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    not_before: datetime = NOW - timedelta(days=10),
    not_after: datetime = NOW + timedelta(days=355),
    ca: bool = False,
) -> x509.Certificate:
    name = parse_dn(subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Setup:
    paths: Paths
    session: Session
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    secret: Path


@pytest.fixture
def good(tmp_path: Path) -> Setup:
    """A session that passes every check: CA, issued certificate, key, secret."""
    paths = Paths(tmp_path / "etc", tmp_path / "state", tmp_path / "swanctl")
    for d in (paths.private_dir, paths.x509_dir, paths.x509ca_dir):
        d.mkdir(parents=True)
    ca_key = _key()
    ca = _cert("/C=DE/O=Example/CN=Example CA", ca_key, ca=True)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    key = _key()
    cert = _cert("/C=DE/O=Example/CN=gw1", key, issuer=ca, issuer_key=ca_key)
    paths.key_file("gw1").write_bytes(_key_pem(key))
    paths.key_file("gw1").chmod(0o600)
    paths.cert_file("gw1").write_bytes(_pem(cert))
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cr3t\n")
    secret.chmod(0o600)
    session = set_fields(
        Session(name=SessionName("gw1")),
        {
            "entity": "CN=gw1,O=Example,C=DE",
            "ca_name": "/C=DE/O=Example/CN=Example CA",
            "server_url": "http://ca.example.net:8080/pkix/",
            "trust": [str(tmp_path / "ca.pem")],
            "key": "gw1",
            "mac_ref": "ref",
            "mac_secret_file": str(secret),
        },
    )
    return Setup(paths, session, ca_key, ca, key, secret)


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def _failing(results: list[CheckResult]) -> list[str]:
    return [r.name for r in failed(results)]


def test_all_pass(good: Setup) -> None:
    results = run_checks(good.session, good.paths, now=NOW)
    assert [r.name for r in results] == MAC_ORDER
    assert _failing(results) == [], [r for r in results if not r.ok]
    assert all_passed(results)
    assert all(r.fix == "" for r in results)
    detail = _by_name(results)["entity"].detail
    assert "/C=DE/O=Example/CN=gw1" in detail  # shown in wire order


def test_empty_session_fails_everything_with_fixes(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path, tmp_path)
    session = Session(name=SessionName("gw9"))
    results = run_checks(session, paths, now=NOW)
    assert [r.name for r in results] == MAC_ORDER
    assert all(not r.ok for r in results)
    assert not all_passed(results)
    by = _by_name(results)
    assert "swcmp session set gw9 --entity" in by["entity"].fix
    assert "swcmp session set gw9 --ca-name" in by["ca-name"].fix
    assert "swcmp session set gw9 --server-url" in by["server-url"].fix
    assert "swcmp request initial gw9" in by["auth-cert"].fix
    assert "swcmp session set gw9 --auth-cert" in by["auth-cert"].fix
    assert by["auth-cert-key"].level == "pending"  # made by the first request
    assert by["auth-cert-key"].detail.startswith("checked once there is a certificate")
    assert "swcmp session set gw9 --key gw9" in by["key-pair"].fix
    assert "swcmp session set gw9 --trust" in by["trust-anchor"].fix
    assert "swcmp session set gw9 --mac-ref" in by["mac-ref"].fix
    assert "swcmp session set gw9 --mac-secret-file" in by["mac-secret"].fix


def test_signature_mode_skips_mac_checks(good: Setup) -> None:
    session = set_fields(good.session, {"ir_auth": "signature", "mac_secret_file": None})
    results = run_checks(session, good.paths, now=NOW)
    assert [r.name for r in results] == BUILTIN_ORDER
    assert all_passed(results)


def test_https_with_missing_tls_bundle(good: Setup, tmp_path: Path) -> None:
    session = set_fields(
        good.session,
        {"server_url": "https://ca.example.net/", "tls_ca_bundle": str(tmp_path / "none.pem")},
    )
    results = run_checks(session, good.paths, now=NOW)
    assert _failing(results) == ["server-url"]
    assert "--tls-ca-bundle" in _by_name(results)["server-url"].fix
    session = set_fields(session, {"tls_ca_bundle": str(tmp_path / "ca.pem")})
    assert all_passed(run_checks(session, good.paths, now=NOW))


def test_entity_without_common_name(good: Setup) -> None:
    session = set_fields(good.session, {"entity": "/C=DE/O=Example"})
    results = run_checks(session, good.paths, now=NOW)
    assert _failing(results) == ["entity"]
    assert "no common name" in _by_name(results)["entity"].detail


def test_ca_name_in_wrong_rdn_order(good: Setup) -> None:
    # Same attributes as the CA certificate, reversed: a classic slash-vs-RFC 4514 mix-up.
    session = set_fields(good.session, {"ca_name": "/CN=Example CA/O=Example/C=DE"})
    results = run_checks(session, good.paths, now=NOW)
    assert _failing(results) == ["ca-name"]
    result = _by_name(results)["ca-name"]
    assert "another order" in result.detail
    assert "--ca-name '/C=DE/O=Example/CN=Example CA'" in result.fix


def test_ca_name_not_among_anchors_warns_before_enrolment(good: Setup) -> None:
    # The issuing CA may be an intermediate that is not a trust anchor: before the first
    # request nothing tells a typo from an intermediate, so it warns (does not block).
    os.unlink(good.paths.cert_file("gw1"))
    session = set_fields(good.session, {"ca_name": "/C=DE/O=Example/CN=Issuing CA"})
    results = run_checks(session, good.paths, now=NOW)
    assert _failing(results) == []
    assert _by_name(results)["ca-name"].level == "warn"
    assert "/C=DE/O=Example/CN=Example CA" in _by_name(results)["ca-name"].detail


def test_ca_name_one_typo_away_from_a_known_ca_fails(good: Setup) -> None:
    session = set_fields(good.session, {"ca_name": "/C=DE/O=Example/CN=Exmaple CA"})
    results = run_checks(session, good.paths, now=NOW)
    assert _failing(results) == ["ca-name"]
    assert "(a typo?)" in _by_name(results)["ca-name"].detail
    assert "--ca-name '/C=DE/O=Example/CN=Example CA'" in _by_name(results)["ca-name"].fix


def test_ca_name_of_a_server_that_is_not_the_issuer_warns(good: Setup) -> None:
    # A CMP server may name itself otherwise than the CA that issues (Siemens Mock CA).
    session = set_fields(good.session, {"ca_name": "/C=DE/O=Example/CN=CMP Server"})
    results = run_checks(session, good.paths, now=NOW)
    assert _failing(results) == []
    assert _by_name(results)["ca-name"].level == "warn"


def test_auth_cert_configured_but_missing(good: Setup, tmp_path: Path) -> None:
    session = set_fields(good.session, {"auth_cert": str(tmp_path / "nope.crt")})
    results = run_checks(session, good.paths, now=NOW)
    assert _failing(results) == [
        "auth-cert",
        "auth-cert-key",
        "auth-cert-chain",
        "auth-cert-validity",
    ]
    assert "does not exist" in _by_name(results)["auth-cert"].detail


def test_auth_cert_garbage(good: Setup) -> None:
    good.paths.cert_file("gw1").write_bytes(b"not a certificate")
    results = run_checks(good.session, good.paths, now=NOW)
    assert "auth-cert" in _failing(results)
    assert "PEM or DER" in _by_name(results)["auth-cert"].detail


def test_auth_cert_der_accepted(good: Setup) -> None:
    cert = x509.load_pem_x509_certificate(good.paths.cert_file("gw1").read_bytes())
    good.paths.cert_file("gw1").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    assert all_passed(run_checks(good.session, good.paths, now=NOW))


def test_wrong_key_for_certificate(good: Setup) -> None:
    good.paths.key_file("gw1").write_bytes(_key_pem(_key()))
    results = run_checks(good.session, good.paths, now=NOW)
    assert _failing(results) == ["auth-cert-key"]
    assert "does not belong" in _by_name(results)["auth-cert-key"].detail
    assert "swcmp session set gw1 --auth-key" in _by_name(results)["auth-cert-key"].fix


def test_external_auth_cert_and_key(good: Setup, tmp_path: Path) -> None:
    ext_key = _key()
    ext = _cert("/O=Other/CN=factory", ext_key, issuer=good.ca, issuer_key=good.ca_key)
    (tmp_path / "ext.crt").write_bytes(_pem(ext))
    (tmp_path / "ext.key").write_bytes(_key_pem(ext_key))
    session = set_fields(
        good.session,
        {"auth_cert": str(tmp_path / "ext.crt"), "auth_key": str(tmp_path / "ext.key")},
    )
    assert all_passed(run_checks(session, good.paths, now=NOW))
    # The external certificate with the session's own key does not match.
    mismatched = set_fields(session, {"auth_key": None})
    assert _failing(run_checks(mismatched, good.paths, now=NOW)) == ["auth-cert-key"]


def test_encrypted_key_reported(good: Setup) -> None:
    encrypted = good.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    good.paths.key_file("gw1").write_bytes(encrypted)
    results = run_checks(good.session, good.paths, now=NOW)
    assert _failing(results) == ["auth-cert-key", "key-pair"]
    assert "encrypted" in _by_name(results)["key-pair"].detail


def test_cert_from_another_ca_does_not_chain(good: Setup) -> None:
    other_key = _key()
    other = _cert("/C=DE/O=Example/CN=Example CA", other_key, ca=True)  # same name, other key
    cert = _cert("/C=DE/O=Example/CN=gw1", good.key, issuer=other, issuer_key=other_key)
    good.paths.cert_file("gw1").write_bytes(_pem(cert))
    results = run_checks(good.session, good.paths, now=NOW)
    assert _failing(results) == ["auth-cert-chain"]
    assert "swcmp session set gw1 --trust" in _by_name(results)["auth-cert-chain"].fix


def test_chain_through_stored_intermediate(good: Setup) -> None:
    sub_key = _key()
    sub = _cert(
        "/C=DE/O=Example/CN=Issuing CA", sub_key, issuer=good.ca, issuer_key=good.ca_key, ca=True
    )
    cert = _cert("/C=DE/O=Example/CN=gw1", good.key, issuer=sub, issuer_key=sub_key)
    good.paths.cert_file("gw1").write_bytes(_pem(cert))
    results = run_checks(good.session, good.paths, now=NOW)
    assert _failing(results) == ["auth-cert-chain"]  # intermediate not known yet
    good.paths.ca_cert_file("gw1", 1).write_bytes(_pem(sub))
    results = run_checks(good.session, good.paths, now=NOW)
    assert all_passed(results)
    assert "via /C=DE/O=Example/CN=Issuing CA" in _by_name(results)["auth-cert-chain"].detail


def test_expired_certificate(good: Setup) -> None:
    later = NOW + timedelta(days=400)
    results = run_checks(good.session, good.paths, now=later)
    assert "auth-cert-validity" in _failing(results)
    result = _by_name(results)["auth-cert-validity"]
    assert "expired" in result.detail
    assert "swcmp request initial gw1" in result.fix


def test_not_yet_valid_certificate(good: Setup) -> None:
    results = run_checks(good.session, good.paths, now=NOW - timedelta(days=30))
    assert "auth-cert-validity" in _failing(results)
    assert "clock" in _by_name(results)["auth-cert-validity"].detail


def test_expired_trust_anchor(good: Setup, tmp_path: Path) -> None:
    old = _cert("/CN=Old CA", _key(), ca=True, not_after=NOW - timedelta(days=1))
    (tmp_path / "old.pem").write_bytes(_pem(old))
    session = set_fields(good.session, {"trust": [str(tmp_path / "ca.pem"), "/dev/null"]})
    assert "trust-anchor" in _failing(run_checks(session, good.paths, now=NOW))
    session = set_fields(good.session, {"trust": [str(tmp_path / "old.pem")]})
    results = run_checks(session, good.paths, now=NOW)
    assert "expired" in _by_name(results)["trust-anchor"].detail


def test_trust_bundle_with_several_certificates(good: Setup, tmp_path: Path) -> None:
    other = _cert("/CN=Other Root", _key(), ca=True)
    (tmp_path / "bundle.pem").write_bytes(_pem(other) + _pem(good.ca))
    session = set_fields(good.session, {"trust": [str(tmp_path / "bundle.pem")]})
    assert all_passed(run_checks(session, good.paths, now=NOW))


def test_key_pair_missing(good: Setup) -> None:
    session = set_fields(good.session, {"key": "other"})
    results = run_checks(session, good.paths, now=NOW)
    # auth-cert-key also fails: the default auth key is the session key.
    assert _failing(results) == ["auth-cert-key", "key-pair"]
    assert "does not exist" in _by_name(results)["key-pair"].detail


def test_key_pair_readable_by_others(good: Setup) -> None:
    good.paths.key_file("gw1").chmod(0o644)
    results = run_checks(good.session, good.paths, now=NOW)
    assert _failing(results) == ["key-pair"]
    assert _by_name(results)["key-pair"].fix == f"chmod 600 {good.paths.key_file('gw1')}"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_mac_secret_mode(good: Setup, mode: int) -> None:
    good.secret.chmod(mode)
    results = run_checks(good.session, good.paths, now=NOW)
    assert _failing(results) == ["mac-secret"]
    assert f"{mode:04o}" in _by_name(results)["mac-secret"].detail
    assert _by_name(results)["mac-secret"].fix.startswith("chmod 600 ")


def test_mac_secret_0400_is_fine(good: Setup) -> None:
    good.secret.chmod(0o400)
    assert all_passed(run_checks(good.session, good.paths, now=NOW))


def test_mac_secret_missing_or_empty(good: Setup) -> None:
    good.secret.write_bytes(b"")
    results = run_checks(good.session, good.paths, now=NOW)
    assert _failing(results) == ["mac-secret"]
    assert "empty" in _by_name(results)["mac-secret"].detail
    os.unlink(good.secret)
    results = run_checks(good.session, good.paths, now=NOW)
    assert "does not exist" in _by_name(results)["mac-secret"].detail


def test_secret_never_in_results(good: Setup) -> None:
    good.secret.write_bytes(b"TOPSECRET-VALUE")
    good.secret.chmod(0o644)
    for result in run_checks(good.session, good.paths, now=NOW):
        assert "TOPSECRET" not in result.detail + result.fix


def test_extra_checks_appended_in_order(good: Setup) -> None:
    seen: list[tuple[str, datetime]] = []

    def strongswan_binding(session: Session, paths: Paths, now: datetime) -> CheckResult:
        seen.append((session.name, now))
        return CheckResult("strongswan-binding", "fail", "connection site-a not loaded", "fix")

    def broken(session: Session, paths: Paths, now: datetime) -> CheckResult:
        raise ConfigError("vici socket missing")

    results = run_checks(
        good.session, good.paths, now=NOW, extra_checks=[strongswan_binding, broken]
    )
    assert [r.name for r in results] == [*MAC_ORDER, "strongswan-binding", "broken"]
    assert seen == [("gw1", NOW)]
    assert _failing(results) == ["strongswan-binding", "broken"]
    assert "vici socket missing" in _by_name(results)["broken"].detail
    assert {r.level for r in failed(results)} == {"fail"}


def test_warnings_do_not_block(good: Setup) -> None:
    def charon_down(session: Session, paths: Paths, now: datetime) -> CheckResult:
        return CheckResult("strongswan", "warn", "charon is not reachable", "start charon")

    results = run_checks(good.session, good.paths, now=NOW, extra_checks=[charon_down])
    assert all_passed(results) and failed(results) == []
    assert [r.name for r in warnings(results)] == ["strongswan"]
    assert _by_name(results)["strongswan"].ok  # ok means: does not block auto-update
    # every built-in item is a fail when it does not pass, never a warning
    os.unlink(good.paths.key_file("gw1"))
    results = run_checks(good.session, good.paths, now=NOW)
    assert {r.name: r.level for r in results if r.level != "ok"} == {
        "auth-cert-key": "fail", "key-pair": "fail"}
    with pytest.raises(ValueError, match="level"):
        CheckResult("x", "maybe", "")  # type: ignore[arg-type]


def test_naive_now_refused(good: Setup) -> None:
    with pytest.raises(ValueError):
        run_checks(good.session, good.paths, now=datetime(2025, 1, 1))


def test_no_certificate_yet_points_to_initial_request(good: Setup) -> None:
    os.unlink(good.paths.cert_file("gw1"))
    results = run_checks(good.session, good.paths, now=NOW)
    # What the first request makes is pending before it: not a failure, but not ok either.
    assert _failing(results) == []
    pending = [r.name for r in results if r.level == "pending"]
    assert pending == ["auth-cert", "auth-cert-key", "auth-cert-chain", "auth-cert-validity"]
    assert not any(r.ok for r in results if r.level == "pending")
    assert "swcmp request initial gw1" in _by_name(results)["auth-cert"].fix


def test_lower_layers_import_no_cli_transport_or_protocol() -> None:
    # names, fsutil, the session modules and checks sit below the CLI, HTTP, VICI and CMP.
    code = (
        "import sys; import swcmp.checks, swcmp.session, swcmp.sessionfile, swcmp.fsutil, "
        "swcmp.names; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('click', 'pyasn1', 'vici') "
        "or m.startswith(('swcmp.cmp.codec', 'swcmp.cmp.client', 'swcmp.cmp.transport', "
        "'swcmp.cmp.protection', 'swcmp.strongswan', 'swcmp.cli'))]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
