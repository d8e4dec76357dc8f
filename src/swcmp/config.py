"""CMP sessions on disk, validated in one place, and swcmp's directory layout.

A session is one TOML file, ``<config_dir>/sessions/<name>.toml``; the file
name is the session name. The file is human-readable and may be edited by
hand: every value is checked by the same code when it is set from the command
line and when a file is loaded, and a bad file produces a
:class:`~swcmp.errors.SessionFileError` naming the file (and the line where
known) instead of a crash.

Storage layout (the directories come from :class:`Paths`)::

    <config_dir>/sessions/<session>.toml      session settings (0640)
    <config_dir>/sessions/.<session>.lock     lock for editing the settings
    <state_dir>/locks/<session>.lock          lock held by a renewal run
    <state_dir>/sessions/<session>/           per-session state (statistics, transactions)
    <swanctl_dir>/private/<key>.key           the session's private key, PKCS#8 PEM, 0600
    <swanctl_dir>/x509/<session>.crt          the session's current certificate, PEM
    <swanctl_dir>/x509ca/<session>-ca<N>.crt  CA certificates the CA returned, N = 1, 2, ...
                                              in the order the CA sent them

``<key>`` is the session's ``key`` setting (a key pair belongs to one session;
the name lets an existing swanctl key be adopted), the certificate is named
after the session so that swanctl.conf can refer to it by a stable name.

The MAC secret is never held in a :class:`Session`: only the path of its file
is, and :func:`read_mac_secret` reads it when a request needs it.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from cryptography import x509

from swcmp import fsutil
from swcmp.errors import ConfigError, SessionFileError, StorageError, StorageIOError, SwcmpError
from swcmp.names import (
    SessionName,
    format_dn,
    format_san,
    parse_dn,
    parse_san,
    parse_sans,
    validate_session_name,
)

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "DEFAULT_STATE_DIR",
    "DEFAULT_SWANCTL_DIR",
    "FIELDS",
    "KEY_TYPES",
    "ExpireTime",
    "Paths",
    "Session",
    "SessionListing",
    "SessionStore",
    "auth_credentials",
    "dumps_toml",
    "field_name",
    "read_mac_secret",
    "session_from_toml",
    "session_key_file",
    "session_to_toml",
    "set_fields",
    "tls_client_files",
    "unset_fields",
    "validate_server_url",
]

DEFAULT_CONFIG_DIR: Final = Path("/etc/swcmp")
DEFAULT_STATE_DIR: Final = Path("/var/lib/swcmp")
DEFAULT_SWANCTL_DIR: Final = Path("/etc/swanctl")

# The same list as swcmp.cmp.keys.KEY_TYPES (tests/test_cli.py checks it): keys imports the
# protocol package's OIDs, which this layer must not load.
KEY_TYPES: Final = ("rsa:2048", "rsa:3072", "rsa:4096", "ecdsa:p256", "ecdsa:p384", "ed25519")
IR_AUTH_MODES: Final = ("mac", "signature")
MAC_ALGS: Final = ("hmac-sha256", "hmac-sha1")
FILE_FORMAT: Final = 1
SESSION_FILE_MODE: Final = 0o640
_MAX_SECRET_FILE = 4096

IrAuth = Literal["mac", "signature"]
MacAlg = Literal["hmac-sha256", "hmac-sha1"]


# --- directories ------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """The three directories swcmp uses, and where each file lives in them.

    Attributes:
        config_dir: session settings (default ``/etc/swcmp``, env ``SWCMP_CONFIG_DIR``).
        state_dir: statistics, locks, in-flight transactions (default
            ``/var/lib/swcmp``, env ``SWCMP_STATE_DIR``).
        swanctl_dir: strongSwan's credential directory (default ``/etc/swanctl``,
            env ``SWCMP_SWANCTL_DIR``).
    """

    config_dir: Path = DEFAULT_CONFIG_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    swanctl_dir: Path = DEFAULT_SWANCTL_DIR

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_dir: Path | None = None,
        state_dir: Path | None = None,
        swanctl_dir: Path | None = None,
    ) -> Paths:
        """Resolve the directories: explicit argument, else environment, else default.

        Args:
            environ: the environment to read (``os.environ`` when None).
            config_dir: from ``--config-dir``, overrides the environment.
            state_dir: from ``--state-dir``.
            swanctl_dir: from ``--swanctl-dir``.
        """
        env = os.environ if environ is None else environ

        def pick(given: Path | None, var: str, default: Path) -> Path:
            if given is not None:
                return Path(given)
            value = env.get(var, "")
            return Path(value) if value else default

        return cls(
            config_dir=pick(config_dir, "SWCMP_CONFIG_DIR", DEFAULT_CONFIG_DIR),
            state_dir=pick(state_dir, "SWCMP_STATE_DIR", DEFAULT_STATE_DIR),
            swanctl_dir=pick(swanctl_dir, "SWCMP_SWANCTL_DIR", DEFAULT_SWANCTL_DIR),
        )

    @property
    def sessions_dir(self) -> Path:
        """``<config_dir>/sessions``: one TOML file per session."""
        return self.config_dir / "sessions"

    @property
    def lock_dir(self) -> Path:
        """``<state_dir>/locks``: one lock file per session for renewal runs."""
        return self.state_dir / "locks"

    @property
    def private_dir(self) -> Path:
        """swanctl's ``private/`` directory (private keys)."""
        return self.swanctl_dir / "private"

    @property
    def x509_dir(self) -> Path:
        """swanctl's ``x509/`` directory (end-entity certificates)."""
        return self.swanctl_dir / "x509"

    @property
    def x509ca_dir(self) -> Path:
        """swanctl's ``x509ca/`` directory (CA certificates)."""
        return self.swanctl_dir / "x509ca"

    def session_state_dir(self, name: str) -> Path:
        """``<state_dir>/sessions/<name>``: the session's state files."""
        return self.state_dir / "sessions" / validate_session_name(name)

    def key_file(self, key_name: str) -> Path:
        """``private/<key_name>.key`` (mode 0600)."""
        return self.private_dir / f"{_check_key_name(key_name)}.key"

    def cert_file(self, session_name: str) -> Path:
        """``x509/<session>.crt``: the session's current certificate."""
        return self.x509_dir / f"{validate_session_name(session_name)}.crt"

    def ca_cert_file(self, session_name: str, index: int) -> Path:
        """``x509ca/<session>-ca<index>.crt``, ``index`` counting from 1."""
        if index < 1:
            raise ValueError("CA certificate index counts from 1")
        return self.x509ca_dir / f"{validate_session_name(session_name)}-ca{index}.crt"

    def ca_cert_files(self, session_name: str) -> tuple[Path, ...]:
        """The session's stored CA certificates that exist, in index order."""
        name = validate_session_name(session_name)
        pattern = re.compile(re.escape(name) + r"-ca([1-9][0-9]*)\.crt")
        try:
            entries = list(self.x509ca_dir.iterdir())
        except FileNotFoundError:
            return ()
        except OSError as e:
            raise fsutil.storage_error(e, self.x509ca_dir, "list") from e
        found: list[tuple[int, Path]] = []
        for entry in entries:
            m = pattern.fullmatch(entry.name)
            if m:
                found.append((int(m.group(1)), entry))
        return tuple(p for _, p in sorted(found))


