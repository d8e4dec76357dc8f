"""Keys that stay in a PKCS#11 token (an HSM, a smart card, a TPM through tpm2-pkcs11).

A session whose ``key`` is an RFC 7512 URI (``pkcs11:token=gw;object=gw1``) keeps
its key pairs in the token named by the URI. swcmp never sees the private halves:
it finds key objects by label and CKA_ID, makes new pairs inside the token, asks
the token to sign, and destroys pairs it no longer needs. charon reaches the same
objects through its own pkcs11 plugin (VICI ``load-token`` with the CKA_ID).

Objects of one session all carry the URI's ``object`` label; each pair has its own
random CKA_ID. Which one is current is decided by the certificate: the pair whose
public key the certificate in ``x509/`` certifies.

This module talks to the token with python-pkcs11, imported only when a token is
used (``swcmp status`` and ``--help`` never load it). The PIN comes from a 0600
file, is read when needed and is never logged or put into an exception.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from swcmp.cmp import keys
from swcmp.cmp.messages import AlgorithmId
from swcmp.errors import ConfigError, SwcmpError
from swcmp.keystore.uri import URI_SCHEME, is_token_uri

log = logging.getLogger(__name__)

#: Key types a token key may have (Ed25519 is not offered: few tokens do EdDSA).
TOKEN_KEY_TYPES = ("rsa:2048", "rsa:3072", "rsa:4096", "ecdsa:p256", "ecdsa:p384")
#: Length of the random CKA_ID given to each new key pair.
ID_BYTES = 16
#: Largest PIN file read (a PIN is short; anything larger is not a PIN file).
MAX_PIN_FILE = 256

# RFC 7512 path attributes swcmp understands; others are refused, not ignored.
_PATH_ATTRS = frozenset({"token", "manufacturer", "serial", "model", "object", "id", "type"})
_CURVES = {"ecdsa:p256": ec.EllipticCurveOID.SECP256R1, "ecdsa:p384": ec.EllipticCurveOID.SECP384R1}


class TokenError(SwcmpError):
    """The token, its module or an object in it could not be used as asked."""


@dataclass(frozen=True)
class TokenUri:
    """The parts of an RFC 7512 ``pkcs11:`` URI that select a token and key objects.

    Attributes:
        token: the token label (``token=``).
        manufacturer, serial, model: further token attributes, when given.
        label: the object label (``object=``): every key pair of the session has it.
        key_id: a fixed CKA_ID (``id=``), when the URI names exactly one pair.
    """

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    label: str | None = None
    key_id: bytes | None = None

    @classmethod
    def parse(cls, text: str) -> TokenUri:
        """Parse ``pkcs11:attr=value;...``; a PIN in the URI is refused.

        Raises:
            ConfigError: not a pkcs11 URI, unknown or repeated attributes, no
                ``object`` label, or a ``pin-value``/``pin-source`` query.
        """
        fix = ("give the key as pkcs11:token=LABEL;object=LABEL and the PIN with "
               "--pin-file FILE (mode 0600)")
        if not is_token_uri(text):
            raise ConfigError(f"{text!r} is not a pkcs11: URI").with_hint(fix)
        body = text[len(URI_SCHEME):]
        path, _, query = body.partition("?")
        if query:
            names = {q.partition("=")[0].lower() for q in query.split("&") if q}
            if names & {"pin-value", "pin-source"}:
                raise ConfigError("the key URI carries a PIN; swcmp takes the PIN only from "
                                  "a 0600 file").with_hint(fix)
            raise ConfigError(f"unsupported query in the key URI: {', '.join(sorted(names))}"
                              ).with_hint("give the module with --pkcs11-module PATH")
        seen: dict[str, str] = {}
        raw_of: dict[str, str] = {}
        for part in (p for p in path.split(";") if p):
            name, eq, raw = part.partition("=")
            name = name.lower()
            if not eq or name not in _PATH_ATTRS:
                raise ConfigError(f"unsupported attribute {name!r} in the key URI").with_hint(
                    "use token=, serial=, manufacturer=, model=, object= and id=")
            if name in seen:
                raise ConfigError(f"attribute {name!r} appears twice in the key URI")
            seen[name] = urllib.parse.unquote(raw)
            raw_of[name] = raw
        if seen.get("type", "private") != "private":
            raise ConfigError("the key URI must name a private key (type=private or no type)")
        if not seen.get("object"):
            raise ConfigError("the key URI has no object= label").with_hint(fix)
        key_id = None
        if "id" in seen:
            key_id = urllib.parse.unquote_to_bytes(raw_of["id"])  # CKA_ID is bytes
        return cls(token=seen.get("token"), manufacturer=seen.get("manufacturer"),
                   serial=seen.get("serial"), model=seen.get("model"), label=seen["object"],
                   key_id=key_id)

    def describe(self) -> str:
        """For messages: the token and label (never a PIN: the URI holds none)."""
        where = self.token or self.serial or "the first token"
        return f"object {self.label!r} in token {where!r}"


def read_pin(path: Path, *, session: str) -> str:
    """The PIN from ``path``: a regular 0600 file holding the PIN (one line break allowed).

    Raises:
        ConfigError: missing, unreadable, readable by others, too large or empty;
            the message names the file, never its content.
    """
    fix = f"swcmp session set {session} --pin-file FILE (mode 0600, only the PIN)"
    try:
        # O_NONBLOCK: a FIFO in its place is refused below instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"cannot read the PIN file {path}: {e.strerror}").with_hint(
            fix) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the PIN file {path} is not a regular file").with_hint(fix)
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(f"the PIN file {path} has mode {stat.S_IMODE(info.st_mode):04o}:"
                              " others may read it").with_hint(f"chmod 600 {path}")
        data = os.read(fd, MAX_PIN_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_PIN_FILE:
        raise ConfigError(f"the PIN file {path} is larger than {MAX_PIN_FILE} bytes").with_hint(
            "it must contain only the PIN")
    text = data.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"the PIN file {path} is empty").with_hint(fix)
    return text


@dataclass(frozen=True)
class TokenConfig:
    """Where a session's token keys are: module, URI and PIN file."""

    session: str
    uri: TokenUri
    module: Path
    pin_file: Path

    def pin(self) -> str:
        return read_pin(self.pin_file, session=self.session)


