"""swcmp's own ASN.1 schemas (swcmp.cmp.asn1) against pyasn1-alt-modules, the maintained
transcription of the RFCs' ASN.1 modules, which swcmp imports only here: every type
has the same component names, kinds, tags, optionality, defaults and constraints, and
DER made with one decodes with the other to the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import base, constraint, namedtype, univ
from pyasn1_alt_modules import rfc4055, rfc4211, rfc5280, rfc8018, rfc9480

from swcmp.cmp import asn1, codec, der
from testpaths import DATA

#: Each type of swcmp.cmp.asn1 and the library type it must agree with.
SCHEMA: list[tuple[Any, Any]] = [
    (asn1.AlgorithmIdentifier, rfc5280.AlgorithmIdentifier),
    (asn1.AttributeTypeAndValue, rfc5280.AttributeTypeAndValue),
    (asn1.RelativeDistinguishedName, rfc5280.RelativeDistinguishedName),
    (asn1.RDNSequence, rfc5280.RDNSequence),
    (asn1.Name, rfc5280.Name),
    (asn1.SubjectPublicKeyInfo, rfc5280.SubjectPublicKeyInfo),
    (asn1.Extension, rfc5280.Extension),
    (asn1.Extensions, rfc5280.Extensions),
    (asn1.Time, rfc5280.Time),
    (asn1.CRLReason, rfc5280.CRLReason),
    (asn1.Version, rfc5280.Version),
    (asn1.CertId, rfc4211.CertId),
    (asn1.OptionalValidity, rfc4211.OptionalValidity),
    (asn1.CertTemplate, rfc4211.CertTemplate),
    (asn1.Controls, rfc4211.Controls),
    (asn1.CertRequest, rfc4211.CertRequest),
    (asn1.POPOSigningKeyInput, rfc4211.POPOSigningKeyInput),
    (asn1.POPOSigningKey, rfc4211.POPOSigningKey),
    (asn1.ProofOfPossession, rfc4211.ProofOfPossession),
    (asn1.CertReqMsg, rfc4211.CertReqMsg),
    (asn1.CertReqMessages, rfc4211.CertReqMessages),
    (asn1.PKIFreeText, rfc9480.PKIFreeText),
    (asn1.PKIStatus, rfc9480.PKIStatus),
    (asn1.PKIFailureInfo, rfc9480.PKIFailureInfo),
    (asn1.PKIStatusInfo, rfc9480.PKIStatusInfo),
    (asn1.InfoTypeAndValue, rfc9480.InfoTypeAndValue),
    (asn1.PKIHeader, rfc9480.PKIHeader),
    (asn1.CertOrEncCert, rfc9480.CertOrEncCert),
    (asn1.CertifiedKeyPair, rfc9480.CertifiedKeyPair),
    (asn1.CertResponse, rfc9480.CertResponse),
    (asn1.CertRepMessage, rfc9480.CertRepMessage),
    (asn1.CertStatus, rfc9480.CertStatus),
    (asn1.CertConfirmContent, rfc9480.CertConfirmContent),
    (asn1.PollReqContent, rfc9480.PollReqContent),
    (asn1.PollRepContent, rfc9480.PollRepContent),
    (asn1.GenMsgContent, rfc9480.GenMsgContent),
    (asn1.GenMsgContent, rfc9480.GenRepContent),
    (asn1.RevDetails, rfc9480.RevDetails),
    (asn1.RevReqContent, rfc9480.RevReqContent),
    (asn1.RevRepContent, rfc9480.RevRepContent),
    (asn1.ErrorMsgContent, rfc9480.ErrorMsgContent),
    (asn1.CertProfileValue, rfc9480.CertProfileValue),
    (asn1.CertReqTemplateContent, rfc9480.CertReqTemplateContent),
    (asn1.CertReqTemplateContent, rfc9480.CertReqTemplateValue),
    (asn1.RsaKeyLenCtrl, rfc9480.RsaKeyLenCtrl),
    (asn1.PBMParameter, rfc9480.PBMParameter),
    (asn1.RSASSAPSSParams, rfc4055.RSASSA_PSS_params),
    (asn1.PBKDF2Params, rfc8018.PBKDF2_params),
    (asn1.PBMAC1Params, rfc8018.PBMAC1_params),
]

#: What an open slot (asn1.Opaque) may stand for: values swcmp passes through as bytes.
OPAQUE_FOR = {"Certificate", "CMPCertificate", "CertificateList", "GeneralName",
              "EncryptedKey", "PKIPublicationInfo", "POPOPrivKey", "CertificationRequest",
              "Choice", "Any"}


def _kind(t: Any) -> type:
    """The pyasn1 base type (Sequence, Integer, ...) a schema type derives from."""
    for cls in type(t).__mro__:
        if cls.__module__.startswith("pyasn1.type."):
            return cls
    raise AssertionError(t)


def _constraints(t: Any) -> set[str]:
    """The single constraints on a type (its subtypeSpec and sizeSpec, flattened): the
    library puts a SIZE on a SEQUENCE OF in either."""
    out: set[str] = set()
    todo = [getattr(t, "subtypeSpec", None), getattr(t, "sizeSpec", None)]
    while todo:
        c = todo.pop()
        if isinstance(c, constraint.ConstraintsIntersection):
            todo.extend(c)
        elif c is not None:
            out.add(repr(c))
    return out


def compare(ours: Any, theirs: Any, path: str, problems: list[str]) -> None:
    if isinstance(ours, asn1.Opaque):
        if type(theirs).__name__ not in OPAQUE_FOR and _kind(theirs).__name__ not in OPAQUE_FOR:
            problems.append(f"{path}: open slot for {type(theirs).__name__}")
        outer = ours.tagSet[-1:] if ours.tagSet else ()
        if outer and tuple(theirs.tagSet[-1:]) != tuple(outer):
            problems.append(f"{path}: tag {ours.tagSet} != {theirs.tagSet}")
        if not ours.tagSet and theirs.tagSet and _kind(theirs) is not univ.Sequence:
            problems.append(f"{path}: untagged open slot for a tagged {theirs.tagSet}")
        return
    if _kind(ours) is not _kind(theirs):
        problems.append(f"{path}: {_kind(ours).__name__} != {_kind(theirs).__name__}")
        return
    if ours.tagSet != theirs.tagSet:
        problems.append(f"{path}: tags {ours.tagSet} != {theirs.tagSet}")
    if _constraints(ours) != _constraints(theirs):
        problems.append(f"{path}: constraints {_constraints(ours)} != {_constraints(theirs)}")
    named = getattr(theirs, "namedValues", None)
    if (named is not None and _kind(ours) is not univ.BitString
            and dict(ours.namedValues.items()) != dict(named.items())):
        problems.append(f"{path}: named values differ")
    if isinstance(ours, univ.SequenceOf | univ.SetOf):
        compare(ours.componentType, theirs.componentType, f"{path}[]", problems)
    elif isinstance(ours, univ.Sequence | univ.Set | univ.Choice):
        a, b = ours.componentType, theirs.componentType
        if [n.name for n in a.namedTypes] != [n.name for n in b.namedTypes]:
            problems.append(f"{path}: components {[n.name for n in a.namedTypes]} != "
                            f"{[n.name for n in b.namedTypes]}")
            return
        for na, nb in zip(a.namedTypes, b.namedTypes, strict=True):
            where = f"{path}.{na.name}"
            if (na.isOptional, na.isDefaulted) != (nb.isOptional, nb.isDefaulted):
                problems.append(f"{where}: optional/default differ")
            if na.isDefaulted and encoder.encode(na.asn1Object) != encoder.encode(nb.asn1Object):
                problems.append(f"{where}: default values differ")
            compare(na.asn1Object, nb.asn1Object, where, problems)
    elif isinstance(ours, base.SimpleAsn1Type) and ours.isValue != theirs.isValue:
        problems.append(f"{path}: one has a value")


@pytest.mark.parametrize("ours, theirs", SCHEMA, ids=lambda t: getattr(t, "__name__", ""))
def test_type_agrees_with_pyasn1_alt_modules(ours: Any, theirs: Any) -> None:
    problems: list[str] = []
    compare(ours(), theirs(), ours.__name__, problems)
    assert problems == []


def test_the_comparison_sees_a_difference() -> None:
    class Wrong(univ.Sequence):  # CertId with the serial number implicitly tagged
        componentType = namedtype.NamedTypes(
            namedtype.NamedType("issuer", asn1.Opaque()),
            namedtype.NamedType("serialNumber", asn1.implicit(univ.Integer(), 1)))

    class Renamed(univ.Sequence):
        componentType = namedtype.NamedTypes(
            namedtype.NamedType("issuer", asn1.Opaque()),
            namedtype.NamedType("serial", univ.Integer()))

    class OptionalStatus(univ.Sequence):
        componentType = namedtype.NamedTypes(
            namedtype.OptionalNamedType("status", asn1.PKIStatus()),
            namedtype.OptionalNamedType("statusString", asn1.PKIFreeText()),
            namedtype.OptionalNamedType("failInfo", asn1.PKIFailureInfo()))

    for ours, theirs in ((Wrong, rfc4211.CertId), (Renamed, rfc4211.CertId),
                         (OptionalStatus, rfc9480.PKIStatusInfo),
                         (asn1.PKIHeader, rfc9480.ProtectedPart)):
        problems: list[str] = []
        compare(ours(), theirs(), ours.__name__, problems)
        assert problems, ours.__name__


def test_every_type_of_the_module_is_checked() -> None:
    checked = {ours for ours, _ in SCHEMA}
    defined = {v for v in vars(asn1).values()
               if isinstance(v, type) and issubclass(v, base.Asn1Type)
               and v.__module__ == asn1.__name__}
    # the entries of SEQUENCE OFs and CHOICEs, checked inside the types that hold them
    defined -= {asn1.Opaque, asn1.PollReqEntry, asn1.PollRepEntry, asn1.PBKDF2Salt}
    assert defined - checked == set()


# ------------------------------------------------------------------ DER from one, read by the other

def _parts(data: bytes) -> tuple[bytes, str, bytes]:
    header, body = der.single(data).children()[:2]
    kind = codec.BODY_TAGS[body.tag - 0xA0]
    return header.raw, kind, body.children()[0].raw


@pytest.mark.parametrize("path", sorted(DATA.glob("*.der")), ids=lambda p: p.stem)
def test_messages_decode_alike_with_both_schemas(path: Path) -> None:
    header, kind, content = _parts(path.read_bytes())
    # the library's content type for this alternative, without the body's tag
    theirs_body = type(rfc9480.PKIBody().componentType[kind].asn1Object)()
    pairs = [(asn1.PKIHeader(), rfc9480.PKIHeader(), header)]
    if kind in asn1.BODY_CONTENT and kind != "p10cr":
        pairs.append((asn1.BODY_CONTENT[kind](), theirs_body, content))
    for ours, theirs, data in pairs:
        a, rest_a = decoder.decode(data, asn1Spec=ours)
        b, rest_b = decoder.decode(data, asn1Spec=theirs)
        assert rest_a == rest_b == b""
        mine = encoder.encode(a)
        assert mine == data == encoder.encode(b)
        # what swcmp's schema encodes, the library's decodes to the same bytes, and back
        again, _ = decoder.decode(mine, asn1Spec=type(theirs)())
        assert encoder.encode(again) == data
        back, _ = decoder.decode(encoder.encode(again), asn1Spec=type(ours)())
        assert encoder.encode(back) == data


def test_parameters_built_by_swcmp_read_by_the_library() -> None:
    from swcmp.cmp import oids

    pbm = codec.encode_pbm_params(codec.PbmFields(b"salt", oids.SHA256, 1000,
                                                  oids.HMAC_WITH_SHA256))
    obj, _ = decoder.decode(pbm, asn1Spec=rfc9480.PBMParameter())
    assert (bytes(obj["salt"]), int(obj["iterationCount"])) == (b"salt", 1000)
    assert str(obj["mac"]["algorithm"]) == oids.HMAC_WITH_SHA256
    pss = codec.encode_pss_params(oids.SHA384, 48)
    obj, _ = decoder.decode(pss, asn1Spec=rfc4055.RSASSA_PSS_params())
    assert str(obj["hashAlgorithm"]["algorithm"]) == oids.SHA384
    assert int(obj["saltLength"]) == 48
    assert codec.decode_pss_params(encoder.encode(obj)) == (oids.SHA384, oids.SHA384, 48)
    # PBKDF2 without prf: the default is read as hmacWithSHA1, as the library reads it
    kdf = rfc8018.PBKDF2_params()
    kdf["salt"]["specified"] = b"s" * 16
    kdf["iterationCount"] = 2000
    kdf_alg = rfc5280.AlgorithmIdentifier()
    kdf_alg["algorithm"] = rfc8018.id_PBKDF2
    kdf_alg["parameters"] = encoder.encode(kdf)
    mac_alg = rfc5280.AlgorithmIdentifier()
    mac_alg["algorithm"] = rfc8018.id_hmacWithSHA256
    params = rfc8018.PBMAC1_params()
    params["keyDerivationFunc"] = kdf_alg
    params["messageAuthScheme"] = mac_alg
    fields = codec.decode_pbmac1_params(encoder.encode(params))
    assert fields.prf_oid == str(rfc8018.id_hmacWithSHA1)
    assert (fields.salt, fields.iterations, fields.key_length) == (b"s" * 16, 2000, None)


def test_certificates_are_not_decoded_through_the_schema() -> None:
    # caPubs and the issued certificate stay the received bytes, even ones that are
    # no certificate: cryptography judges them, not the schema.
    not_a_cert = der.sequence(b"\x02\x01\x07")
    body = codec.cert_rep_body("ip", [codec.CertResponse(1, codec.StatusInfo(0),
                                                         not_a_cert)], [not_a_cert])
    content = der.single(body).children()[0].raw
    obj, _ = decoder.decode(content, asn1Spec=asn1.CertRepMessage())
    assert bytes(obj["caPubs"][0]) == not_a_cert
    assert bytes(obj["response"][0]["certifiedKeyPair"]["certOrEncCert"]["certificate"]) \
        == not_a_cert


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=0, max_size=12))
def test_oid_text_reads_object_identifiers_as_pyasn1_does(content: bytes) -> None:
    # der.oid_text reads the attribute types of Names without pyasn1: same dotted text,
    # same refusals (empty, cut short, an arc not in its shortest form).
    from swcmp.errors import ProtocolError

    try:
        expected: str | None = str(decoder.decode(
            bytes([6, len(content)]) + content, asn1Spec=univ.ObjectIdentifier())[0])
    except Exception:
        expected = None
    try:
        got: str | None = der.oid_text(content)
    except ProtocolError:
        got = None
    assert got == expected


def test_oid_text_of_known_identifiers() -> None:
    for oid in (rfc5280.id_at_commonName, rfc9480.id_it_rootCaKeyUpdate,
                rfc8018.id_hmacWithSHA256, univ.ObjectIdentifier("2.999.3")):
        assert der.oid_text(der.single(encoder.encode(oid)).value) == str(oid)