# --- value types and validators ---------------------------------------------------------

_DURATION_RE = re.compile(
    r"(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?"
)
_MAX_DURATION = timedelta(days=36500)


@dataclass(frozen=True)
class ExpireTime:
    """When to renew: a share of the validity period still remaining, or a fixed time.

    Exactly one of the attributes is set.

    Attributes:
        percent: renew when the *remaining* validity falls to this percentage
            (10-100) of the certificate's total validity period. 50 (the
            default) renews half-way; 100 renews at once.
        duration: renew when the remaining validity falls to this duration.
    """

    percent: int | None = 50
    duration: timedelta | None = None

    def __post_init__(self) -> None:
        if (self.percent is None) == (self.duration is None):
            raise ConfigError("expire_time needs exactly one of a percentage or a duration")
        if self.percent is not None and not 10 <= self.percent <= 100:
            raise ConfigError(
                f"expire_time {self.percent}% is out of range",
            )
        if self.duration is not None and not timedelta(0) < self.duration <= _MAX_DURATION:
            raise ConfigError("expire_time duration must be positive and at most 100 years")

    @classmethod
    def parse(cls, value: object) -> ExpireTime:
        """Read ``50``, ``"50%"`` or a duration such as ``"30d"``, ``"1d12h"``, ``"90m"``.

        Duration units: ``w`` weeks, ``d`` days, ``h`` hours, ``m`` minutes, ``s`` seconds.

        Raises:
            ConfigError: anything else, or a percentage outside 10-100.
        """
        if isinstance(value, ExpireTime):
            return value
        hint = (
            "give a percentage 10-100 of the validity period that must REMAIN when "
            "renewing (e.g. 50), or a time before expiry such as 30d, 12h or 90m"
        )
        if isinstance(value, int) and not isinstance(value, bool):
            percent = value
        elif isinstance(value, str):
            text = value.strip().lower().replace(" ", "")
            number = text.removesuffix("%")
            if number.isdigit() and number.isascii():
                percent = int(number)
            else:
                m = _DURATION_RE.fullmatch(text)
                if not text or not m:
                    err = ConfigError(f"invalid expire_time {value!r}")
                    err.hint = hint
                    raise err
                parts = {k: int(v) for k, v in m.groupdict().items() if v is not None}
                try:
                    duration = timedelta(
                        weeks=parts.get("w", 0),
                        days=parts.get("d", 0),
                        hours=parts.get("h", 0),
                        minutes=parts.get("m", 0),
                        seconds=parts.get("s", 0),
                    )
                except OverflowError:
                    duration = _MAX_DURATION * 2
                try:
                    return cls(percent=None, duration=duration)
                except ConfigError as e:
                    e.hint = hint
                    raise
        else:
            raise ConfigError(f"invalid expire_time {value!r}: expected a number or text")
        try:
            return cls(percent=percent)
        except ConfigError as e:
            e.hint = hint
            raise

    def __str__(self) -> str:
        """``50%`` or a compact duration such as ``1d12h``."""
        if self.percent is not None:
            return f"{self.percent}%"
        assert self.duration is not None
        seconds = int(self.duration.total_seconds())
        out = []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            count, seconds = divmod(seconds, size)
            if count:
                out.append(f"{count}{unit}")
        return "".join(out)

    @classmethod
    def remaining_percent(cls, percent: int) -> ExpireTime:
        """Renew when ``percent`` of the validity period remains."""
        return cls(percent=percent)

    @classmethod
    def before_expiry(cls, duration: timedelta) -> ExpireTime:
        """Renew ``duration`` before the certificate expires."""
        return cls(percent=None, duration=duration)

    def to_toml(self) -> int | str:
        """The value as stored: an integer percentage or a duration string."""
        return self.percent if self.percent is not None else str(self)

    def renew_at(self, not_before: datetime, not_after: datetime) -> datetime:
        """The moment a certificate valid from ``not_before`` to ``not_after`` is due.

        For a percentage p this is ``not_after - p% of (not_after - not_before)``,
        i.e. when only p% of the validity period remains. For a duration it is
        ``not_after - duration``, but never before ``not_before``.
        """
        lifetime = not_after - not_before
        if self.percent is not None:
            # Integer microseconds: exact and independent of float rounding.
            micros = lifetime // timedelta(microseconds=1)
            remaining = timedelta(microseconds=math.ceil(micros * self.percent / 100))
        else:
            assert self.duration is not None
            remaining = min(self.duration, lifetime)
        return not_after - remaining


