"""The certificate request template a CA sends (genp id-it-certReqTemplate, RFC 9483 4.3.3).

A CA answers genm certReqTemplate with a CertReqTemplateContent (RFC 9480 2.9): a
CertTemplate whose fields say what requests must hold (a subject attribute with a value
must be used as given; one with an empty value must be filled in by the end entity;
what is absent is the end entity's choice), and optionally ``keySpec``, one control per
key type the CA accepts: id-regCtrl-algId (an AlgorithmIdentifier: id-ecPublicKey with
or without a named curve, Ed25519, ...) or id-regCtrl-rsaKeyLen (an RSA key of that many
bits). An absent value means the CA has no requirements.

:func:`parse` reads such a value from hostile bytes (bounded in size and elements);
:func:`check` says what of a planned request the template forbids. What swcmp cannot
read in a template (an unknown control, an EC curve given by explicit parameters, an
attribute value that is no string) is listed in :attr:`CertReqTemplate.unreadable` and
never forbids anything.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from swcmp.cmp import der, oids
from swcmp.cmp.errors import ProtocolError
from swcmp.cmp.text import safe

if TYPE_CHECKING:
    from swcmp.cmp import codec

#: Largest template value read, and its DER elements and nesting: a real template is
#: a few hundred bytes (a subject, a SAN extension, a few key types).
MAX_TEMPLATE_SIZE = 64 * 1024
MAX_TEMPLATE_ELEMENTS = 2000
MAX_TEMPLATE_DEPTH = 24
#: keySpec entries and subject attributes read; more is refused as malformed.
MAX_KEY_SPEC = 32
MAX_SUBJECT_ATTRIBUTES = 64
#: An RSA length beyond this in rsaKeyLen is refused as malformed.
MAX_RSA_BITS = 65536
#: What of a template a refusal shows: values up to this many characters (X.520's upper
#: bound of a common name), and this many problems (the CA's words in swcmp's errors,
#: logs and state.json stay short; `request template` shows the whole template).
MAX_VALUE_SHOWN = 64
MAX_PROBLEMS_SHOWN = 4

_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1",
                  0x1E: "utf-16-be", 0x1C: "utf-32-be"}
#: CertTemplate fields RFC 9483 4.3.3 wants absent from a template, and the others
#: swcmp shows but does not check.
_MUST_BE_ABSENT = ("serialNumber", "signingAlg", "publicKey", "issuerUID", "subjectUID")
_SHOWN_ONLY = ("version", "issuer", "validity")
#: swcmp's names of the curves it generates keys on (see keys.KEY_TYPES).
_CURVE_KEY_TYPES = {"secp256r1": "ecdsa:p256", "secp384r1": "ecdsa:p384"}


@dataclass(frozen=True)
class KeyChoice:
    """One key type: an entry of a template's keySpec, or the key of a request.

    ``algorithm`` is ``rsa``, ``ec``, ``ed25519``, ``ed448`` or ``other`` (an
    algorithm swcmp does not generate, named by ``oid``); ``rsa_bits`` and ``curve``
    (a named curve's OID) are None when any size or curve will do.
    """

    algorithm: str
    rsa_bits: int | None = None
    curve: str | None = None
    oid: str | None = None

    def describe(self) -> str:
        if self.algorithm == "rsa":
            return f"rsa:{self.rsa_bits}" if self.rsa_bits else "rsa (any size)"
        if self.algorithm == "ec":
            if self.curve is None:
                return "ecdsa (any curve)"
            name = _curve_name(self.curve)
            return _CURVE_KEY_TYPES.get(name or "", f"ecdsa (curve {name or self.curve})")
        if self.algorithm in ("ed25519", "ed448"):
            return self.algorithm
        return f"algorithm {self.oid}"

    def key_type(self) -> str | None:
        """One of swcmp's key type names (keys.KEY_TYPES) this entry allows, if any."""
        if self.algorithm == "rsa":
            bits = self.rsa_bits or 3072
            return f"rsa:{bits}" if bits in (2048, 3072, 4096) else None
        if self.algorithm == "ec":
            return ("ecdsa:p256" if self.curve is None
                    else _CURVE_KEY_TYPES.get(_curve_name(self.curve) or ""))
        return "ed25519" if self.algorithm == "ed25519" else None

    def allows(self, key: KeyChoice) -> bool:
        """Whether a key of type ``key`` is one this entry accepts."""
        if self.algorithm != key.algorithm or self.algorithm == "other":
            return False
        if self.algorithm == "rsa":
            return self.rsa_bits is None or self.rsa_bits == key.rsa_bits
        if self.algorithm == "ec":
            return self.curve is None or self.curve == key.curve
        return True


@dataclass(frozen=True)
class SubjectRule:
    """A subject attribute in a template: ``value`` must be used as given; None (an
    empty value in the template) means the request must carry the attribute with a
    value of its own."""

    oid: str
    value: str | None

    def describe(self) -> str:
        value = _shown(self.value) if self.value is not None else "(any value)"
        return f"{_attribute_name(self.oid)}={value}"


@dataclass(frozen=True)
class CertReqTemplate:
    """What the CA's template asks of a request.

    Attributes:
        offered: False when the CA answered without a template (it has no requirements).
        subject: the template's subject attributes (None: the subject is free).
        key_spec: the key types the CA accepts (empty: any).
        extensions: the OIDs of the extensions the template names (shown, not checked).
        other_fields: other CertTemplate fields present (shown, not checked).
        unreadable: what swcmp could not read, in words (never forbids anything).
    """

    offered: bool = True
    subject: tuple[SubjectRule, ...] | None = None
    key_spec: tuple[KeyChoice, ...] = ()
    extensions: tuple[str, ...] = ()
    other_fields: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = field(default_factory=tuple)

    def suggested_key_type(self, among: Collection[str] | None = None) -> str | None:
        """A key type swcmp can make that the keySpec allows, one of ``among`` if given
        (a token makes fewer types than swcmp; None: none, or no keySpec)."""
        return next((t for t in (k.key_type() for k in self.key_spec)
                     if t and (among is None or t in among)), None)

    def to_json(self) -> dict[str, object]:
        return {
            "offered": self.offered,
            "subject": ([{"type": _attribute_name(r.oid), "oid": r.oid, "value": r.value}
                         for r in self.subject] if self.subject is not None else None),
            "key_types": [k.describe() for k in self.key_spec],
            "extensions": list(self.extensions),
            "other_fields": list(self.other_fields),
            "unreadable": list(self.unreadable),
        }


@dataclass(frozen=True)
class Problem:
    """Something of a planned request the template forbids: ``what`` is ``key`` or
    ``subject``."""

    what: str
    message: str


# --------------------------------------------------------------------------- keys


def key_choice(key_type: str) -> KeyChoice:
    """The :class:`KeyChoice` of one of swcmp's key type names (``rsa:3072``, ``ecdsa:p256``,
    ``ed25519``...)."""
    if key_type.startswith("rsa:"):
        return KeyChoice("rsa", rsa_bits=int(key_type[4:]))
    curves = {"ecdsa:p256": ec.EllipticCurveOID.SECP256R1,
              "ecdsa:p384": ec.EllipticCurveOID.SECP384R1}
    if key_type in curves:
        return KeyChoice("ec", curve=curves[key_type].dotted_string)
    if key_type in ("ed25519", "ed448"):
        return KeyChoice(key_type)
    raise ValueError(f"unknown key type {key_type!r}")


def key_choice_of(public_key: object) -> KeyChoice:
    """The :class:`KeyChoice` of a public key."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyChoice("rsa", rsa_bits=public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeyChoice("ec", curve=_curve_oid(public_key.curve.name))
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyChoice("ed25519")
    if isinstance(public_key, ed448.Ed448PublicKey):
        return KeyChoice("ed448")
    return KeyChoice("other")


def _curve_oid(name: str) -> str | None:
    for attr in dir(ec.EllipticCurveOID):
        oid = getattr(ec.EllipticCurveOID, attr)
        if isinstance(oid, x509.ObjectIdentifier) and _curve_name(oid.dotted_string) == name:
            return oid.dotted_string
    return None


def _curve_name(oid: str) -> str | None:
    try:
        return str(ec.get_curve_for_oid(x509.ObjectIdentifier(oid))().name)
    except (LookupError, ValueError, TypeError):
        return None


def _attribute_name(oid: str) -> str:
    """The short name of a subject attribute (CN, O, ...), or its OID."""
    try:
        text = x509.NameAttribute(x509.ObjectIdentifier(oid), "x").rfc4514_string()
    except (ValueError, TypeError):
        return oid
    return text.rsplit("=", 1)[0]


# --------------------------------------------------------------------------- reading


def parse(value_der: bytes | None) -> CertReqTemplate:
    """The template of an id-it-certReqTemplate value (None: the CA has no template).

    Raises:
        ProtocolError: the value is malformed, too large or not a template.
    """
    if value_der is None:
        return CertReqTemplate(offered=False)
    if len(value_der) > MAX_TEMPLATE_SIZE:
        raise ProtocolError(f"the certificate request template has {len(value_der)} bytes, "
                            f"more than the {MAX_TEMPLATE_SIZE} swcmp reads")
    from swcmp.cmp import codec

    try:
        der.census(value_der, max_elements=MAX_TEMPLATE_ELEMENTS,
                   max_depth=MAX_TEMPLATE_DEPTH)
        parts = codec.parse_cert_req_template(value_der)
        return _read(parts)
    except ProtocolError as e:
        raise ProtocolError(f"the CA's certificate request template cannot be read: {e}"
                            ) from e
    except (ValueError, TypeError, LookupError, ArithmeticError, RecursionError) as e:
        raise ProtocolError("the CA's certificate request template cannot be read "
                            f"({type(e).__name__})") from e


def _read(parts: codec.TemplateParts) -> CertReqTemplate:
    unreadable: list[str] = []
    subject: tuple[SubjectRule, ...] | None = None
    if parts.subject is not None:
        if len(parts.subject) > MAX_SUBJECT_ATTRIBUTES:
            raise ProtocolError(f"its subject has more than {MAX_SUBJECT_ATTRIBUTES} "
                                "attributes")
        rules: list[SubjectRule] = []
        for oid, raw in parts.subject:
            value = _string_value(raw)
            if isinstance(value, _Unreadable):
                unreadable.append(f"subject attribute {_attribute_name(oid)} (not a string)")
                continue
            rules.append(SubjectRule(oid, value))
        subject = tuple(rules)
    other = [n for n in _SHOWN_ONLY if n in parts.fields]
    other += [f"{n} (ignored: a template must not fix it)" for n in _MUST_BE_ABSENT
              if n in parts.fields]
    if len(parts.controls) > MAX_KEY_SPEC:
        raise ProtocolError(f"its keySpec has more than {MAX_KEY_SPEC} entries")
    key_spec: list[KeyChoice] = []
    for kind, raw in parts.controls:
        if kind == oids.REG_CTRL_RSA_KEY_LEN:
            key_spec.append(_rsa_key_len(raw))
        elif kind == oids.REG_CTRL_ALG_ID:
            choice = _alg_id(raw)
            if choice is None:
                unreadable.append("keySpec algId id-ecPublicKey with curve parameters "
                                  "instead of a named curve")
            else:
                key_spec.append(choice)
        else:
            unreadable.append(f"keySpec control {kind}")
    return CertReqTemplate(offered=True, subject=subject, key_spec=tuple(key_spec),
                           extensions=parts.extensions[:MAX_SUBJECT_ATTRIBUTES],
                           other_fields=tuple(other), unreadable=tuple(unreadable))


class _Unreadable:
    pass


def _string_value(raw: bytes) -> str | _Unreadable | None:
    """A directory string's text; None for an empty one (to be filled by the requester)."""
    tlv = der.single(raw)
    codec_name = _STRING_CODECS.get(tlv.tag)
    if codec_name is None:
        return _Unreadable()
    if not tlv.value:
        return None
    try:
        return tlv.value.decode(codec_name)
    except UnicodeError:
        return _Unreadable()


def _rsa_key_len(raw: bytes) -> KeyChoice:
    from swcmp.cmp import codec

    bits = codec.parse_rsa_key_len(raw)
    if not 0 < bits <= MAX_RSA_BITS:
        raise ProtocolError(f"rsaKeyLen {bits} is not an RSA key length")
    return KeyChoice("rsa", rsa_bits=bits)


def _alg_id(raw: bytes) -> KeyChoice | None:
    """The key type of an id-regCtrl-algId value; None for an EC key whose curve swcmp
    cannot tell (explicit parameters, which RFC 5480 does not allow)."""
    from swcmp.cmp import codec

    alg = codec.parse_algorithm(raw)
    if alg.oid == oids.EC_PUBLIC_KEY:
        if alg.params_der is None or alg.params_der == b"\x05\x00":
            return KeyChoice("ec")
        curve = der.single(alg.params_der)
        if curve.tag != 0x06:
            return None  # explicit curve parameters: perhaps a curve swcmp makes keys on
        return KeyChoice("ec", curve=der.oid_text(curve.value))
    if alg.oid == oids.RSA_ENCRYPTION:
        return KeyChoice("rsa")  # RFC 9483 wants rsaKeyLen for RSA; any size then
    if alg.oid == oids.ED25519:
        return KeyChoice("ed25519")
    if alg.oid == oids.ED448:
        return KeyChoice("ed448")
    return KeyChoice("other", oid=alg.oid)


# --------------------------------------------------------------------------- checking


def check(template: CertReqTemplate, *, key: KeyChoice | None = None,
          subject: x509.Name | None = None) -> list[Problem]:
    """What of a request for ``key`` and ``subject`` the template forbids.

    A key must be of one of the keySpec's types (when there is a keySpec); each subject
    attribute of the template with a value must be in the subject with that value
    (compared as names are: case and runs of spaces aside), and each one with an empty
    value must be there with a value. What the template does not name is free. When
    some keySpec entry could not be read, the key is not judged (that entry may allow it).
    """
    problems: list[Problem] = []
    if not template.offered:
        return problems
    readable_spec = not any(u.startswith("keySpec") for u in template.unreadable)
    if key is not None and template.key_spec and readable_spec \
            and not any(k.allows(key) for k in template.key_spec):
        problems.append(Problem("key", (
            f"the CA's certificate request template does not allow the key type "
            f"{key.describe()}: it allows {', '.join(k.describe() for k in template.key_spec)}"
        )))
    if subject is not None and template.subject:
        have: dict[str, list[str]] = {}
        for attr in subject:
            if isinstance(attr.value, str):
                have.setdefault(attr.oid.dotted_string, []).append(_fold(attr.value))
        for rule in template.subject:
            values = have.get(rule.oid, [])
            if rule.value is None and not values:
                problems.append(Problem("subject", (
                    f"the CA's certificate request template wants the subject to have "
                    f"{_attribute_name(rule.oid)}, which the session's subject lacks")))
            elif rule.value is not None and _fold(rule.value) not in values:
                problems.append(Problem("subject", (
                    f"the CA's certificate request template wants the subject's "
                    f"{_attribute_name(rule.oid)} to be '{_shown(rule.value)}'")))
    return problems


def describe_problems(problems: list[Problem]) -> str:
    """The problems in one line: the first :data:`MAX_PROBLEMS_SHOWN`, then how many more."""
    shown = "; ".join(p.message for p in problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    return shown + (f"; and {more} more (`swcmp request template` lists them)"
                    if more > 0 else "")


def _shown(value: str) -> str:
    """A value from the template as a message shows it: escaped, and shortened."""
    if len(value) > MAX_VALUE_SHOWN:
        value = value[:MAX_VALUE_SHOWN] + "..."
    return safe(value)


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


__all__ = ["CertReqTemplate", "KeyChoice", "Problem", "SubjectRule", "check",
           "describe_problems", "key_choice", "key_choice_of", "parse"]