#: One token operation at a time in this process. ``serve`` renews the sessions of
#: different CAs on parallel threads; a PKCS#11 login is per application and token, and
#: C_Finalize (``reinitialize``, below) would end every other thread's session.
_TOKEN_LOCK = threading.RLock()


def _pkcs11() -> Any:
    """The python-pkcs11 module, or a TokenError that says how to install it."""
    try:
        import pkcs11
    except ImportError:
        raise TokenError(
            "keys in PKCS#11 tokens need the Python library python-pkcs11, which is not "
            "installed beside swcmp").with_hint(
            "install swcmp's pkcs11 extra into its environment: pip install 'swcmp[pkcs11]' "
            "(in a checkout: pip install '.[pkcs11]'; pipx: pipx inject swcmp "
            "python-pkcs11); the Debian package includes it") from None
    return pkcs11


@functools.cache
def _library(module: str) -> Any:
    p11 = _pkcs11()

    try:
        return p11.lib(module)
    except (RuntimeError, OSError, p11.PKCS11Error) as e:
        raise TokenError(f"cannot load the PKCS#11 module {module}: {e}").with_hint(
            "install the token's module (e.g. softhsm2, tpm2-pkcs11, opensc) and give its "
            "path with --pkcs11-module") from None


def _public_key(pub: Any) -> keys.PublicKey:
    """The cryptography public key of a token public key object."""
    p11 = _pkcs11()
    from pkcs11.util.ec import encode_ec_public_key

    if pub.key_type == p11.KeyType.RSA:
        n = int.from_bytes(pub[p11.Attribute.MODULUS], "big")
        e = int.from_bytes(pub[p11.Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if pub.key_type == p11.KeyType.EC:
        key = serialization.load_der_public_key(encode_ec_public_key(pub))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key
    raise TokenError(f"token key of type {pub.key_type!r} is not supported (use RSA or ECDSA)")


@dataclass(eq=False)
class TokenKey:
    """One key pair in the token: the public half and signing by the token.

    Satisfies :class:`swcmp.keys.Signer`, so the CMP code signs protection and POP
    with it as with a key in memory. Each signature opens its own short token
    session (and logs in): nothing stays open between renewals.
    """

    store: TokenStore = field(repr=False)
    key_id: bytes
    label: str
    _public: keys.PublicKey = field(repr=False)

    def public_key(self) -> keys.PublicKey:
        return self._public

    @property
    def handle(self) -> str:
        """The CKA_ID in hex: charon's ``load-token`` handle."""
        return self.key_id.hex()

    def sign(self, data: bytes, alg: AlgorithmId) -> bytes:
        """Sign ``data`` under ``alg`` inside the token."""
        p11 = _pkcs11()

        from swcmp.cmp import oids

        with self.store.open() as s:
            priv = self.store.private_object(s, self.key_id)
            try:
                if isinstance(self._public, rsa.RSAPublicKey):
                    rsa_pkcs, pss = _mechanisms()
                    if alg.oid == oids.RSASSA_PSS:
                        h, salt = keys.pss_parameters(alg.params_der)
                        mech, mgf, hmech = pss[h.name]
                        return bytes(priv.sign(data, mechanism=mech,
                                               mechanism_param=(hmech, mgf, salt)))
                    rh = keys.hash_for_cert_signature(alg.oid)
                    if rh is None or rh.name not in rsa_pkcs:
                        raise TokenError(f"the token cannot sign with {alg.oid}")
                    return bytes(priv.sign(data, mechanism=rsa_pkcs[rh.name]))
                eh = keys.hash_for_cert_signature(alg.oid)
                if eh is None:
                    raise TokenError(f"the token cannot sign with {alg.oid}")
                digest = hashes.Hash(eh)
                digest.update(data)
                raw = bytes(priv.sign(digest.finalize(), mechanism=p11.Mechanism.ECDSA))
            except p11.PKCS11Error as e:
                raise TokenError(f"the token refused to sign with {self.store.uri.describe()}"
                                 f" (CKA_ID {self.handle}): {type(e).__name__}") from None
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                    int.from_bytes(raw[half:], "big"))


@functools.cache
def _mechanisms() -> tuple[dict[str, Any], dict[str, tuple[Any, Any, Any]]]:
    """RSA mechanisms by hash name: PKCS#1 v1.5, and PSS with its MGF1 and hash."""
    p11 = _pkcs11()

    m, g = p11.Mechanism, p11.MGF
    return ({"sha256": m.SHA256_RSA_PKCS, "sha384": m.SHA384_RSA_PKCS,
             "sha512": m.SHA512_RSA_PKCS},
            {"sha256": (m.SHA256_RSA_PKCS_PSS, g.SHA256, m.SHA256),
             "sha384": (m.SHA384_RSA_PKCS_PSS, g.SHA384, m.SHA384),
             "sha512": (m.SHA512_RSA_PKCS_PSS, g.SHA512, m.SHA512)})


class TokenStore:
    """The key pairs of one session in its token.

    Args:
        config: module, URI and PIN file of the session.
    """

    def __init__(self, config: TokenConfig) -> None:
        self.config = config
        self.uri = config.uri
        self._pin: str | None = None

    def pin(self) -> str:
        """The user PIN, read from the PIN file once for this store (never logged)."""
        if self._pin is None:
            self._pin = self.config.pin()
        return self._pin

    def __repr__(self) -> str:
        return f"TokenStore({self.uri.describe()}, module={str(self.config.module)!r})"

    def token(self) -> Any:
        """The token the URI names (exactly one must match)."""
        with _TOKEN_LOCK:
            return self._token()

    def _token(self) -> Any:
        p11 = _pkcs11()

        lib = _library(str(self.config.module))
        wanted = {k: v for k, v in (("token_label", self.uri.token),
                                    ("token_serial", self.uri.serial),
                                    ("manufacturer_id", self.uri.manufacturer),
                                    ("model", self.uri.model)) if v is not None}
        try:
            found = [t for slot in lib.get_slots(token_present=True)
                     for t in [slot.get_token()] if _token_matches(t, wanted)]
            if not found:  # a token inserted or initialised since the module was loaded
                lib.reinitialize()
                found = [t for slot in lib.get_slots(token_present=True)
                         for t in [slot.get_token()] if _token_matches(t, wanted)]
        except p11.PKCS11Error as e:
            raise TokenError(f"the PKCS#11 module {self.config.module} cannot list its tokens:"
                             f" {type(e).__name__}").with_hint(
                "check that the token is plugged in / initialised") from None
        if not found:
            raise TokenError(f"no token matches the key URI ({self.uri.describe()}) in module "
                             f"{self.config.module}").with_hint(
                "check the token label (e.g. `softhsm2-util --show-slots`, `pkcs11-tool -L`)")
        if len(found) > 1:
            raise TokenError(f"{len(found)} tokens match the key URI").with_hint(
                "add serial= to the URI to name one")
        return found[0]

    @contextmanager
    def open(self, *, rw: bool = False) -> Iterator[Any]:
        """A logged-in session with the token, closed afterwards (under the process's
        token lock: one token session at a time)."""
        with _TOKEN_LOCK, self._open(rw=rw) as session:
            yield session

    @contextmanager
    def _open(self, *, rw: bool) -> Iterator[Any]:
        p11 = _pkcs11()

        token = self.token()
        pin = self.pin()
        try:
            session = token.open(user_pin=pin, rw=rw)
        except p11.PinIncorrect:
            raise TokenError(f"the token refused the PIN from {self.config.pin_file}"
                             ).with_hint("write the user PIN into the PIN file") from None
        except p11.PKCS11Error as e:
            raise TokenError(f"cannot log in to token {self.uri.token!r}: "
                             f"{type(e).__name__}") from None
        finally:
            del pin
        try:
            yield session
        finally:
            try:
                session.close()
            except p11.PKCS11Error as e:
                log.debug("closing the token session failed: %s", type(e).__name__)

    def private_object(self, s: Any, key_id: bytes) -> Any:
        p11 = _pkcs11()

        found = list(s.get_objects({p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY,
                                    p11.Attribute.ID: key_id}))
        if len(found) != 1:
            raise TokenError(f"the token holds {len(found)} private keys with CKA_ID "
                             f"{key_id.hex()} ({self.uri.describe()})")
        return found[0]

    def pairs(self) -> list[TokenKey]:
        """Every key pair with the URI's label (and id, when given): both halves present."""
        p11 = _pkcs11()

        attrs: dict[Any, Any] = {p11.Attribute.LABEL: self.uri.label}
        if self.uri.key_id is not None:
            attrs[p11.Attribute.ID] = self.uri.key_id
        out: list[TokenKey] = []
        with self.open() as s:
            privs = {bytes(o[p11.Attribute.ID]) for o in s.get_objects(
                {**attrs, p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY})}
            for pub in s.get_objects({**attrs, p11.Attribute.CLASS: p11.ObjectClass.PUBLIC_KEY}):
                key_id = bytes(pub[p11.Attribute.ID])
                if key_id in privs:
                    out.append(TokenKey(self, key_id, str(self.uri.label), _public_key(pub)))
        return sorted(out, key=lambda k: k.key_id)

    def object_ids(self) -> set[bytes]:
        """CKA_IDs of every object (public, private, or a half pair) with the label."""
        p11 = _pkcs11()

        with self.open() as s:
            return {bytes(o[p11.Attribute.ID])
                    for o in s.get_objects({p11.Attribute.LABEL: self.uri.label})}

    def key_for(self, spki_der: bytes) -> TokenKey | None:
        """The pair whose public key is ``spki_der`` (a certificate's), or None."""
        for k in self.pairs():
            if keys.spki_der(k.public_key()) == spki_der:
                return k
        return None

    def generate(self, key_type: str, key_id: bytes) -> TokenKey:
        """Make a key pair inside the token under ``key_id`` with the URI's label.

        The private half is sensitive and not extractable: it never leaves the token.
        """
        p11 = _pkcs11()
        from pkcs11.util.ec import encode_named_curve_parameters

        if key_type not in TOKEN_KEY_TYPES:
            raise ConfigError(f"key type {key_type} cannot be made in a token").with_hint(
                "use one of " + ", ".join(TOKEN_KEY_TYPES))
        private_attrs = {p11.Attribute.SENSITIVE: True, p11.Attribute.EXTRACTABLE: False,
                         p11.Attribute.TOKEN: True, p11.Attribute.PRIVATE: True}
        public_attrs = {p11.Attribute.TOKEN: True}
        flag = p11.MechanismFlag
        # Signing only; tpm2-pkcs11 makes TPM keys that sign and decrypt and refuses a
        # template that says otherwise, so that is tried second.
        tries = (flag.SIGN | flag.VERIFY,
                 flag.SIGN | flag.VERIFY | flag.ENCRYPT | flag.DECRYPT)
        with self.open(rw=True) as s:
            pub: Any = None
            error: Exception | None = None
            for caps in tries:
                try:
                    if key_type.startswith("rsa:"):
                        pub, _ = s.generate_keypair(
                            p11.KeyType.RSA, int(key_type[4:]), id=key_id,
                            label=self.uri.label, store=True, capabilities=caps,
                            public_template=public_attrs, private_template=private_attrs)
                    else:
                        params = s.create_domain_parameters(p11.KeyType.EC, {
                            p11.Attribute.EC_PARAMS: encode_named_curve_parameters(
                                _CURVES[key_type].dotted_string)}, local=True)
                        pub, _ = params.generate_keypair(
                            id=key_id, label=self.uri.label, store=True, capabilities=caps,
                            public_template=public_attrs, private_template=private_attrs)
                    break
                except (p11.GeneralError, p11.TemplateInconsistent,
                        p11.AttributeValueInvalid) as e:
                    error = e
                except p11.PKCS11Error as e:
                    error = e
                    break
            if pub is None:
                raise TokenError(f"the token could not make a {key_type} key pair: "
                                 f"{type(error).__name__}").with_hint(
                    "check that the token has room and supports the key type")
            public = _public_key(pub)
        log.info("generated a %s key pair in %s (CKA_ID %s)", key_type, self.uri.describe(),
                 key_id.hex())
        return TokenKey(self, key_id, str(self.uri.label), public)

    def destroy(self, key_id: bytes) -> int:
        """Destroy every object with the URI's label and ``key_id``; return how many."""
        p11 = _pkcs11()

        n = 0
        with self.open(rw=True) as s:
            for o in list(s.get_objects({p11.Attribute.LABEL: self.uri.label,
                                         p11.Attribute.ID: key_id})):
                o.destroy()
                n += 1
        if n:
            log.info("destroyed %d object(s) with CKA_ID %s in %s", n, key_id.hex(),
                     self.uri.describe())
        return n


def _token_matches(token: Any, wanted: dict[str, str]) -> bool:
    for attr, value in wanted.items():
        have = getattr(token, {"token_label": "label", "token_serial": "serial"}.get(attr, attr))
        if isinstance(have, bytes):
            have = have.decode("utf-8", "replace")
        if str(have).rstrip() != value:
            return False
    return True


def new_key_id() -> bytes:
    """A fresh random CKA_ID for a new key pair."""
    return secrets.token_bytes(ID_BYTES)