_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CONN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _check_key_name(value: str) -> str:
    if isinstance(value, str) and _NAME_RE.fullmatch(value) and not value.endswith(".key"):
        return value
    err = ConfigError(f"invalid key name {value!r}")
    err.hint = (
        "the key is private/NAME.key under the swanctl directory: use 1-64 letters, digits, "
        "'-', '_' or '.', not starting with '.' and without the .key suffix"
    )
    raise err


def validate_server_url(value: str) -> str:
    """Check a CMP server URL: http or https, a host, a valid port, no fragment.

    Returns:
        The URL without surrounding blanks.

    Raises:
        ConfigError: the URL is unusable, with an example of a good one.
    """
    text = value.strip()
    hint = (
        "write it like http://ca.example.net:8080/pkix/ or https://ca.example.net/.well-known/cmp"
    )
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise _err(f"invalid server URL {value!r}: {e}", hint) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _err(f"invalid server URL {value!r}: the scheme must be http or https", hint)
    if not parts.hostname:
        raise _err(f"invalid server URL {value!r}: no host", hint)
    if port == 0:
        raise _err(f"invalid server URL {value!r}: port 0", hint)
    if parts.fragment or "#" in text:
        raise _err(f"invalid server URL {value!r}: a URL for POST has no #fragment", hint)
    if any(c.isspace() for c in text) or not text.isascii():
        raise _err(f"invalid server URL {value!r}: spaces or non-ASCII characters", hint)
    host = parts.hostname
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _err(f"invalid server URL {value!r}: bad IPv6 address", hint) from None
    return text


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
    text = _text(value, "key").strip()
    from swcmp.pkcs11 import TokenUri, is_token_uri

    if is_token_uri(text):
        TokenUri.parse(text)  # refused here, not at the first renewal
        return text
    return _check_key_name(text)


