"""The ASN.1 types swcmp encodes and decodes, and nothing more, as pyasn1 schemas.

Written from the ASN.1 modules of RFC 4210/9480 (CMP, EXPLICIT TAGS), RFC 4211 (CRMF,
IMPLICIT TAGS), RFC 5280, RFC 4055 and RFC 8018. pyasn1-alt-modules transcribes those
modules whole; building its rfc9480 tree costs a renewal process several hundred
milliseconds at start-up, so swcmp carries only what it needs here and the tests
(tests/unit/test_asn1_schema.py) check every type below against pyasn1-alt-modules:
the same component names, types and tags, and DER made with one decodes with the other.

Certificates, CRLs and PKCS#10 requests inside messages are never decoded here:
their slots are open types (``univ.Any``) that keep the received bytes, which
:mod:`swcmp.cmp.der` cuts out and cryptography parses. A few CHOICE slots swcmp
only ever names or passes through (a GeneralName in a header or CertId, encrypted
keys, publication info) are open types as well; the codec checks them by hand.

To add a type: write it from the RFC's module below its neighbours and add it to
``SCHEMA`` in the test with the pyasn1-alt-modules type it must agree with.
"""

# pyasn1 has no type hints: its classes are Any to mypy, and these schemas subclass them.
# mypy: disallow-subclassing-any=False

from __future__ import annotations

from typing import Any

from pyasn1.type import char, constraint, namedtype, namedval, tag, tagmap, univ, useful

from swcmp.cmp import oids

MAX = float("inf")


def _ctx(number: int, constructed: bool) -> tag.Tag:
    return tag.Tag(tag.tagClassContext,
                   tag.tagFormatConstructed if constructed else tag.tagFormatSimple, number)


def explicit(t: Any, number: int) -> Any:
    """``[number] EXPLICIT t``."""
    return t.subtype(explicitTag=_ctx(number, True))


def implicit(t: Any, number: int, constructed: bool = False) -> Any:
    """``[number] IMPLICIT t`` (on a CHOICE or open type this tags it explicitly, as
    X.680 says)."""
    return t.subtype(implicitTag=_ctx(number, constructed))


def _seq(*fields: namedtype.NamedType) -> namedtype.NamedTypes:
    return namedtype.NamedTypes(*fields)


req = namedtype.NamedType
opt = namedtype.OptionalNamedType


def _size1(t: Any) -> Any:
    """SIZE (1..MAX)."""
    return t.subtype(sizeSpec=constraint.ValueSizeConstraint(1, MAX))


# ------------------------------------------------------------------------ RFC 5280


class AlgorithmIdentifier(univ.Sequence):
    componentType = _seq(req("algorithm", univ.ObjectIdentifier()),
                         opt("parameters", univ.Any()))


class AttributeTypeAndValue(univ.Sequence):
    componentType = _seq(req("type", univ.ObjectIdentifier()), req("value", univ.Any()))


class RelativeDistinguishedName(univ.SetOf):
    componentType = AttributeTypeAndValue()
    sizeSpec = constraint.ValueSizeConstraint(1, MAX)


class RDNSequence(univ.SequenceOf):
    componentType = RelativeDistinguishedName()


class Name(univ.Choice):
    componentType = _seq(req("rdnSequence", RDNSequence()))


class SubjectPublicKeyInfo(univ.Sequence):
    componentType = _seq(req("algorithm", AlgorithmIdentifier()),
                         req("subjectPublicKey", univ.BitString()))


class Extension(univ.Sequence):
    componentType = _seq(req("extnID", univ.ObjectIdentifier()),
                         namedtype.DefaultedNamedType("critical", univ.Boolean(False)),
                         req("extnValue", univ.OctetString()))


class Extensions(univ.SequenceOf):
    componentType = Extension()
    sizeSpec = constraint.ValueSizeConstraint(1, MAX)


class Time(univ.Choice):
    componentType = _seq(req("utcTime", useful.UTCTime()),
                         req("generalTime", useful.GeneralizedTime()))


class Version(univ.Integer):
    namedValues = namedval.NamedValues(("v1", 0), ("v2", 1), ("v3", 2))


