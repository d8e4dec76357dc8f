"""The certificate request template (swcmp.cmp.template): templates built with
pyasn1-alt-modules (the RFCs' modules transcribed by others) read by swcmp, the check of
a request against them, and the bounds on hostile ones."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import char, univ
from pyasn1_alt_modules import rfc5280, rfc5480, rfc8410, rfc9480

from swcmp.cmp import codec, keys, oids, template
from swcmp.cmp.errors import ProtocolError
from swcmp.cmp.messages import AlgorithmId
from swcmp.cmp.template import CertReqTemplate, KeyChoice, SubjectRule


def _subject(*attrs: tuple[Any, Any]) -> Any:
    """A rfc5280.Name, one RDN per (OID, pyasn1 string value)."""
    name = rfc5280.Name()
    rdns = name.setComponentByName("rdnSequence").getComponentByName("rdnSequence")
    for oid, value in attrs:
        atv = rfc5280.AttributeTypeAndValue()
        atv["type"] = oid
        atv["value"] = encoder.encode(value)
        rdn = rfc5280.RelativeDistinguishedName()
        rdn.append(atv)
        rdns.append(rdn)
    return name


def _alg(oid: Any, params: Any = None) -> Any:
    alg = rfc9480.AlgIdCtrl()
    alg["algorithm"] = oid
    if params is not None:
        alg["parameters"] = encoder.encode(params)
    return alg


def _template(subject: Any = None, controls: list[tuple[Any, Any]] | None = None) -> bytes:
    """A CertReqTemplateValue's DER, made by pyasn1-alt-modules."""
    value = rfc9480.CertReqTemplateValue()
    tmpl = value["certTemplate"]
    if subject is not None:
        tmpl["subject"]["rdnSequence"] = subject["rdnSequence"]
    else:
        tmpl.setComponents()
    for oid, ctl in controls or []:
        atv = rfc9480.AttributeTypeAndValue()
        atv["type"] = oid
        atv["value"] = encoder.encode(ctl)
        value["keySpec"].append(atv)
    return bytes(encoder.encode(value))


def _ec(curve: Any) -> Any:
    params = rfc5480.ECParameters()
    params["namedCurve"] = curve
    return params


RICH = _template(
    _subject((rfc5280.id_at_organizationName, char.UTF8String("Example  Corp")),
             (rfc5280.id_at_commonName, char.UTF8String(""))),
    [(rfc9480.id_regCtrl_algId, _alg(rfc5480.id_ecPublicKey, _ec(rfc5480.secp384r1))),
     (rfc9480.id_regCtrl_algId, _alg(rfc5480.id_ecPublicKey)),
     (rfc9480.id_regCtrl_rsaKeyLen, rfc9480.RsaKeyLenCtrl(3072)),
     (rfc9480.id_regCtrl_algId, _alg(rfc8410.id_Ed25519)),
     (rfc9480.id_regCtrl_algId, _alg(univ.ObjectIdentifier("2.16.840.1.101.3.4.3.17")))])
#: What the Siemens Mock CA sends: an empty certTemplate, RSA keys of 2048 bits.
SIEMENS = _template(None, [(rfc9480.id_regCtrl_rsaKeyLen, rfc9480.RsaKeyLenCtrl(2048))])


def test_a_template_made_by_the_library_is_read() -> None:
    t = template.parse(RICH)
    assert t.offered is True
    assert t.subject == (SubjectRule(oids_of("O"), "Example  Corp"),
                         SubjectRule(oids_of("CN"), None))
    assert [k.describe() for k in t.key_spec] == [
        "ecdsa:p384", "ecdsa (any curve)", "rsa:3072", "ed25519",
        "algorithm 2.16.840.1.101.3.4.3.17"]
    assert t.unreadable == () and t.other_fields == ()
    assert [r.describe() for r in t.subject] == ["O=Example  Corp", "CN=(any value)"]
    assert t.suggested_key_type() == "ecdsa:p384"
    siemens = template.parse(SIEMENS)
    assert siemens.subject is None and siemens.key_spec == (KeyChoice("rsa", rsa_bits=2048),)


