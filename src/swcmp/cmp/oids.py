"""Object identifiers swcmp uses, as dotted strings.

Every value comes from pyasn1-alt-modules, which transcribes the RFCs' ASN.1 modules;
none is typed here by hand (a swap of two of them once went unnoticed because swcmp's
client and its test CA shared the same typo). tests/test_oids.py checks the table.
"""

from __future__ import annotations

from pyasn1_alt_modules import (
    rfc3279,
    rfc3370,
    rfc4055,
    rfc4211,
    rfc5280,
    rfc5480,
    rfc6402,
    rfc8018,
    rfc8410,
    rfc9480,
    rfc9481,
)

# Protection and MAC (RFC 4210 5.1.3.1, RFC 9481)
PASSWORD_BASED_MAC = str(rfc9480.id_PasswordBasedMac)
PBMAC1 = str(rfc8018.id_PBMAC1)
PBKDF2 = str(rfc8018.id_PBKDF2)
HMAC_SHA1 = str(rfc3370.hMAC_SHA1)  # hmac-sha1 from RFC 2202's arc, what OpenSSL sends
HMAC_WITH_SHA1 = str(rfc8018.id_hmacWithSHA1)
HMAC_WITH_SHA256 = str(rfc8018.id_hmacWithSHA256)
HMAC_WITH_SHA384 = str(rfc8018.id_hmacWithSHA384)
HMAC_WITH_SHA512 = str(rfc8018.id_hmacWithSHA512)
SHA1 = str(rfc3279.id_sha1)
SHA256 = str(rfc4055.id_sha256)
SHA384 = str(rfc4055.id_sha384)
SHA512 = str(rfc4055.id_sha512)
SHAKE256 = str(rfc9481.id_shake256)

# Signatures
RSA_ENCRYPTION = str(rfc3279.rsaEncryption)
SHA1_WITH_RSA = str(rfc3279.sha1WithRSAEncryption)
SHA256_WITH_RSA = str(rfc4055.sha256WithRSAEncryption)
SHA384_WITH_RSA = str(rfc4055.sha384WithRSAEncryption)
SHA512_WITH_RSA = str(rfc4055.sha512WithRSAEncryption)
RSASSA_PSS = str(rfc4055.id_RSASSA_PSS)
MGF1 = str(rfc4055.id_mgf1)
ECDSA_SHA256 = str(rfc5480.ecdsa_with_SHA256)
ECDSA_SHA384 = str(rfc5480.ecdsa_with_SHA384)
ECDSA_SHA512 = str(rfc5480.ecdsa_with_SHA512)
ED25519 = str(rfc8410.id_Ed25519)
ED448 = str(rfc8410.id_Ed448)

# CRMF (RFC 4211)
REG_CTRL_OLD_CERT_ID = str(rfc4211.id_regCtrl_oldCertID)

# InfoTypeAndValue types (RFC 4210, RFC 9480 2.4 and 2.9)
IT_IMPLICIT_CONFIRM = str(rfc9480.id_it_implicitConfirm)
IT_CONFIRM_WAIT_TIME = str(rfc9480.id_it_confirmWaitTime)
IT_CA_CERTS = str(rfc9480.id_it_caCerts)
IT_ROOT_CA_KEY_UPDATE = str(rfc9480.id_it_rootCaKeyUpdate)
IT_ROOT_CA_CERT = str(rfc9480.id_it_rootCaCert)
IT_CERT_PROFILE = str(rfc9480.id_it_certProfile)
IT_CURRENT_CRL = str(rfc9480.id_it_currentCRL)

# Extended key usages of CMP servers (RFC 6402 2.10)
KP_CMC_CA = str(rfc6402.id_kp_cmcCA)
KP_CMC_RA = str(rfc6402.id_kp_cmcRA)

# Extensions
SUBJECT_ALT_NAME = str(rfc5280.id_ce_subjectAltName)
CRL_REASON = str(rfc5280.id_ce_cRLReasons)