class CRLReason(univ.Enumerated):
    namedValues = namedval.NamedValues(
        ("unspecified", 0), ("keyCompromise", 1), ("cACompromise", 2),
        ("affiliationChanged", 3), ("superseded", 4), ("cessationOfOperation", 5),
        ("certificateHold", 6), ("removeFromCRL", 8), ("privilegeWithdrawn", 9),
        ("aACompromise", 10))


class Opaque(univ.Any):
    """An open type for a value that is only passed through or cut out as bytes
    (Certificate, CertificateList, GeneralName, EncryptedKey, PKIPublicationInfo).

    Untagged it matches any element, as ``ANY`` does; tagged, only its own tag, so
    that several tagged ones can be alternatives of one CHOICE.
    """

    @property
    def tagMap(self) -> Any:
        if self.tagSet:
            return tagmap.TagMap({self.tagSet: self})
        return univ.Any.tagMap.fget(self)


# ------------------------------------------------------------------------ RFC 4211 (CRMF)


class CertId(univ.Sequence):
    # issuer is a GeneralName; swcmp accepts only a directoryName there (the codec checks).
    componentType = _seq(req("issuer", Opaque()), req("serialNumber", univ.Integer()))


class OptionalValidity(univ.Sequence):
    componentType = _seq(opt("notBefore", implicit(Time(), 0, True)),
                         opt("notAfter", implicit(Time(), 1, True)))


class CertTemplate(univ.Sequence):
    componentType = _seq(
        opt("version", implicit(Version(), 0)),
        opt("serialNumber", implicit(univ.Integer(), 1)),
        opt("signingAlg", implicit(AlgorithmIdentifier(), 2, True)),
        opt("issuer", implicit(Name(), 3, True)),
        opt("validity", implicit(OptionalValidity(), 4, True)),
        opt("subject", implicit(Name(), 5, True)),
        opt("publicKey", implicit(SubjectPublicKeyInfo(), 6, True)),
        opt("issuerUID", implicit(univ.BitString(), 7)),
        opt("subjectUID", implicit(univ.BitString(), 8)),
        opt("extensions", implicit(Extensions(), 9, True)),
    )


class Controls(univ.SequenceOf):
    componentType = AttributeTypeAndValue()
    sizeSpec = constraint.ValueSizeConstraint(1, MAX)


class CertRequest(univ.Sequence):
    componentType = _seq(req("certReqId", univ.Integer()),
                         req("certTemplate", CertTemplate()),
                         opt("controls", Controls()))


class POPOSigningKeyInput(univ.Sequence):
    # authInfo is CHOICE { sender [0] GeneralName, publicKeyMAC PKMACValue }: passed through.
    componentType = _seq(req("authInfo", Opaque()),
                         req("publicKey", SubjectPublicKeyInfo()))


class POPOSigningKey(univ.Sequence):
    componentType = _seq(opt("poposkInput", implicit(POPOSigningKeyInput(), 0, True)),
                         req("algorithmIdentifier", AlgorithmIdentifier()),
                         req("signature", univ.BitString()))


class ProofOfPossession(univ.Choice):
    # keyEncipherment and keyAgreement are POPOPrivKey, a CHOICE swcmp never accepts.
    componentType = _seq(
        req("raVerified", implicit(univ.Null(), 0)),
        req("signature", implicit(POPOSigningKey(), 1, True)),
        req("keyEncipherment", implicit(Opaque(), 2, True)),
        req("keyAgreement", implicit(Opaque(), 3, True)),
    )


class CertReqMsg(univ.Sequence):
    componentType = _seq(req("certReq", CertRequest()),
                         opt("popo", ProofOfPossession()),
                         opt("regInfo", univ.SequenceOf(componentType=AttributeTypeAndValue())))


class CertReqMessages(univ.SequenceOf):
    componentType = CertReqMsg()
    sizeSpec = constraint.ValueSizeConstraint(1, MAX)


# ------------------------------------------------------------------------ RFC 4210 / 9480 (CMP)


class PKIFreeText(univ.SequenceOf):
    componentType = char.UTF8String()
    sizeSpec = constraint.ValueSizeConstraint(1, MAX)