def test_the_suggested_key_type_is_one_the_key_store_can_make() -> None:
    from swcmp.keystore.files import FileKeys
    from swcmp.keystore.token import TokenKeys

    only_ed25519_or_rsa = template.parse(_template(None, [
        (rfc9480.id_regCtrl_algId, _alg(rfc8410.id_Ed25519)),
        (rfc9480.id_regCtrl_rsaKeyLen, rfc9480.RsaKeyLenCtrl(3072))]))
    assert only_ed25519_or_rsa.suggested_key_type(FileKeys.key_types) == "ed25519"
    # a token makes no Ed25519 key: the hint names the RSA size the CA allows
    assert only_ed25519_or_rsa.suggested_key_type(TokenKeys.key_types) == "rsa:3072"
    assert template.parse(_template(None, [
        (rfc9480.id_regCtrl_algId, _alg(rfc8410.id_Ed25519))])).suggested_key_type(
            TokenKeys.key_types) is None


def oids_of(short: str) -> str:
    return {"O": "2.5.4.10", "CN": "2.5.4.3"}[short]


def test_no_value_is_no_template() -> None:
    t = template.parse(None)
    assert t == CertReqTemplate(offered=False)
    assert template.check(t, key=template.key_choice("rsa:2048"),
                          subject=x509.Name.from_rfc4514_string("CN=x")) == []


def test_the_test_ca_template_reads_with_the_library() -> None:
    name = x509.Name.from_rfc4514_string("CN=gw1,O=Example")
    value = codec.cert_req_template_value(name.public_bytes(), [
        (oids.REG_CTRL_RSA_KEY_LEN, codec.rsa_key_len_der(4096)),
        (oids.REG_CTRL_ALG_ID, codec.algorithm_der(AlgorithmId(
            oids.EC_PUBLIC_KEY, codec.oid_der(str(rfc5480.secp256r1)))))])
    theirs, rest = decoder.decode(value, asn1Spec=rfc9480.CertReqTemplateValue())
    assert not rest and bytes(encoder.encode(theirs)) == value
    assert len(theirs["keySpec"]) == 2
    t = template.parse(value)
    assert [k.describe() for k in t.key_spec] == ["rsa:4096", "ecdsa:p256"]
    empty = codec.cert_req_template_value(None, [])
    assert decoder.decode(empty, asn1Spec=rfc9480.CertReqTemplateValue())[1] == b""
    assert template.parse(empty) == CertReqTemplate()


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_a_key_type_and_a_key_of_that_type_are_the_same_choice(key_type: str) -> None:
    key = keys.generate_key(key_type) if not key_type.startswith("rsa:4") else None
    if key is not None:
        assert template.key_choice_of(keys.public_key_of(key)) == template.key_choice(key_type)
    assert template.key_choice(key_type).key_type() == key_type


@pytest.mark.parametrize(("key_type", "allowed"), [
    ("ecdsa:p384", True), ("ecdsa:p256", True),  # any curve is in the keySpec
    ("rsa:3072", True), ("rsa:2048", False), ("rsa:4096", False), ("ed25519", True)])
def test_the_key_must_be_of_a_type_the_key_spec_names(key_type: str, allowed: bool) -> None:
    problems = template.check(template.parse(RICH), key=template.key_choice(key_type))
    assert (problems == []) is allowed
    if not allowed:
        assert problems[0].what == "key" and key_type in problems[0].message


def test_siemens_template_allows_rsa_2048_only() -> None:
    t = template.parse(SIEMENS)
    assert template.check(t, key=template.key_choice("rsa:2048")) == []
    refused = template.check(t, key=template.key_choice("ecdsa:p256"))
    assert "does not allow the key type ecdsa:p256: it allows rsa:2048" in refused[0].message
    assert t.suggested_key_type() == "rsa:2048"
    # the subject is free
    assert template.check(t, subject=x509.Name.from_rfc4514_string("CN=anything")) == []


@pytest.mark.parametrize(("subject", "problems"), [
    ("CN=gw1,O=example corp", 0),  # case and runs of spaces aside, as names compare
    ("CN=gw1,O=Example Corp,OU=extra", 0),  # what the template does not name is free
    ("O=Example Corp", 1),  # CN has an empty value in the template: it must be there
    ("CN=gw1,O=Other", 1),
    ("CN=gw1", 1),
])
def test_subject_attributes_with_a_value_are_fixed_empty_ones_must_be_filled(
        subject: str, problems: int) -> None:
    got = template.check(template.parse(RICH), subject=x509.Name.from_rfc4514_string(subject))
    assert len(got) == problems, got
    assert all(p.what == "subject" for p in got)


