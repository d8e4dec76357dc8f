"""swcmp's OID table against what the RFCs' ASN.1 modules (pyasn1-alt-modules) define."""

from __future__ import annotations

import importlib

import pytest
from cryptography.x509.oid import (
    CRLEntryExtensionOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    SignatureAlgorithmOID,
)

from swcmp.cmp import oids


def _constants() -> dict[str, str]:
    return {k: v for k, v in vars(oids).items() if k.isupper() and isinstance(v, str)}


def test_every_oid_is_the_one_pyasn1_alt_modules_defines() -> None:
    # swcmp does not import the library at run time (its start-up cost); this is where
    # each constant is held to the library's transcription of the RFC modules.
    assert set(oids.LIBRARY_NAMES) == set(_constants()), "a constant without its library name"
    for name, value in _constants().items():
        module, attr = oids.LIBRARY_NAMES[name].split(".")
        lib = getattr(importlib.import_module(f"pyasn1_alt_modules.{module}"), attr)
        assert value == str(lib), f"{name} = {value}, but {oids.LIBRARY_NAMES[name]} = {lib}"


def test_the_check_sees_a_wrong_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oids, "IT_ROOT_CA_CERT", oids.IT_ROOT_CA_KEY_UPDATE)
    with pytest.raises(AssertionError, match="IT_ROOT_CA_CERT"):
        test_every_oid_is_the_one_pyasn1_alt_modules_defines()


def test_root_ca_update_types_follow_rfc9480() -> None:
    # RFC 9480 2.4 / Appendix A: id-it-rootCaKeyUpdate is id-it 18, id-it-rootCaCert id-it 20.
    assert oids.IT_ROOT_CA_KEY_UPDATE.endswith(".4.18")
    assert oids.IT_ROOT_CA_CERT.endswith(".4.20")
    assert oids.IT_CA_CERTS.endswith(".4.17")


def test_values_agree_with_cryptography() -> None:
    # A second, independent transcription of the same registries.
    assert SignatureAlgorithmOID.RSA_WITH_SHA256.dotted_string == oids.SHA256_WITH_RSA
    assert SignatureAlgorithmOID.RSA_WITH_SHA1.dotted_string == oids.SHA1_WITH_RSA
    assert SignatureAlgorithmOID.RSASSA_PSS.dotted_string == oids.RSASSA_PSS
    assert SignatureAlgorithmOID.ECDSA_WITH_SHA384.dotted_string == oids.ECDSA_SHA384
    assert SignatureAlgorithmOID.ED25519.dotted_string == oids.ED25519
    assert SignatureAlgorithmOID.ED448.dotted_string == oids.ED448
    assert ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string == oids.SUBJECT_ALT_NAME
    assert CRLEntryExtensionOID.CRL_REASON.dotted_string == oids.CRL_REASON
    assert oids.KP_CMC_RA.endswith(".3.28") and oids.KP_CMC_CA.endswith(".3.27")
    kp_arc = ExtendedKeyUsageOID.SERVER_AUTH.dotted_string.rsplit(".", 1)[0]
    assert oids.KP_CMC_RA.rsplit(".", 1)[0] == kp_arc
    assert len(set(_constants().values())) == len(_constants()), "two names share one OID"


def test_crl_reason_names_agree_with_cryptography() -> None:
    # The names `swcmp request revoke --reason` takes: RFC 5280 5.3.1, as pyasn1-alt-modules
    # and cryptography each transcribe them (value 7 is unused in the RFC).
    from cryptography import x509

    from swcmp.cmp.codec import CRL_REASONS

    assert CRL_REASONS["superseded"] == 4 and CRL_REASONS["keyCompromise"] == 1
    assert 7 not in CRL_REASONS.values()
    assert set(CRL_REASONS) == {f.value for f in x509.ReasonFlags}