class PKIStatus(univ.Integer):
    namedValues = namedval.NamedValues(
        ("accepted", 0), ("grantedWithMods", 1), ("rejection", 2), ("waiting", 3),
        ("revocationWarning", 4), ("revocationNotification", 5), ("keyUpdateWarning", 6))


class PKIFailureInfo(univ.BitString):
    """Named bits are not needed: swcmp reads and writes failInfo by bit number."""


class PKIStatusInfo(univ.Sequence):
    componentType = _seq(req("status", PKIStatus()),
                         opt("statusString", PKIFreeText()),
                         opt("failInfo", PKIFailureInfo()))


class InfoTypeAndValue(univ.Sequence):
    componentType = _seq(req("infoType", univ.ObjectIdentifier()),
                         opt("infoValue", univ.Any()))


class PKIHeader(univ.Sequence):
    # sender and recipient are GeneralNames: open here, read by the codec (a
    # directoryName, or no name).
    componentType = _seq(
        req("pvno", univ.Integer(namedValues=namedval.NamedValues(
            ("cmp1999", 1), ("cmp2000", 2), ("cmp2021", 3)))),
        req("sender", Opaque()),
        req("recipient", Opaque()),
        opt("messageTime", explicit(useful.GeneralizedTime(), 0)),
        opt("protectionAlg", explicit(AlgorithmIdentifier(), 1)),
        opt("senderKID", explicit(univ.OctetString(), 2)),
        opt("recipKID", explicit(univ.OctetString(), 3)),
        opt("transactionID", explicit(univ.OctetString(), 4)),
        opt("senderNonce", explicit(univ.OctetString(), 5)),
        opt("recipNonce", explicit(univ.OctetString(), 6)),
        opt("freeText", explicit(PKIFreeText(), 7)),
        opt("generalInfo", explicit(_size1(univ.SequenceOf(componentType=InfoTypeAndValue())),
                                    8)),
    )


class CertOrEncCert(univ.Choice):
    componentType = _seq(req("certificate", explicit(Opaque(), 0)),
                         req("encryptedCert", explicit(Opaque(), 1)))


class CertifiedKeyPair(univ.Sequence):
    componentType = _seq(req("certOrEncCert", CertOrEncCert()),
                         opt("privateKey", explicit(Opaque(), 0)),
                         opt("publicationInfo", explicit(Opaque(), 1)))


class CertResponse(univ.Sequence):
    componentType = _seq(req("certReqId", univ.Integer()),
                         req("status", PKIStatusInfo()),
                         opt("certifiedKeyPair", CertifiedKeyPair()),
                         opt("rspInfo", univ.OctetString()))


class CertRepMessage(univ.Sequence):
    componentType = _seq(
        opt("caPubs", explicit(_size1(univ.SequenceOf(componentType=Opaque())), 1)),
        req("response", univ.SequenceOf(componentType=CertResponse())),
    )


class CertStatus(univ.Sequence):
    componentType = _seq(req("certHash", univ.OctetString()),
                         req("certReqId", univ.Integer()),
                         opt("statusInfo", PKIStatusInfo()),
                         opt("hashAlg", explicit(AlgorithmIdentifier(), 0)))


class CertConfirmContent(univ.SequenceOf):
    componentType = CertStatus()


class PollReqEntry(univ.Sequence):
    componentType = _seq(req("certReqId", univ.Integer()))


class PollReqContent(univ.SequenceOf):
    componentType = PollReqEntry()


class PollRepEntry(univ.Sequence):
    componentType = _seq(req("certReqId", univ.Integer()),
                         req("checkAfter", univ.Integer()),
                         opt("reason", PKIFreeText()))


class PollRepContent(univ.SequenceOf):
    componentType = PollRepEntry()


class GenMsgContent(univ.SequenceOf):
    componentType = InfoTypeAndValue()


class RevDetails(univ.Sequence):
    componentType = _seq(req("certDetails", CertTemplate()),
                         opt("crlEntryDetails", Extensions()))


class RevReqContent(univ.SequenceOf):
    componentType = RevDetails()


class RevRepContent(univ.Sequence):
    componentType = _seq(
        req("status", _size1(univ.SequenceOf(componentType=PKIStatusInfo()))),
        opt("revCerts", explicit(_size1(univ.SequenceOf(componentType=CertId())), 0)),
        opt("crls", explicit(_size1(univ.SequenceOf(componentType=Opaque())), 1)),
    )


