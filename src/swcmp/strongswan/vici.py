"""charon's VICI interface: one session per operation, typed answers, our own errors.

This package is the only one that imports :mod:`vici`, and this module the only
one in it that does. :func:`open_session` opens one VICI session on one socket;
the socket can be injected (``connect``), so that the deployers and the start
hook can be tested against a scripted charon over a socketpair as well as
against real ones. Key material is sent to charon but never logged or put in an
exception.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, NewType

import vici
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from vici.exception import CommandException, DeserializationException, SessionException

from swcmp.cmp import certs
from swcmp.cmp.keys import public_key_bits
from swcmp.deploy import CredentialPair, DeployError, DeployUnavailable, TokenRef
from swcmp.errors import CertificateError, ConfigError, ProtocolError

log = logging.getLogger(__name__)

DEFAULT_VICI_URI = "unix:///var/run/charon.vici"
"""Where charon's vici plugin listens unless ``charon.plugins.vici.socket`` says otherwise."""

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for charon to accept a connection or answer a command."""

KeyId = NewType("KeyId", str)
"""charon's key identifier: lower-case hex SHA-1 of the subjectPublicKey BIT STRING contents."""

SocketFactory = Callable[[], socket.socket]
"""Returns a socket already connected to charon's VICI (tests pass a socketpair end)."""

UNAVAILABLE_HINT = (
    "the new files are committed; charon loads them when it next starts "
    "(start-scripts hook `swcmp hook charon-start`)"
)


# --------------------------------------------------------------------------- key ids


def key_id_from_spki(spki_der: bytes) -> KeyId:
    """Compute charon's key id from a DER SubjectPublicKeyInfo.

    charon identifies keys (``load-key`` answer, ``get-keys``, ``unload-key``)
    by the SHA-1 of the subjectPublicKey BIT STRING contents without the
    unused-bits octet: the PKCS#1 RSAPublicKey for RSA, the EC point for ECDSA,
    the raw key for Ed25519/Ed448.

    Args:
        spki_der: a DER-encoded SubjectPublicKeyInfo.

    Returns:
        The key id as lower-case hex.

    Raises:
        ValueError: ``spki_der`` is not a SubjectPublicKeyInfo.
    """
    try:
        bits = public_key_bits(spki_der)
    except ProtocolError as e:
        raise ValueError(str(e)) from None
    return KeyId(hashlib.sha1(bits).hexdigest())


