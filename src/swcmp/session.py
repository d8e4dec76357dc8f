"""CMP sessions: their settings, validated in one place.

A session is one TOML file, ``<config_dir>/sessions/<name>.toml``
(:mod:`swcmp.sessionfile`); the file name is the session name. Every value is
checked by the same code when it is set from the command line and when a file is
loaded (:data:`FIELDS`), and a bad value produces a :class:`~swcmp.errors.ConfigError`
that says how to write it.

The MAC secret is never held in a :class:`Session`: only the path of its file
is, and :func:`read_mac_secret` reads it when a request needs it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, cast

from cryptography import x509

from swcmp.choices import (
    GRANTED_WITH_MODS,
    IR_AUTH_MODES,
    KEY_TYPES,
    MAC_ALGS,
    OPERATION_PATHS,
    RENEW_WITH,
)
from swcmp.cmp.urls import check_profile_label, parse_operation_urls, with_profile
from swcmp.cmp.urls import check_server_url as validate_server_url
from swcmp.errors import ConfigError, SwcmpError
from swcmp.names import (
    SessionName,
    format_dn,
    format_san,
    parse_dn,
    parse_san,
    parse_sans,
    validate_session_name,
)
from swcmp.paths import Paths
from swcmp.values import ExpireTime, duration_seconds, format_seconds

FILE_FORMAT: Final = 1
SESSION_FILE_MODE: Final = 0o640
_MAX_SECRET_FILE = 4096

IrAuth = Literal["mac", "signature"]
MacAlg = Literal["hmac-sha256", "hmac-sha1", "pbmac1"]


_CONN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _err(message: str, hint: str = "") -> ConfigError:
    err = ConfigError(message)
    err.hint = hint
    return err


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be text, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} is not valid text (undecodable characters)") from None
    return value


# Each coercer accepts what a TOML file or a command-line option can give and
# returns the normalized value, or raises ConfigError saying what is wrong.
Coercer = Callable[[object], object]


def _opt(inner: Coercer) -> Coercer:
    def coerce(value: object) -> object:
        return None if value is None else inner(value)

    return coerce


def _dn(value: object) -> object:
    text = _text(value, "a distinguished name").strip()
    parse_dn(text)
    return text


def _sans(value: object) -> object:
    items = _text_list(value, "sans")
    return tuple(format_san(gn) for gn in parse_sans(items))


def _url(value: object) -> object:
    return validate_server_url(_text(value, "server_url"))


def _operation_urls(value: object) -> object:
    return parse_operation_urls(_text_list(value, "operation_urls"))


def _profile_label(value: object) -> object:
    return check_profile_label(_text(value, "profile_label"))


def _choice(what: str, choices: tuple[str, ...]) -> Coercer:
    def coerce(value: object) -> object:
        text = _text(value, what).strip().lower()
        if text not in choices:
            raise _err(f"invalid {what} {value!r}", "use one of " + ", ".join(choices))
        return text

    return coerce


def _mac_ref(value: object) -> object:
    text = _text(value, "mac_ref")
    if not text or len(text) > 1024 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _err(
            "invalid mac_ref: it must be 1-1024 characters without control characters",
            "give the reference value exactly as the CA operator sent it",
        )
    return text


def _path(value: object) -> object:
    if isinstance(value, Path):
        path = value
    else:
        text = _text(value, "a path")
        if not text or "\0" in text:
            raise ConfigError("a path must not be empty")
        path = Path(text)
    if not path.is_absolute():
        raise _err(
            f"path {str(path)!r} is not absolute",
            "session files store absolute paths: write the full path starting with /",
        )
    return path


def _paths(value: object) -> object:
    if isinstance(value, (str, Path)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"expected a list of paths, not {type(value).__name__}")
    result = tuple(cast(Path, _path(v)) for v in value)
    if len(set(result)) != len(result):
        raise ConfigError("the same path is listed twice")
    return result


def _text_list(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{what} must be a list of text, not {type(value).__name__}")
    return tuple(_text(v, what) for v in value)


def _key(value: object) -> object:
    from swcmp.keystore.keyref import check_key_setting

    return check_key_setting(_text(value, "key").strip())


def _cert_profile(value: object) -> object:
    text = _text(value, "cert_profile").strip()
    if not text or len(text) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _err(
            "invalid cert_profile: it must be 1-256 characters without control characters",
            "give the profile name exactly as the CA operator configured it",
        )
    return text


#: Bounds of the session's ``mac_iterations`` (the MAC key derivation's iteration count;
#: the same bounds swcmp accepts in a CA's answer).
MAC_ITERATIONS_RANGE = (100, 100_000)


def _mac_iterations(value: object) -> object:
    low, high = MAC_ITERATIONS_RANGE
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _err(
            f"invalid mac_iterations {value!r}: give a whole number from {low} to {high}",
            "the iteration count of the MAC key derivation (PasswordBasedMac or PBMAC1's "
            "PBKDF2; default 10000)",
        )
    return value


#: Bounds of the session's ``timeout`` (seconds for one exchange with the CA).
TIMEOUT_RANGE = (1, 600)


def _timeout(value: object) -> object:
    low, high = TIMEOUT_RANGE
    if isinstance(value, str) and value.strip().removesuffix("s").strip().isdigit():
        value = int(value.strip().removesuffix("s"))
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _err(
            f"invalid timeout {value!r}: give whole seconds from {low} to {high}",
            "the total time one message exchange with the CA may take (default 60)",
        )
    return value


#: Bounds of the session's ``poll_limit`` (seconds a CA transaction may stay waiting, across
#: runs, from its first request) and its default (a day: time for a CA operator to approve).
POLL_LIMIT_RANGE = (1, 30 * 86400)
POLL_LIMIT_DEFAULT = 86400


def _poll_limit(value: object) -> object:
    low, high = POLL_LIMIT_RANGE
    seconds = duration_seconds(value)
    if seconds is None or not low <= seconds <= high:
        raise _err(
            f"invalid poll_limit {value!r}: give a duration from {format_seconds(low)} to "
            f"{format_seconds(high)}, e.g. 1d, 12h, 90m or seconds",
            "how long a CA transaction that the CA keeps answering 'waiting' is polled, "
            "across runs, counted from its request, before it is abandoned (default 1d)",
        )
    return seconds


def _bool(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _err(f"invalid yes/no value {value!r}", "use true or false")


def _expire(value: object) -> object:
    return ExpireTime.parse(value)


def _connections(value: object) -> object:
    names = tuple(v.strip() for v in _text_list(value, "connections"))
    for name in names:
        if not _CONN_RE.fullmatch(name):
            raise _err(
                f"invalid connection name {name!r}",
                "give the name of a connection section in swanctl.conf "
                "(letters, digits, '-' and '_')",
            )
    if len(set(names)) != len(names):
        raise ConfigError("a connection is listed twice")
    return names


@dataclass(frozen=True)
class FieldSpec:
    """How one session setting is checked, stored and named on the command line.

    Attributes:
        name: the attribute of :class:`Session` and key in the TOML file.
        option: the ``swcmp session set`` option, e.g. ``--mac-ref``.
        coerce: turns text, TOML values or Python values into the stored value.
        multi: the option may be repeated and the value is a list.
        path: the value is one or more file paths (relative ones are resolved
            against the caller's directory when set from the command line).
    """

    name: str
    option: str
    coerce: Coercer
    multi: bool = False
    path: bool = False


FIELDS: Final[dict[str, FieldSpec]] = {
    spec.name: spec
    for spec in (
        FieldSpec("entity", "--entity", _opt(_dn)),
        FieldSpec("sans", "--san", _sans, multi=True),
        FieldSpec("ca_name", "--ca-name", _opt(_dn)),
        FieldSpec("server_url", "--server-url", _opt(_url)),
        FieldSpec("profile_label", "--profile-label", _opt(_profile_label)),
        FieldSpec("operation_paths", "--operation-paths",
                  _choice("operation_paths", OPERATION_PATHS)),
        FieldSpec("operation_urls", "--operation-url", _operation_urls, multi=True),
        FieldSpec("ir_auth", "--ir-auth", _choice("ir_auth", IR_AUTH_MODES)),
        FieldSpec("mac_ref", "--mac-ref", _opt(_mac_ref)),
        FieldSpec("mac_secret_file", "--mac-secret-file", _opt(_path), path=True),
        FieldSpec("mac_alg", "--mac-alg", _choice("mac_alg", MAC_ALGS)),
        FieldSpec("mac_iterations", "--mac-iterations", _mac_iterations),
        FieldSpec("auth_cert", "--auth-cert", _opt(_path), path=True),
        FieldSpec("auth_key", "--auth-key", _opt(_path), path=True),
        FieldSpec("trust", "--trust", _paths, multi=True, path=True),
        FieldSpec("key", "--key", _opt(_key)),
        FieldSpec("regenerate", "--regenerate", _bool),
        FieldSpec("key_type", "--key-type", _choice("key_type", KEY_TYPES)),
        FieldSpec("expire_time", "--expire-time", _expire),
        FieldSpec("connections", "--connection", _connections, multi=True),
        FieldSpec("auto_update", "enable-auto-update", _bool),
        FieldSpec("tls_ca_bundle", "--tls-ca-bundle", _opt(_path), path=True),
        FieldSpec("server_cert", "--server-cert", _paths, multi=True, path=True),
        FieldSpec("extra_certs", "--extra-certs", _paths, multi=True, path=True),
        FieldSpec("ignore_keyusage", "--ignore-keyusage", _bool),
        FieldSpec("implicit_confirm", "--implicit-confirm", _bool),
        FieldSpec("cert_profile", "--cert-profile", _opt(_cert_profile)),
        FieldSpec("timeout", "--timeout", _timeout),
        FieldSpec("tls_client_cert", "--tls-client-cert", _opt(_path), path=True),
        FieldSpec("tls_client_key", "--tls-client-key", _opt(_path), path=True),
        FieldSpec("pkcs11_module", "--pkcs11-module", _opt(_path), path=True),
        FieldSpec("pin_file", "--pin-file", _opt(_path), path=True),
        FieldSpec("revoke_superseded", "--revoke-superseded", _bool),
        FieldSpec("granted_with_mods", "--granted-with-mods",
                  _choice("granted_with_mods", GRANTED_WITH_MODS)),
        FieldSpec("renew_with", "--renew-with", _choice("renew_with", RENEW_WITH)),
        FieldSpec("poll_limit", "--poll-limit", _poll_limit),
        FieldSpec("ask_template", "--ask-template", _bool),
    )
}

_ALIASES = {"san": "sans", "connection": "connections", "operation_url": "operation_urls"}

# What follows an option in a hint: its value, or the option that goes with it.
_HINT_VALUE: Final[dict[str, str]] = {
    "mac_secret": "FILE", "trust": "CA.crt", "server_cert": "FILE", "server_url": "URL",
    "tls_ca_bundle": "FILE", "timeout": "SECONDS", "operation_paths": "none|labels|body",
    "operation_urls": "OPERATION=URL", "profile_label": "LABEL",
    "tls_client_cert": "FILE --tls-client-key FILE",
}
_HINT_FIELD: Final[dict[str, str]] = {"mac_secret": "mac_secret_file"}


def hint_for(error: SwcmpError, name: str = "NAME") -> str:
    """The error's hint with the command that applies it, when the error names a
    ``setting`` that is a session field: the CMP library says what to change, the
    application says how (``swcmp session set NAME --trust CA.crt``)."""
    spec = FIELDS.get(_HINT_FIELD.get(error.setting, error.setting))
    if spec is None:
        return error.hint
    value = _HINT_VALUE.get(error.setting, "")
    command = f"`swcmp session set {name} {spec.option}{' ' + value if value else ''}`"
    return f"{error.hint}: {command}" if error.hint else command


def field_name(text: str) -> str:
    """Map what a user may type for a setting (``mac-ref``, ``--san``, ``sans``) to its field.

    Raises:
        ConfigError: no such setting.
    """
    key = text.strip().lstrip("-").replace("-", "_").lower()
    key = _ALIASES.get(key, key)
    if key in FIELDS:
        return key
    raise _err(f"unknown setting {text!r}", "known settings: " + ", ".join(FIELDS))


# --- the session ----------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """One CMP session's settings, always valid: construction checks every value.

    Build one with :meth:`SessionStore.create`, :meth:`SessionStore.load` or
    :func:`set_fields`; direct construction runs the same checks (values are
    normalized, e.g. SANs to ``DNS:...`` form and paths to :class:`Path`).

    Attributes:
        name: the session's name (also its file name).
        entity: the subject DN as the user wrote it (RFC 4514 or slash form).
        sans: subjectAltNames as ``DNS:x``, ``IP:x``, ``EMAIL:x`` or ``URI:x``.
        ca_name: the CA's DN as the user wrote it.
        server_url: where CMP messages are POSTed (http or https).
        profile_label: the RFC 9811 path ``/.well-known/cmp/p/<label>`` put on
            ``server_url`` (which then has no path of its own).
        operation_paths: ``none`` (every message to the server URL), ``labels`` (RFC
            9483 3.3 operation labels added to its path: ``.../initialization``,
            ``.../keyupdate``, ...) or ``body`` (each message's body type added:
            ``.../ir``, ``.../certConf``; the Siemens Mock CA's ``/issuing/<body>``).
        operation_urls: ``OPERATION=URL`` items, one URL per operation for CAs with an
            alias per operation (EJBCA); they win over ``operation_paths``.
        ir_auth: how an initial request is protected: ``mac`` or ``signature``.
        mac_ref: the reference value (senderKID) the CA gave out of band.
        mac_secret_file: the file holding the shared secret (0600); never the secret.
        mac_alg: ``hmac-sha256``, ``hmac-sha1`` (legacy CAs only), both PasswordBasedMac,
            or ``pbmac1`` (PBMAC1 with PBKDF2 and HMAC-SHA256, RFC 9481 6.1.2).
        mac_iterations: the iteration count of the MAC key derivation (100-100000).
        auth_cert: the certificate that signs requests (None: the session's own
            certificate once it has one, see :func:`auth_credentials`).
        auth_key: the key belonging to ``auth_cert``.
        trust: CA certificate files used to verify signed responses.
        key: the key pair's name in swanctl's ``private/`` directory, or an RFC 7512
            PKCS#11 URI naming the token and object label of keys kept in a token.
        regenerate: make a fresh key at each update instead of re-certifying.
        key_type: the type of a newly generated key.
        expire_time: when to renew; see :class:`ExpireTime`.
        connections: strongSwan connections that use the certificate.
        auto_update: renew automatically (enabled only after the checks pass).
        tls_ca_bundle: CA bundle for verifying an https server (None: system store).
        server_cert: pinned CMP server certificates, trusted as signers of answers
            (the router's "verification certificate"; ``openssl cmp -srvcert``).
        extra_certs: certificate files added to the extraCerts of signed requests
            (e.g. the root, for CAs that want the whole chain).
        ignore_keyusage: accept answers signed by a certificate whose keyUsage lacks
            digitalSignature (CAs that sign with a keyCertSign-only root).
        implicit_confirm: ask the CA to skip the certConf/pkiConf round trip.
        cert_profile: certificate profile named in requests (RFC 9483 3.1).
        timeout: seconds one exchange with the CA may take in all, from connecting to
            the answer's last byte (polling a waiting CA has its own limit).
        tls_client_cert: TLS client certificate for a CA behind mutual TLS (https).
        tls_client_key: its private key (a 0600 file).
        pkcs11_module: the PKCS#11 module of the token (with a key URI).
        pin_file: the file holding the token's user PIN (0600); never the PIN.
        granted_with_mods: a certificate granted with modifications is taken when its
            subject, SANs and key are the ones asked (``check``, default), always
            (``accept``, logged; the key must still be ours) or never (``reject``).
        ask_template: ask the CA's certificate request template (genm certReqTemplate)
            before an IR and before a key update that makes a new key, and refuse a
            request it forbids before sending it (off for a CA that cannot take the
            question).
        revoke_superseded: after a key update, revoke the replaced certificate (rr,
            reason superseded); a failure is retried and never undoes the renewal.
        renew_with: how a renewal asks for the new certificate: ``kur`` (default), ``cr``
            (a certificate request signed with the current certificate) or ``p10cr`` (a
            PKCS#10 request signed by the new key, in a message signed with the current
            certificate), for CAs whose policy refuses key updates.
        poll_limit: seconds a renewal's CA transaction may stay waiting (answered
            'waiting', or resumed after an interruption), across runs, counted from its
            request; then it is abandoned and the next attempt starts a new one.
        entity_dn: ``entity`` parsed (derived).
        ca_dn: ``ca_name`` parsed (derived).
        san_names: ``sans`` parsed (derived).
    """

    name: SessionName
    entity: str | None = None
    sans: tuple[str, ...] = ()
    ca_name: str | None = None
    server_url: str | None = None
    profile_label: str | None = None
    operation_paths: str = "none"
    operation_urls: tuple[str, ...] = ()
    ir_auth: IrAuth = "mac"
    mac_ref: str | None = None
    mac_secret_file: Path | None = None
    mac_alg: MacAlg = "hmac-sha256"
    mac_iterations: int = 10_000
    auth_cert: Path | None = None
    auth_key: Path | None = None
    trust: tuple[Path, ...] = ()
    key: str | None = None
    regenerate: bool = False
    key_type: str = "rsa:3072"
    expire_time: ExpireTime = field(default_factory=ExpireTime)
    connections: tuple[str, ...] = ()
    auto_update: bool = False
    tls_ca_bundle: Path | None = None
    server_cert: tuple[Path, ...] = ()
    extra_certs: tuple[Path, ...] = ()
    ignore_keyusage: bool = False
    implicit_confirm: bool = False
    cert_profile: str | None = None
    timeout: int = 60
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    pkcs11_module: Path | None = None
    pin_file: Path | None = None
    revoke_superseded: bool = False
    granted_with_mods: str = "check"
    renew_with: str = "kur"
    poll_limit: int = POLL_LIMIT_DEFAULT
    ask_template: bool = True
    entity_dn: x509.Name | None = field(init=False, repr=False, compare=False)
    ca_dn: x509.Name | None = field(init=False, repr=False, compare=False)
    san_names: tuple[x509.GeneralName, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_session_name(self.name))
        for spec in FIELDS.values():
            try:
                value = spec.coerce(getattr(self, spec.name))
            except ConfigError as e:
                raise _field_error(spec, e) from None
            object.__setattr__(self, spec.name, value)
        entity = parse_dn(self.entity) if self.entity is not None else None
        ca_dn = parse_dn(self.ca_name) if self.ca_name is not None else None
        object.__setattr__(self, "entity_dn", entity)
        object.__setattr__(self, "ca_dn", ca_dn)
        object.__setattr__(self, "san_names", tuple(parse_san(s) for s in self.sans))
        if self.profile_label is not None and self.server_url is not None:
            try:
                with_profile(self.server_url, self.profile_label)
            except ConfigError as e:
                raise _err(str(e.args[0]), f"{e.hint}: `swcmp session set {self.name} "
                           f"--server-url URL`, or `swcmp session unset {self.name} "
                           "profile_label`") from None
        if self.renew_with == "p10cr" and self.key is not None:
            from swcmp.keystore.keyref import names_token

            if names_token(self.key):
                raise ConfigError("a p10cr renewal signs a PKCS#10 request with the key, which "
                                  "swcmp cannot do for a key in a token").with_hint(
                    f"renew with a cr instead: `swcmp session set {self.name} --renew-with cr`")
        if self.regenerate and self.key is not None:
            from swcmp.keystore.keyref import names_one_pair

            if names_one_pair(self.key):
                # a new pair gets a fresh CKA_ID, which a URI fixing id= would not find
                raise ConfigError("a key URI with id= names one key pair for good, so it "
                                  "cannot be combined with regenerate").with_hint(
                    "drop id= from the URI (the object= label is enough), or "
                    f"`swcmp session set {self.name} --regenerate false`")

    def values(self) -> dict[str, object]:
        """The settings by field name (not the derived attributes, not ``name``)."""
        return {name: getattr(self, name) for name in FIELDS}

    def describe(self) -> dict[str, object]:
        """A JSON-ready view for ``session show`` and ``--json``: no secret in it.

        Every setting appears (None for unset ones); paths and the expire time
        are text; ``entity_wire`` and ``ca_name_wire`` show the parsed DNs in
        slash (wire) order, i.e. what the CA will see. The MAC secret file's
        path is shown, never its content.
        """
        out: dict[str, object] = {"name": self.name}
        for key, value in self.values().items():
            if isinstance(value, (Path, ExpireTime)):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            out[key] = value
        out["entity_wire"] = format_dn(self.entity_dn) if self.entity_dn is not None else None
        out["ca_name_wire"] = format_dn(self.ca_dn) if self.ca_dn is not None else None
        return out


def _field_error(spec: FieldSpec, e: ConfigError) -> ConfigError:
    message = str(e.args[0]) if e.args else str(e)
    if spec.name not in message:
        message = f"{spec.name}: {message}"
    return _err(message, e.hint)


def _default(name: str) -> object:
    f = next(f for f in dataclasses.fields(Session) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def set_fields(
    session: Session, values: Mapping[str, object], *, base_dir: Path | None = None
) -> Session:
    """Return a copy of ``session`` with ``values`` set, checked like a loaded file.

    Args:
        session: the current settings.
        values: field names (or option spellings, see :func:`field_name`) to
            new values: text as typed, lists for repeated options, or typed values.
        base_dir: resolve relative paths against this directory (the CLI passes
            the current directory); without it relative paths are refused.

    Raises:
        ConfigError: an unknown field or an invalid value; nothing is changed.
    """
    changes: dict[str, object] = {}
    for key, value in values.items():
        name = field_name(key)
        spec = FIELDS[name]
        if spec.path and base_dir is not None and value is not None:
            value = _absolutize(value, base_dir)
        changes[name] = value
    return dataclasses.replace(session, **changes)  # type: ignore[arg-type]


def _absolutize(value: object, base_dir: Path) -> object:
    if isinstance(value, (list, tuple)):
        return [_absolutize(v, base_dir) for v in value]
    if isinstance(value, (str, Path)) and str(value):
        # expanduser for "~/ca.pem"; no resolve(): a symlinked path is kept as given.
        return base_dir / Path(value).expanduser()
    return value


def unset_fields(session: Session, names: Iterable[str]) -> Session:
    """Return a copy of ``session`` with the named fields reset to their defaults.

    Raises:
        ConfigError: an unknown field name.
    """
    changes = {field_name(n): _default(field_name(n)) for n in names}
    return dataclasses.replace(session, **changes)  # type: ignore[arg-type]


def session_key_file(session: Session, paths: Paths) -> Path | None:
    """``private/<key>.key`` for the session's key pair, or None when no key is set
    (or the key is in a token: no file)."""
    from swcmp.keystore.keyref import key_file_name

    name = key_file_name(session.key)
    return paths.key_file(name) if name else None


def auth_credentials(session: Session, paths: Paths) -> tuple[Path | None, Path | None]:
    """The certificate and key that sign requests, after applying the defaults.

    ``auth_cert`` defaults to the session's own certificate (``x509/<session>.crt``)
    once it exists; ``auth_key`` defaults to the session's key file.

    Returns:
        ``(certificate path or None, key path or None)``.
    """
    cert = session.auth_cert
    if cert is None:
        own = paths.cert_file(session.name)
        cert = own if own.exists() else None
    key = session.auth_key if session.auth_key is not None else session_key_file(session, paths)
    return cert, key


def tls_client_files(session: Session) -> tuple[Path, Path] | None:
    """The TLS client certificate and key files, checked; None when not configured.

    Raises:
        ConfigError: only one of the two is set, the key file is missing, or the key
            file may be read by others than its owner (it must be 0600).
    """
    cert, key = session.tls_client_cert, session.tls_client_key
    if cert is None and key is None:
        return None
    fix = f"swcmp session set {session.name} --tls-client-cert FILE --tls-client-key FILE"
    if cert is None or key is None:
        missing = "--tls-client-cert" if cert is None else "--tls-client-key"
        raise _err(f"session {session.name} has a TLS client "
                   f"{'key' if cert is None else 'certificate'} but no {missing}",
                   f"give both: {fix}")
    try:
        info = key.stat()
    except OSError as e:
        raise _err(f"cannot read the TLS client key {key}: {e.strerror}", fix) from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise _err(
            f"the TLS client key {key} has mode {stat.S_IMODE(info.st_mode):04o}: others "
            "may read it", f"chmod 600 {key}")
    return cert, key


def read_mac_secret(session: Session) -> bytes:
    """Read the session's MAC secret from its file, at the moment it is needed.

    One trailing line break is removed (files written with ``echo`` have one).
    The secret is returned and nowhere else kept; do not log it.

    Raises:
        ConfigError: no secret file is configured, or it is missing, unreadable,
            not a regular file, readable by group or others, too large or empty.
            The message names the file and never includes its content.
    """
    path = session.mac_secret_file
    fix = f"swcmp session set {session.name} --mac-secret-file FILE"
    if path is None:
        raise _err(f"session {session.name} has no MAC secret file", f"set one: {fix}")
    try:
        # O_NONBLOCK: a FIFO in its place is refused below instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise _err(
            f"cannot read the MAC secret file {path}: {e.strerror}",
            f"create it with mode 0600 or point the session elsewhere: {fix}",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _err(f"the MAC secret file {path} is not a regular file", fix)
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise _err(
                f"the MAC secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}: "
                "others may read the secret", f"chmod 600 {path}")
        if info.st_size > _MAX_SECRET_FILE:
            raise _err(
                f"the MAC secret file {path} is larger than {_MAX_SECRET_FILE} bytes",
                "it must contain only the secret",
            )
        data = b""
        while chunk := os.read(fd, _MAX_SECRET_FILE + 1 - len(data)):
            data += chunk
            if len(data) > _MAX_SECRET_FILE:
                break
    except OSError as e:
        raise _err(f"cannot read the MAC secret file {path}: {e.strerror}", fix) from None
    finally:
        os.close(fd)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise _err(f"the MAC secret file {path} is empty", "write the secret the CA gave into it")
    return data