class ErrorMsgContent(univ.Sequence):
    componentType = _seq(req("pKIStatusInfo", PKIStatusInfo()),
                         opt("errorCode", univ.Integer()),
                         opt("errorDetails", PKIFreeText()))


class CertProfileValue(univ.SequenceOf):
    componentType = char.UTF8String()
    sizeSpec = constraint.ValueSizeConstraint(1, MAX)


class CertReqTemplateContent(univ.Sequence):
    """The value of id-it-certReqTemplate in a genp (RFC 9480 2.9, RFC 9483 4.3.3)."""

    componentType = _seq(req("certTemplate", CertTemplate()),
                         opt("keySpec", Controls()))


class RsaKeyLenCtrl(univ.Integer):
    """The value of an id-regCtrl-rsaKeyLen control: an RSA modulus length in bits."""

    subtypeSpec = constraint.ValueRangeConstraint(1, MAX)


class PBMParameter(univ.Sequence):
    componentType = _seq(req("salt", univ.OctetString().subtype(
                             subtypeSpec=constraint.ValueSizeConstraint(0, 128))),
                         req("owf", AlgorithmIdentifier()),
                         req("iterationCount", univ.Integer()),
                         req("mac", AlgorithmIdentifier()))


#: PKIBody alternatives swcmp decodes, by context tag number (RFC 4210 5.1.2; the
#: tags are explicit). A PKIBody is built and read by its tag in the codec, so an
#: alternative swcmp does not handle needs no schema. p10cr holds a PKCS#10 request,
#: which is kept as bytes like a certificate.
BODY_CONTENT: dict[str, Any] = {
    "ir": CertReqMessages, "ip": CertRepMessage, "cr": CertReqMessages,
    "cp": CertRepMessage, "p10cr": Opaque, "kur": CertReqMessages, "kup": CertRepMessage,
    "rr": RevReqContent, "rp": RevRepContent, "pkiconf": univ.Null, "genm": GenMsgContent,
    "genp": GenMsgContent, "error": ErrorMsgContent, "certConf": CertConfirmContent,
    "pollReq": PollReqContent, "pollRep": PollRepContent,
}


# ------------------------------------------------------------------------ RFC 4055, RFC 8018


class RSASSAPSSParams(univ.Sequence):
    """RSASSA-PSS-params. The defaults of hashAlgorithm and maskGenAlgorithm (SHA-1)
    are the reader's to apply; absent, they read as not present."""

    componentType = _seq(
        opt("hashAlgorithm", explicit(AlgorithmIdentifier(), 0)),
        opt("maskGenAlgorithm", explicit(AlgorithmIdentifier(), 1)),
        namedtype.DefaultedNamedType("saltLength", explicit(univ.Integer(20), 2)),
        namedtype.DefaultedNamedType("trailerField", explicit(univ.Integer(1), 3)),
    )


class PBKDF2Salt(univ.Choice):
    componentType = _seq(req("specified", univ.OctetString()),
                         req("otherSource", AlgorithmIdentifier()))


def _algorithm(oid: str, params_der: bytes | None = None) -> AlgorithmIdentifier:
    alg = AlgorithmIdentifier()
    alg["algorithm"] = univ.ObjectIdentifier(oid)
    if params_der is not None:
        alg["parameters"] = univ.Any(params_der)
    return alg


class PBKDF2Params(univ.Sequence):
    """PBKDF2-params; an absent prf reads as its default, hmacWithSHA1 (NULL parameters)."""

    componentType = _seq(
        req("salt", PBKDF2Salt()),
        req("iterationCount", univ.Integer().subtype(
            subtypeSpec=constraint.ValueRangeConstraint(1, MAX))),
        opt("keyLength", univ.Integer().subtype(
            subtypeSpec=constraint.ValueRangeConstraint(1, MAX))),
        namedtype.DefaultedNamedType("prf", _algorithm(oids.HMAC_WITH_SHA1, b"\x05\x00")),
    )


class PBMAC1Params(univ.Sequence):
    componentType = _seq(req("keyDerivationFunc", AlgorithmIdentifier()),
                         req("messageAuthScheme", AlgorithmIdentifier()))