def key_id_from_public_key(public_key: PublicKeyTypes) -> KeyId:
    """Compute charon's key id of a public key (see :func:`key_id_from_spki`)."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_id_from_spki(spki)


def key_id_from_cert_pem(cert_pem: bytes) -> KeyId:
    """Compute charon's key id of the key certified by a PEM (or DER) certificate.

    Raises:
        ValueError: the certificate cannot be parsed.
    """
    cert = parse_cert(cert_pem)
    try:
        return key_id_from_spki(certs.spki_of(cert))
    except CertificateError as e:
        raise ValueError(str(e)) from None


def parse_cert(data: bytes) -> x509.Certificate:
    """swcmp's certificate loader, with this package's ``ValueError`` contract."""
    try:
        return certs.load_certificate(data)
    except CertificateError as e:
        raise ValueError(str(e)) from None


def cert_der(data: bytes) -> bytes:
    return certs.der_of(parse_cert(data))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LoadedCert:
    """A certificate in charon's credential sets, as ``list-certs`` shows it.

    Attributes:
        subject: the subject DN (RFC 4514 string).
        serial: the serial number.
        has_privkey: charon holds the matching private key.
        flag: charon's flag: ``NONE`` (end entity), ``CA``, ``AA`` or ``OCSP``.
        key_id: charon's id of the certified public key.
    """

    subject: str
    serial: int
    has_privkey: bool
    flag: str
    key_id: KeyId


@dataclass(frozen=True)
class CharonStatus:
    """What a running charon says about itself.

    Attributes:
        daemon: the daemon name (``charon``, ``charon-systemd``).
        version: the strongSwan version.
        running_since: charon's own text for its start time.
        ike_sas: the number of IKE SAs (all states).
        key_ids: ids of the private keys loaded over VICI.
    """

    daemon: str
    version: str
    running_since: str
    ike_sas: int
    key_ids: tuple[KeyId, ...]


# --------------------------------------------------------------------------- VICI access


def vici_socket_path(uri: str) -> str:
    """Return the socket path of a ``unix://`` VICI URI (a bare absolute path is accepted too).

    Raises:
        ConfigError: the URI is not a ``unix://`` URI with an absolute path.
    """
    if uri.startswith("unix://"):
        path = uri[len("unix://") :]
    elif uri.startswith("/"):
        path = uri
    else:
        raise ConfigError(
            f"VICI URI {uri!r} is not supported: use unix:///path/to/charon.vici "
            f"(default {DEFAULT_VICI_URI})"
        )
    if not path.startswith("/"):
        raise ConfigError(f"VICI URI {uri!r} needs an absolute path, e.g. {DEFAULT_VICI_URI}")
    return path


class CommandFailed(Exception):
    """charon answered a command with ``success = no``."""

    def __init__(self, command: str, errmsg: str) -> None:
        super().__init__(f"{command}: {errmsg}")
        self.command = command
        self.errmsg = errmsg


class CheckFailed(CommandFailed):
    """charon accepted the commands but the result is not what the swap needs."""


class ConnectionLost(Exception):
    """The VICI socket broke while a command was running."""

    def __init__(self, command: str) -> None:
        super().__init__(f"connection to charon lost during {command}")
        self.command = command


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class Vici:
    """One VICI session over one socket; typed results, our own exceptions."""

    def __init__(self, sock: socket.socket) -> None:
        self._session: Any = vici.Session(sock)

    def call(self, command: str, message: Mapping[str, object] | None = None) -> dict[str, Any]:
        """Run one command and return its answer (values are bytes, lists or dicts)."""
        try:
            reply = self._session.request(command, dict(message) if message is not None else None)
        except CommandException as e:
            raise CommandFailed(command, _strip_errmsg(str(e))) from None
        except KeyError:  # vici raises this for a failure without errmsg
            raise CommandFailed(command, "failed without a reason") from None
        except (OSError, SessionException, DeserializationException) as e:
            raise ConnectionLost(command) from e
        return dict(reply)

    def stream(
        self, command: str, event: str, message: Mapping[str, object] | None = None
    ) -> list[dict[str, Any]]:
        """Run one streaming command (``list-*``) and collect its events."""
        try:
            return [
                dict(item)
                for item in self._session.streamed_request(
                    command, event, dict(message) if message is not None else None
                )
            ]
        except CommandException as e:
            raise CommandFailed(command, _strip_errmsg(str(e))) from None
        except KeyError:
            raise CommandFailed(command, "failed without a reason") from None
        except (OSError, SessionException, DeserializationException) as e:
            raise ConnectionLost(command) from e

    # The typed commands this module needs.

    def load_key(self, key_pem: bytes) -> KeyId:
        reply = self.call("load-key", {"type": "any", "data": key_pem})
        return KeyId(text(reply.get("id", b"")).lower())

    def load_pair_key(self, pair: CredentialPair) -> KeyId:
        """``load-key`` for a key file's PEM, ``load-token`` for a key kept in a token."""
        if not isinstance(pair.key, TokenRef):
            return self.load_key(pair.key.pem)
        reply = self.call("load-token", {"handle": pair.key.handle, "pin": pair.key.pin})
        return KeyId(text(reply.get("id", b"")).lower())

    def unload_key(self, key_id: KeyId) -> None:
        self.call("unload-key", {"id": key_id})

    def get_keys(self) -> tuple[KeyId, ...]:
        reply = self.call("get-keys")
        return tuple(KeyId(text(k).lower()) for k in reply.get("keys", []))

    def load_cert(self, cert_pem: bytes, *, ca: bool) -> None:
        self.call("load-cert", {"type": "X509", "flag": "CA" if ca else "NONE", "data": cert_pem})

    def flush_certs(self) -> None:
        self.call("flush-certs", {"type": "X509"})

    def list_certs(self) -> list[tuple[bytes, LoadedCert]]:
        found: list[tuple[bytes, LoadedCert]] = []
        for item in self.stream("list-certs", "list-cert", {"type": "X509"}):
            data = item.get("data")
            if not isinstance(data, bytes):
                continue
            try:
                cert = parse_cert(data)
            except ValueError:
                log.warning("charon listed a certificate that does not parse; ignored")
                continue
            found.append(
                (
                    data,
                    LoadedCert(
                        subject=cert.subject.rfc4514_string(),
                        serial=cert.serial_number,
                        has_privkey=text(item.get("has_privkey", b"no")) == "yes",
                        flag=text(item.get("flag", b"NONE")),
                        key_id=key_id_from_public_key(cert.public_key()),
                    ),
                )
            )
        return found