def test_what_cannot_be_read_never_forbids() -> None:
    odd = _template(
        _subject((rfc5280.id_at_organizationName, univ.Integer(5))),
        [(rfc9480.id_regCtrl_rsaKeyLen, rfc9480.RsaKeyLenCtrl(4096)),
         (univ.ObjectIdentifier("1.3.6.1.5.5.7.5.1.99"), univ.Null(""))])
    t = template.parse(odd)
    assert t.unreadable == ("subject attribute O (not a string)",
                            "keySpec control 1.3.6.1.5.5.7.5.1.99")
    # the unknown control may allow an ECDSA key: the key is not judged
    assert template.check(t, key=template.key_choice("ecdsa:p256"),
                          subject=x509.Name.from_rfc4514_string("CN=x")) == []


def test_fields_a_template_must_not_fix_are_shown_and_ignored() -> None:
    value = rfc9480.CertReqTemplateValue()
    value["certTemplate"]["serialNumber"] = 7
    value["certTemplate"]["version"] = 2
    t = template.parse(bytes(encoder.encode(value)))
    assert t.other_fields == ("version", "serialNumber (ignored: a template must not fix it)")


@pytest.mark.parametrize(("value", "what"), [
    (b"\x02\x01\x05", "CertReqTemplateContent"),  # an INTEGER
    (SIEMENS + b"\x05\x00", "trailing"),
    (SIEMENS + b"\x00", "cannot be read: DER"),
    (_template(None, [(rfc9480.id_regCtrl_rsaKeyLen, univ.Integer(0))]), "RsaKeyLenCtrl"),
    (_template(None, [(rfc9480.id_regCtrl_rsaKeyLen, univ.Integer(10**6))]), "rsaKeyLen"),
    (_template(None, [(rfc9480.id_regCtrl_rsaKeyLen, rfc9480.RsaKeyLenCtrl(2048))] * 33),
     "more than 32"),
    (b"\x30\x83\x01\x00\x00" + b"\x00" * 0x10000, "bytes"),  # over the size bound
])
def test_hostile_templates_are_refused(value: bytes, what: str) -> None:
    with pytest.raises(ProtocolError, match=what):
        template.parse(value)


def test_a_template_of_many_elements_is_refused_before_it_is_decoded() -> None:
    many = b"".join(b"\x05\x00" for _ in range(template.MAX_TEMPLATE_ELEMENTS + 1))
    value = b"\x30" + codec.der.encode_length(len(many)) + many
    assert len(value) < template.MAX_TEMPLATE_SIZE
    with pytest.raises(ProtocolError, match="cannot be read: more than 2000 DER elements"):
        template.parse(value)


def test_a_refusal_shows_a_hostile_template_shortened() -> None:
    """A template of 60 subject attributes of 900 characters each (55 KB, within the read
    bounds) that the session's subject does not have: the refusal names the first few
    problems, each value shortened, and how many more; it is not the CA's 55 KB of text
    in swcmp's error, its logs and state.json."""
    attrs = [(univ.ObjectIdentifier(f"1.3.6.1.4.1.99999.{n}"), char.UTF8String("A" * 900))
             for n in range(60)]
    tmpl = template.parse(_template(_subject(*attrs)))
    problems = template.check(tmpl, subject=x509.Name.from_rfc4514_string("CN=gw1"))
    assert len(problems) == 60
    assert all(len(p.message) < 200 for p in problems), problems[0].message
    assert "A" * template.MAX_VALUE_SHOWN + "..." in problems[0].message
    text = template.describe_problems(problems)
    assert len(text) < 1000, len(text)
    assert text.endswith("; and 56 more (`swcmp request template` lists them)"), text
    assert tmpl.subject is not None
    assert len(tmpl.subject[0].describe()) < 100
    assert template.describe_problems(problems[:2]) == "; ".join(p.message for p in problems[:2])


def test_ec_with_curve_parameters_swcmp_cannot_read_forbids_nothing() -> None:
    """A keySpec whose id-ecPublicKey names its curve by explicit parameters (which RFC
    5480 does not allow, and swcmp does not compare) is listed as unreadable and forbids
    nothing: it may well describe P-256. It was read as an unknown algorithm, which,
    alone in the keySpec, refused every key type before sending."""
    explicit = univ.Sequence()  # specifiedCurve: a SEQUENCE where the curve's OID belongs
    tmpl = template.parse(_template(None, [
        (rfc9480.id_regCtrl_algId, _alg(rfc5480.id_ecPublicKey, explicit))]))
    assert tmpl.key_spec == ()
    assert any("curve parameters" in u for u in tmpl.unreadable), tmpl.unreadable
    assert template.check(tmpl, key=template.key_choice("ecdsa:p256")) == []
