"""Object identifiers swcmp uses, as dotted strings.

Every value is the one pyasn1-alt-modules (the RFCs' ASN.1 modules, transcribed and
maintained) defines under the name in ``LIBRARY_NAMES``; tests/unit/test_oids.py checks
each against the library, which is imported by the tests only: building its module tree
would cost every swcmp process several hundred milliseconds at start-up. (A swap of two
OIDs once went unnoticed because swcmp's client and its test CA shared the same typo;
the test is what keeps them right.)
"""

from __future__ import annotations

# Protection and MAC (RFC 4210 5.1.3.1, RFC 9481)
PASSWORD_BASED_MAC = "1.2.840.113533.7.66.13"
PBMAC1 = "1.2.840.113549.1.5.14"
PBKDF2 = "1.2.840.113549.1.5.12"
HMAC_SHA1 = "1.3.6.1.5.5.8.1.2"  # hmac-sha1 from RFC 2202's arc, what OpenSSL sends
HMAC_WITH_SHA1 = "1.2.840.113549.2.7"
HMAC_WITH_SHA256 = "1.2.840.113549.2.9"
HMAC_WITH_SHA384 = "1.2.840.113549.2.10"
HMAC_WITH_SHA512 = "1.2.840.113549.2.11"
SHA1 = "1.3.14.3.2.26"
SHA256 = "2.16.840.1.101.3.4.2.1"
SHA384 = "2.16.840.1.101.3.4.2.2"
SHA512 = "2.16.840.1.101.3.4.2.3"
SHAKE256 = "2.16.840.1.101.3.4.2.12"

# Signatures
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
SHA1_WITH_RSA = "1.2.840.113549.1.1.5"
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
SHA384_WITH_RSA = "1.2.840.113549.1.1.12"
SHA512_WITH_RSA = "1.2.840.113549.1.1.13"
RSASSA_PSS = "1.2.840.113549.1.1.10"
MGF1 = "1.2.840.113549.1.1.8"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
ECDSA_SHA384 = "1.2.840.10045.4.3.3"
ECDSA_SHA512 = "1.2.840.10045.4.3.4"
ED25519 = "1.3.101.112"
ED448 = "1.3.101.113"

# Public keys (RFC 5480)
EC_PUBLIC_KEY = "1.2.840.10045.2.1"

# CRMF (RFC 4211) and the keySpec controls of a certificate request template (RFC 9480 2.9)
REG_CTRL_OLD_CERT_ID = "1.3.6.1.5.5.7.5.1.5"
REG_CTRL_ALG_ID = "1.3.6.1.5.5.7.5.1.11"
REG_CTRL_RSA_KEY_LEN = "1.3.6.1.5.5.7.5.1.12"

# InfoTypeAndValue types (RFC 4210, RFC 9480 2.4 and 2.9)
IT_IMPLICIT_CONFIRM = "1.3.6.1.5.5.7.4.13"
IT_CONFIRM_WAIT_TIME = "1.3.6.1.5.5.7.4.14"
IT_CA_CERTS = "1.3.6.1.5.5.7.4.17"
IT_ROOT_CA_KEY_UPDATE = "1.3.6.1.5.5.7.4.18"
IT_CERT_REQ_TEMPLATE = "1.3.6.1.5.5.7.4.19"
IT_ROOT_CA_CERT = "1.3.6.1.5.5.7.4.20"
IT_CERT_PROFILE = "1.3.6.1.5.5.7.4.21"
IT_CURRENT_CRL = "1.3.6.1.5.5.7.4.6"
IT_CRL_STATUS_LIST = "1.3.6.1.5.5.7.4.22"
IT_CRLS = "1.3.6.1.5.5.7.4.23"

# Extended key usages of CMP servers (RFC 6402 2.10)
KP_CMC_CA = "1.3.6.1.5.5.7.3.27"
KP_CMC_RA = "1.3.6.1.5.5.7.3.28"

# Extensions
SUBJECT_ALT_NAME = "2.5.29.17"
CRL_REASON = "2.5.29.21"


#: The pyasn1-alt-modules name (module.attribute) each constant must equal.
LIBRARY_NAMES: dict[str, str] = {
    "PASSWORD_BASED_MAC": "rfc9480.id_PasswordBasedMac",
    "PBMAC1": "rfc8018.id_PBMAC1",
    "PBKDF2": "rfc8018.id_PBKDF2",
    "HMAC_SHA1": "rfc3370.hMAC_SHA1",
    "HMAC_WITH_SHA1": "rfc8018.id_hmacWithSHA1",
    "HMAC_WITH_SHA256": "rfc8018.id_hmacWithSHA256",
    "HMAC_WITH_SHA384": "rfc8018.id_hmacWithSHA384",
    "HMAC_WITH_SHA512": "rfc8018.id_hmacWithSHA512",
    "SHA1": "rfc3279.id_sha1",
    "SHA256": "rfc4055.id_sha256",
    "SHA384": "rfc4055.id_sha384",
    "SHA512": "rfc4055.id_sha512",
    "SHAKE256": "rfc9481.id_shake256",
    "RSA_ENCRYPTION": "rfc3279.rsaEncryption",
    "SHA1_WITH_RSA": "rfc3279.sha1WithRSAEncryption",
    "SHA256_WITH_RSA": "rfc4055.sha256WithRSAEncryption",
    "SHA384_WITH_RSA": "rfc4055.sha384WithRSAEncryption",
    "SHA512_WITH_RSA": "rfc4055.sha512WithRSAEncryption",
    "RSASSA_PSS": "rfc4055.id_RSASSA_PSS",
    "MGF1": "rfc4055.id_mgf1",
    "ECDSA_SHA256": "rfc5480.ecdsa_with_SHA256",
    "ECDSA_SHA384": "rfc5480.ecdsa_with_SHA384",
    "ECDSA_SHA512": "rfc5480.ecdsa_with_SHA512",
    "ED25519": "rfc8410.id_Ed25519",
    "ED448": "rfc8410.id_Ed448",
    "EC_PUBLIC_KEY": "rfc5480.id_ecPublicKey",
    "REG_CTRL_OLD_CERT_ID": "rfc4211.id_regCtrl_oldCertID",
    "REG_CTRL_ALG_ID": "rfc9480.id_regCtrl_algId",
    "REG_CTRL_RSA_KEY_LEN": "rfc9480.id_regCtrl_rsaKeyLen",
    "IT_IMPLICIT_CONFIRM": "rfc9480.id_it_implicitConfirm",
    "IT_CONFIRM_WAIT_TIME": "rfc9480.id_it_confirmWaitTime",
    "IT_CA_CERTS": "rfc9480.id_it_caCerts",
    "IT_ROOT_CA_KEY_UPDATE": "rfc9480.id_it_rootCaKeyUpdate",
    "IT_CERT_REQ_TEMPLATE": "rfc9480.id_it_certReqTemplate",
    "IT_ROOT_CA_CERT": "rfc9480.id_it_rootCaCert",
    "IT_CERT_PROFILE": "rfc9480.id_it_certProfile",
    "IT_CURRENT_CRL": "rfc9480.id_it_currentCRL",
    "IT_CRL_STATUS_LIST": "rfc9480.id_it_crlStatusList",
    "IT_CRLS": "rfc9480.id_it_crls",
    "KP_CMC_CA": "rfc6402.id_kp_cmcCA",
    "KP_CMC_RA": "rfc6402.id_kp_cmcRA",
    "SUBJECT_ALT_NAME": "rfc5280.id_ce_subjectAltName",
    "CRL_REASON": "rfc5280.id_ce_cRLReasons",
}