def _strip_errmsg(text: str) -> str:
    prefix = "Command failed: "
    return text[len(prefix) :] if text.startswith(prefix) else text


@contextmanager
def open_session(uri: str, timeout: float, connect: SocketFactory | None = None
                 ) -> Iterator[Vici]:
    """Open one VICI session; raise DeployUnavailable when charon cannot be reached.

    ``connect``, when given, supplies the connected socket instead of ``uri``'s.
    """
    path = vici_socket_path(uri)
    sock = connect() if connect is not None else socket.socket(socket.AF_UNIX,
                                                                socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            if connect is None:
                sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, TimeoutError) as e:
            err = DeployUnavailable(f"charon is not reachable at {uri}: {e.strerror or e}")
            err.hint = UNAVAILABLE_HINT
            raise err from e
        except PermissionError as e:
            err = DeployUnavailable(f"no permission to use charon's VICI socket {uri}")
            err.hint = "run swcmp as root or as a user that may open the socket; " + (
                UNAVAILABLE_HINT
            )
            raise err from e
        except OSError as e:
            err = DeployUnavailable(f"cannot connect to charon at {uri}: {e.strerror or e}")
            err.hint = UNAVAILABLE_HINT
            raise err from e
        yield Vici(sock)
    finally:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def query_error(uri: str, e: CommandFailed | ConnectionLost) -> DeployError:
    if isinstance(e, ConnectionLost):
        err: DeployError = DeployUnavailable(f"charon at {uri} closed the connection ({e})")
        err.hint = "check that charon is running"
        return err
    return DeployError(f"charon at {uri} refused {e.command}: {e.errmsg}")


# --------------------------------------------------------------------------- queries


def list_loaded_certs(
    uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT,
    connect: SocketFactory | None = None,
) -> tuple[LoadedCert, ...]:
    """List the X.509 certificates in charon's credential sets (``list-certs``).

    This includes certificates loaded over VICI, CA certificates, and
    certificates charon received from peers and verified (its certificate
    cache, emptied by ``flush-certs``).

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused the command.
    """
    with open_session(uri, timeout, connect) as conn:
        try:
            return tuple(cert for _, cert in conn.list_certs())
        except (CommandFailed, ConnectionLost) as e:
            raise query_error(uri, e) from None


def loaded_key_ids(uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT,
                   connect: SocketFactory | None = None) -> tuple[KeyId, ...]:
    """Return the ids of the private keys loaded over VICI (``get-keys``).

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused the command.
    """
    with open_session(uri, timeout, connect) as conn:
        try:
            return conn.get_keys()
        except (CommandFailed, ConnectionLost) as e:
            raise query_error(uri, e) from None


def charon_status(uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT
                  ) -> CharonStatus:
    """Ask charon for its version, uptime, IKE SA count and loaded key ids.

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused a command.
    """
    with open_session(uri, timeout) as conn:
        try:
            version = conn.call("version")
            stats = conn.call("stats")
            keys = conn.get_keys()
        except (CommandFailed, ConnectionLost) as e:
            raise query_error(uri, e) from None
    uptime = stats.get("uptime", {})
    ikesas = stats.get("ikesas", {})
    try:
        total = int(text(ikesas.get("total", b"0")))
    except ValueError:
        total = 0
    return CharonStatus(
        daemon=text(version.get("daemon", b"")),
        version=text(version.get("version", b"")),
        running_since=text(uptime.get("since", b"")),
        ike_sas=total,
        key_ids=keys,
    )