def _cert_profile(value: object) -> object:
    text = _text(value, "cert_profile").strip()
    if not text or len(text) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _err(
            "invalid cert_profile: it must be 1-256 characters without control characters",
            "give the profile name exactly as the CA operator configured it",
        )
    return text


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
        FieldSpec("ir_auth", "--ir-auth", _choice("ir_auth", IR_AUTH_MODES)),
        FieldSpec("mac_ref", "--mac-ref", _opt(_mac_ref)),
        FieldSpec("mac_secret_file", "--mac-secret-file", _opt(_path), path=True),
        FieldSpec("mac_alg", "--mac-alg", _choice("mac_alg", MAC_ALGS)),
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
    )
}

_ALIASES = {"san": "sans", "connection": "connections"}

# What follows an option in a hint: its value, or the option that goes with it.
_HINT_VALUE: Final[dict[str, str]] = {
    "mac_secret": "FILE", "trust": "CA.crt", "server_cert": "FILE", "server_url": "URL",
    "tls_ca_bundle": "FILE", "timeout": "SECONDS",
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
        ir_auth: how an initial request is protected: ``mac`` or ``signature``.
        mac_ref: the reference value (senderKID) the CA gave out of band.
        mac_secret_file: the file holding the shared secret (0600); never the secret.
        mac_alg: ``hmac-sha256`` or ``hmac-sha1`` (legacy CAs only).
        auth_cert: the certificate that signs requests (None: the session's own
            certificate once it has one, see :func:`auth_credentials`).
        auth_key: the key belonging to ``auth_cert``.
        trust: CA certificate files used to verify signed responses.
        key: the key pair's name in swanctl's ``private/`` directory, or an RFC 7512
            ``pkcs11:`` URI naming the token and object label of keys kept in a token.
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
        pkcs11_module: the PKCS#11 module of the token (with a ``pkcs11:`` key).
        pin_file: the file holding the token's user PIN (0600); never the PIN.
        entity_dn: ``entity`` parsed (derived).
        ca_dn: ``ca_name`` parsed (derived).
        san_names: ``sans`` parsed (derived).
    """

    name: SessionName
    entity: str | None = None
    sans: tuple[str, ...] = ()
    ca_name: str | None = None
    server_url: str | None = None
    ir_auth: IrAuth = "mac"
    mac_ref: str | None = None
    mac_secret_file: Path | None = None
    mac_alg: MacAlg = "hmac-sha256"
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
    """``private/<key>.key`` for the session's key pair, or None when no key is set."""
    if session.key and session.key.lower().startswith("pkcs11:"):
        return None  # the key is in a token: no file
    return paths.key_file(session.key) if session.key else None


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
            not a regular file, too large or empty. The message names the file
            and never includes its content.
    """
    path = session.mac_secret_file
    fix = f"swcmp session set {session.name} --mac-secret-file FILE"
    if path is None:
        raise _err(f"session {session.name} has no MAC secret file", f"set one: {fix}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _err(
            f"cannot read the MAC secret file {path}: {e.strerror}",
            f"create it with mode 0600 or point the session elsewhere: {fix}",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _err(f"the MAC secret file {path} is not a regular file", fix)
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


# --- TOML ------------------------------------------------------------------------------

TomlValue = str | bool | int | list[str]
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            # TOML basic strings may not hold raw control characters.
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_value(value: TomlValue) -> str:
    # bool before int: bool is a subclass of int in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"integer {value} does not fit in TOML's 64 bits")
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        items = [_toml_string(v) if isinstance(v, str) else _bad_toml(v) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= 80:
            return one_line
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    return _bad_toml(value)


def _bad_toml(value: object) -> str:
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(values: Mapping[str, TomlValue], *, header: Iterable[str] = ()) -> str:
    """Write a flat TOML document: top-level keys with strings, bools, ints, lists of strings.

    ``tomllib.loads(dumps_toml(d)) == d`` for every such mapping.

    Args:
        values: keys and values, written in this order.
        header: comment lines put at the top (without the ``#``).

    Raises:
        TypeError: a value of another type.
        ValueError: text that is not valid Unicode, or an integer beyond 64 bits.
    """
    lines = [f"# {line}".rstrip() for text in header for line in text.splitlines() or [""]]
    for key, value in values.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    doc = "\n".join(lines) + "\n"
    try:
        doc.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text that cannot be written as UTF-8: {e.reason}") from None
    return doc


def session_to_toml(session: Session) -> str:
    """The TOML text of a session file. Unset (None) settings are left out."""
    values: dict[str, TomlValue] = {"format": FILE_FORMAT}
    for name, value in session.values().items():
        if value is None:
            continue
        if isinstance(value, ExpireTime):
            values[name] = value.to_toml()
        elif isinstance(value, Path):
            values[name] = str(value)
        elif isinstance(value, tuple):
            values[name] = [str(v) for v in value]
        else:
            values[name] = cast(TomlValue, value)
    header = (
        f"swcmp CMP session {session.name!r}.",
        f"Change it with `swcmp session set {session.name} ...`; hand edits are checked on load.",
        "expire_time: percent of the validity period that REMAINS when renewing, or e.g. 30d.",
    )
    return dumps_toml(values, header=header)


_TOML_LINE_RE = re.compile(r"at line (\d+)")


def _line_of(text: str, key: str) -> int | None:
    # [ \t]* rather than \s*: \s would run across blank lines and report the wrong one.
    pattern = re.compile(
        rf"^[ \t]*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')[ \t]*=",
        re.MULTILINE,
    )
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def session_from_toml(name: str, text: str, *, path: Path) -> Session:
    """Parse and check a session file's text.

    Raises:
        SessionFileError: a TOML syntax error (with its line), an unknown or
            misspelt setting, a value of the wrong type or an invalid value;
            the message starts with the file's path.
    """

    def fail(message: str, line: int | None, hint: str = "") -> SessionFileError:
        where = f"{path}:{line}" if line else str(path)
        return SessionFileError(
            f"{where}: {message}",
            path=str(path),
            line=line,
            hint=hint or f"fix the file, or delete it with `swcmp session delete {name}`",
        )

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_LINE_RE.search(str(e))
        raise fail(f"not valid TOML: {e}", int(m.group(1)) if m else None) from None
    fmt = data.pop("format", FILE_FORMAT)
    if fmt != FILE_FORMAT:
        raise fail(
            f"format {fmt!r} is not supported (this swcmp reads format {FILE_FORMAT})",
            _line_of(text, "format"),
            "the file was written by another swcmp version",
        )
    for key in data:
        if key not in FIELDS:
            raise fail(
                f"unknown setting {key!r}",
                _line_of(text, key),
                "known settings: " + ", ".join(FIELDS),
            )
    try:
        session_name = validate_session_name(name)
    except ConfigError as e:
        raise fail(str(e.args[0]), None, e.hint) from None
    for key, value in data.items():
        try:
            FIELDS[key].coerce(value)
        except ConfigError as e:
            raise fail(_field_error(FIELDS[key], e).args[0], _line_of(text, key), e.hint) from None
    try:
        return Session(name=session_name, **data)
    except (ConfigError, TypeError) as e:
        raise fail(str(e.args[0]) if e.args else str(e), None) from None


# --- the store -------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionListing:
    """What :meth:`SessionStore.list` found: good sessions and per-file errors."""

    sessions: tuple[Session, ...]
    errors: tuple[SessionFileError, ...]


class SessionStore:
    """Sessions as files under ``<config_dir>/sessions``."""

    def __init__(self, config_dir: Path) -> None:
        """Use ``config_dir`` (the directory need not exist until a session is saved)."""
        self.config_dir = Path(config_dir)
        self.sessions_dir = self.config_dir / "sessions"

    def path_for(self, name: str) -> Path:
        """The file of session ``name`` (after validating the name)."""
        return self.sessions_dir / f"{validate_session_name(name)}.toml"

    def exists(self, name: str) -> bool:
        """Whether a file for session ``name`` exists."""
        return self.path_for(name).exists()

    def create(self, name: str, values: Mapping[str, object] | None = None) -> Session:
        """Create a new session with default settings (plus ``values``) and save it.

        Raises:
            ConfigError: invalid name or values, or the session already exists.
            StorageError: the file cannot be written.
        """
        session = Session(name=validate_session_name(name))
        if values:
            session = set_fields(session, values)
        self._check_key_unused(session)
        fsutil.ensure_dir(self.sessions_dir, mode=0o750)
        path = self.path_for(name)
        try:
            fsutil.atomic_write(
                path, session_to_toml(session).encode(), mode=SESSION_FILE_MODE, exclusive=True
            )
        except StorageError as e:
            if isinstance(e, StorageIOError) and e.errno == errno.EEXIST:
                raise _err(
                    f"session {name} already exists ({path})",
                    f"change it with `swcmp session set {name} ...` or delete it first",
                ) from None
            raise
        return session

    def load(self, name: str) -> Session:
        """Read and check session ``name``.

        Raises:
            ConfigError: invalid name, or no such session.
            SessionFileError: the file is unreadable or invalid.
        """
        path = self.path_for(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise _err(
                f"no session named {name}", f"create it with `swcmp session create {name}`"
            ) from None
        except OSError as e:
            raise SessionFileError(
                f"{path}: cannot read: {e.strerror}",
                path=str(path),
                hint="run swcmp as root or fix the file's permissions",
            ) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise SessionFileError(
                f"{path}:{line}: not valid UTF-8", path=str(path), line=line
            ) from None
        return session_from_toml(name, text, path=path)

    def save(self, session: Session) -> None:
        """Write ``session`` atomically, replacing its file.

        Raises:
            StorageError: the file cannot be written (the old file stays intact).
        """
        fsutil.ensure_dir(self.sessions_dir, mode=0o750)
        fsutil.atomic_write(
            self.path_for(session.name),
            session_to_toml(session).encode("utf-8"),
            mode=SESSION_FILE_MODE,
        )

    def update(
        self,
        name: str,
        *,
        set_values: Mapping[str, object] | None = None,
        unset: Iterable[str] = (),
        base_dir: Path | None = None,
    ) -> Session:
        """Load, change and save session ``name`` under its edit lock.

        ``unset`` is applied first, then ``set_values`` (see :func:`set_fields`).
        Nothing is written when a value is invalid.

        Returns:
            The saved session.
        """
        fsutil.ensure_dir(self.sessions_dir, mode=0o750)
        name = validate_session_name(name)
        with fsutil.exclusive_lock(
            self.sessions_dir, f".{name}", what=f"the settings of session {name}"
        ):
            session = self.load(name)
            session = unset_fields(session, unset)
            if set_values:
                session = set_fields(session, set_values, base_dir=base_dir)
            self._check_key_unused(session)
            self.save(session)
        return session

    def _check_key_unused(self, session: Session) -> None:
        """One key pair belongs to one session: a renewal with a new key would break
        any other session that certifies the same key file."""
        if session.key is None:
            return
        for other in self.list().sessions:
            if other.name != session.name and other.key == session.key:
                raise _err(
                    f"key pair {session.key!r} already belongs to session {other.name}",
                    f"give session {session.name} its own key: "
                    f"`swcmp session set {session.name} --key {session.name}`",
                )

    def delete(self, name: str) -> None:
        """Delete session ``name``'s file (keys, certificates and state are left alone).

        Raises:
            ConfigError: no such session.
            StorageError: the file cannot be removed.
        """
        path = self.path_for(name)
        if not fsutil.remove_file(path, missing_ok=True):
            raise _err(f"no session named {name}", "`swcmp session list` shows the sessions")

    def names(self) -> tuple[str, ...]:
        """File stems of all ``*.toml`` files in the sessions directory, sorted.

        Hidden files (temporary files, edit locks) are skipped; the names are not
        validated here (:meth:`list` reports invalid ones).
        """
        try:
            entries = sorted(self.sessions_dir.iterdir())
        except FileNotFoundError:
            return ()
        except OSError as e:
            raise fsutil.storage_error(e, self.sessions_dir, "list") from e
        return tuple(
            p.name.removesuffix(".toml")
            for p in entries
            if p.name.endswith(".toml") and not p.name.startswith(".")
        )

    def list(self) -> SessionListing:
        """Load every session; a bad file becomes an entry in ``errors``, not an exception.

        Raises:
            StorageError: only when the sessions directory itself cannot be read.
        """
        sessions: list[Session] = []
        errors: list[SessionFileError] = []
        for stem in self.names():
            path = self.sessions_dir / f"{stem}.toml"
            try:
                sessions.append(self.load(stem))
            except SessionFileError as e:
                errors.append(e)
            except ConfigError as e:
                # An invalid file name (e.g. "bad name.toml") or a vanished file.
                errors.append(SessionFileError(f"{path}: {e.args[0]}", path=str(path), hint=e.hint))
        return SessionListing(sessions=tuple(sessions), errors=tuple(errors))
