"""strongSwan binding: hot-load renewed key and certificate pairs into charon over VICI.

This is the only module that imports :mod:`vici`. It implements the
:class:`~swcmp.deploy.Deployer` seam for *identity mode*: the connections in
swanctl.conf select the local certificate by ``local.id`` (no ``local.certs``
pin), so a renewal only has to change charon's credential sets, never a
connection. charon picks the first certificate matching the identity that has
a private key and a trust chain, and it keeps loaded certificates newest first.
The swap therefore is (see STRONGSWAN.md):

1. ``load-key`` (new), ``load-cert`` (new), ``load-cert`` (CA certificates);
2. ``list-certs`` must show the new certificate with ``has_privkey``;
3. ``unload-key`` (old key, when it differs), ``flush-certs`` (X509).

Established IKE SAs are not touched. VICI has no ``unload-cert``: an old
certificate stays loaded, but once its key is gone charon cannot use it.

Every operation opens its own VICI session (one socket) and closes it again.
Key material is sent to charon but never logged or put in an exception.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NewType

import vici
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from vici.exception import CommandException, DeserializationException, SessionException

from swcmp.cmp import certs
from swcmp.cmp.keys import public_key_bits
from swcmp.deploy import CredentialPair, DeployError, DeployResult, DeployUnavailable
from swcmp.errors import CertificateError, ConfigError, ProtocolError
from swcmp.swanctl_conf import (
    ConfSection,
    build_load_conn,
    connections_using_cert,
    parse_file,
)

__all__ = [
    "DEFAULT_SWANCTL_CONF",
    "DEFAULT_TIMEOUT",
    "DEFAULT_VICI_URI",
    "CharonStatus",
    "KeyId",
    "LoadedCert",
    "PinnedDeployer",
    "StaleCleanup",
    "StaleKey",
    "ViciDeployer",
    "charon_status",
    "choose_deployer",
    "key_id_from_cert_pem",
    "key_id_from_public_key",
    "key_id_from_spki",
    "list_loaded_certs",
    "load_current",
    "load_stale_keys",
    "loaded_key_ids",
    "reload_pinned_connections",
    "save_stale_keys",
    "unload_stale_from_file",
    "unload_stale_keys",
    "vici_socket_path",
]

log = logging.getLogger(__name__)

DEFAULT_VICI_URI = "unix:///var/run/charon.vici"
"""Where charon's vici plugin listens unless ``charon.plugins.vici.socket`` says otherwise."""

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for charon to accept a connection or answer a command."""

KeyId = NewType("KeyId", str)
"""charon's key identifier: lower-case hex SHA-1 of the subjectPublicKey BIT STRING contents."""

_UNAVAILABLE_HINT = (
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
    cert = _load_cert(cert_pem)
    try:
        return key_id_from_spki(certs.spki_of(cert))
    except CertificateError as e:
        raise ValueError(str(e)) from None


def _load_cert(data: bytes) -> x509.Certificate:
    """swcmp's certificate loader, with this module's ``ValueError`` contract."""
    try:
        return certs.load_certificate(data)
    except CertificateError as e:
        raise ValueError(str(e)) from None


def _cert_der(data: bytes) -> bytes:
    return certs.der_of(_load_cert(data))


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


class _CommandFailed(Exception):
    """charon answered a command with ``success = no``."""

    def __init__(self, command: str, errmsg: str) -> None:
        super().__init__(f"{command}: {errmsg}")
        self.command = command
        self.errmsg = errmsg


class _CheckFailed(_CommandFailed):
    """charon accepted the commands but the result is not what the swap needs."""


class _ConnectionLost(Exception):
    """The VICI socket broke while a command was running."""

    def __init__(self, command: str) -> None:
        super().__init__(f"connection to charon lost during {command}")
        self.command = command


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class _Vici:
    """One VICI session over one socket; typed results, our own exceptions."""

    def __init__(self, sock: socket.socket) -> None:
        self._session: Any = vici.Session(sock)

    def call(self, command: str, message: Mapping[str, object] | None = None) -> dict[str, Any]:
        """Run one command and return its answer (values are bytes, lists or dicts)."""
        try:
            reply = self._session.request(command, dict(message) if message is not None else None)
        except CommandException as e:
            raise _CommandFailed(command, _strip_errmsg(str(e))) from None
        except KeyError:  # vici raises this for a failure without errmsg
            raise _CommandFailed(command, "failed without a reason") from None
        except (OSError, SessionException, DeserializationException) as e:
            raise _ConnectionLost(command) from e
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
            raise _CommandFailed(command, _strip_errmsg(str(e))) from None
        except KeyError:
            raise _CommandFailed(command, "failed without a reason") from None
        except (OSError, SessionException, DeserializationException) as e:
            raise _ConnectionLost(command) from e

    # The typed commands this module needs.

    def load_key(self, key_pem: bytes) -> KeyId:
        reply = self.call("load-key", {"type": "any", "data": key_pem})
        return KeyId(_text(reply.get("id", b"")).lower())

    def load_pair_key(self, pair: CredentialPair) -> KeyId:
        """``load-key`` for a key file's PEM, ``load-token`` for a key kept in a token."""
        if pair.token is None:
            return self.load_key(pair.key_pem)
        reply = self.call("load-token", {"handle": pair.token.handle, "pin": pair.token.pin})
        return KeyId(_text(reply.get("id", b"")).lower())

    def unload_key(self, key_id: KeyId) -> None:
        self.call("unload-key", {"id": key_id})

    def get_keys(self) -> tuple[KeyId, ...]:
        reply = self.call("get-keys")
        return tuple(KeyId(_text(k).lower()) for k in reply.get("keys", []))

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
                cert = _load_cert(data)
            except ValueError:
                log.warning("charon listed a certificate that does not parse; ignored")
                continue
            found.append(
                (
                    data,
                    LoadedCert(
                        subject=cert.subject.rfc4514_string(),
                        serial=cert.serial_number,
                        has_privkey=_text(item.get("has_privkey", b"no")) == "yes",
                        flag=_text(item.get("flag", b"NONE")),
                        key_id=key_id_from_public_key(cert.public_key()),
                    ),
                )
            )
        return found


def _strip_errmsg(text: str) -> str:
    prefix = "Command failed: "
    return text[len(prefix) :] if text.startswith(prefix) else text


@contextmanager
def _session(uri: str, timeout: float) -> Iterator[_Vici]:
    """Open one VICI session; raise DeployUnavailable when charon cannot be reached."""
    path = vici_socket_path(uri)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, TimeoutError) as e:
            err = DeployUnavailable(f"charon is not reachable at {uri}: {e.strerror or e}")
            err.hint = _UNAVAILABLE_HINT
            raise err from e
        except PermissionError as e:
            err = DeployUnavailable(f"no permission to use charon's VICI socket {uri}")
            err.hint = "run swcmp as root or as a user that may open the socket; " + (
                _UNAVAILABLE_HINT
            )
            raise err from e
        except OSError as e:
            err = DeployUnavailable(f"cannot connect to charon at {uri}: {e.strerror or e}")
            err.hint = _UNAVAILABLE_HINT
            raise err from e
        yield _Vici(sock)
    finally:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def _wrap_query_error(uri: str, e: _CommandFailed | _ConnectionLost) -> DeployError:
    if isinstance(e, _ConnectionLost):
        err: DeployError = DeployUnavailable(f"charon at {uri} closed the connection ({e})")
        err.hint = "check that charon is running"
        return err
    return DeployError(f"charon at {uri} refused {e.command}: {e.errmsg}")


# --------------------------------------------------------------------------- queries


def list_loaded_certs(
    uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[LoadedCert, ...]:
    """List the X.509 certificates in charon's credential sets (``list-certs``).

    This includes certificates loaded over VICI, CA certificates, and
    certificates charon received from peers and verified (its certificate
    cache, emptied by ``flush-certs``).

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused the command.
    """
    with _session(uri, timeout) as conn:
        try:
            return tuple(cert for _, cert in conn.list_certs())
        except (_CommandFailed, _ConnectionLost) as e:
            raise _wrap_query_error(uri, e) from None


def loaded_key_ids(uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT
                   ) -> tuple[KeyId, ...]:
    """Return the ids of the private keys loaded over VICI (``get-keys``).

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused the command.
    """
    with _session(uri, timeout) as conn:
        try:
            return conn.get_keys()
        except (_CommandFailed, _ConnectionLost) as e:
            raise _wrap_query_error(uri, e) from None


def charon_status(uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT
                  ) -> CharonStatus:
    """Ask charon for its version, uptime, IKE SA count and loaded key ids.

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused a command.
    """
    with _session(uri, timeout) as conn:
        try:
            version = conn.call("version")
            stats = conn.call("stats")
            keys = conn.get_keys()
        except (_CommandFailed, _ConnectionLost) as e:
            raise _wrap_query_error(uri, e) from None
    uptime = stats.get("uptime", {})
    ikesas = stats.get("ikesas", {})
    try:
        total = int(_text(ikesas.get("total", b"0")))
    except ValueError:
        total = 0
    return CharonStatus(
        daemon=_text(version.get("daemon", b"")),
        version=_text(version.get("version", b"")),
        running_since=_text(uptime.get("since", b"")),
        ike_sas=total,
        key_ids=keys,
    )


# --------------------------------------------------------------------------- loading


def load_current(
    uri: str,
    pairs: Iterable[CredentialPair],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> DeployResult:
    """Load the current pairs and their CA certificates into charon.

    For charon's ``start-scripts`` hook: after a (re)start charon holds no
    VICI credentials. Each pair's key and certificate and its CA certificates
    are loaded; a pair charon refuses does not stop the others.

    Args:
        uri: charon's VICI URI.
        pairs: every session's current pair.
        timeout: seconds to wait for charon.

    Returns:
        What was loaded.

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused at least one pair (the others are loaded).
    """
    pairs = tuple(pairs)
    failed: list[str] = []
    loaded: list[str] = []
    with _session(uri, timeout) as conn:
        for pair in pairs:
            try:
                expected = key_id_from_cert_pem(pair.cert_pem)
            except ValueError:
                failed.append(f"{pair.session}: certificate {pair.cert_path} does not parse")
                continue
            try:
                keys_before = conn.get_keys()
                got = conn.load_pair_key(pair)
                if got != expected:
                    if got not in keys_before:
                        conn.unload_key(got)
                    failed.append(
                        f"{pair.session}: key {pair.key_path} does not match "
                        f"certificate {pair.cert_path}"
                    )
                    continue
                conn.load_cert(pair.cert_pem, ca=False)
                for ca_pem in pair.ca_certs_pem:
                    conn.load_cert(ca_pem, ca=True)
            except _CommandFailed as e:
                failed.append(f"{pair.session}: charon refused {e.command}: {e.errmsg}")
                continue
            except _ConnectionLost as e:
                err = DeployUnavailable(f"charon at {uri} closed the connection ({e})")
                err.hint = "check that charon is running"
                raise err from None
            loaded.append(pair.session)
            log.info("loaded session %s into charon (key id %s)", pair.session, expected)
        try:
            conn.flush_certs()
        except _CommandFailed as e:
            log.warning("charon refused flush-certs: %s", e.errmsg)
        except _ConnectionLost:
            pass
    if failed:
        refused = DeployError(
            f"charon at {uri} did not take {len(failed)} of {len(pairs)} pairs: "
            + "; ".join(failed)
        )
        refused.hint = "check the files named; the other pairs are loaded"
        raise refused
    return DeployResult(
        deployed=True,
        detail=f"loaded {len(loaded)} pair(s) into charon: " + (", ".join(loaded) or "none"),
    )


# --------------------------------------------------------------------------- deployer


def _deploy_ids(new: CredentialPair, previous: CredentialPair | None
                ) -> tuple[KeyId, bytes, int, KeyId | None]:
    """Key ids, DER and serial of the pairs to swap; DeployError when one does not parse."""
    try:
        new_id = key_id_from_cert_pem(new.cert_pem)
        new_der = _cert_der(new.cert_pem)
        serial = _load_cert(new.cert_pem).serial_number
        old_id = key_id_from_cert_pem(previous.cert_pem) if previous is not None else None
    except ValueError as e:
        raise DeployError(
            f"session {new.session}: a certificate to deploy does not parse ({e}); "
            "charon was not changed"
        ) from None
    return new_id, new_der, serial, old_id


class ViciDeployer:
    """Make a renewed pair live in charon over VICI (identity mode).

    Args:
        uri: charon's VICI URI, ``unix:///path``.
        timeout: seconds to wait for charon to accept or answer.

    Raises:
        ConfigError: ``uri`` is not a usable VICI URI.
    """

    def __init__(self, uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        vici_socket_path(uri)  # validate early
        self.uri = uri
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ViciDeployer(uri={self.uri!r})"

    def deploy(self, new: CredentialPair, previous: CredentialPair | None) -> DeployResult:
        """Activate ``new`` in charon; on failure restore ``previous``.

        Args:
            new: the committed, verified pair to make live.
            previous: the pair charon used so far, or None on a first enrolment.

        Returns:
            What was done.

        Raises:
            DeployUnavailable: charon is not reachable; nothing was changed in it.
            DeployError: charon refused a step; ``previous`` is live again.
        """
        new_id, new_der, serial, old_id = _deploy_ids(new, previous)

        progress: list[str] = []
        try:
            with _session(self.uri, self.timeout) as conn:
                try:
                    self._swap(conn, new, new_id, new_der, old_id, progress)
                except _CommandFailed as e:
                    restored = self._restore(conn, new_id, previous, progress)
                    what = (
                        f"check after {e.command} failed: {e.errmsg}"
                        if isinstance(e, _CheckFailed)
                        else f"charon refused {e.command}: {e.errmsg}"
                    )
                    raise self._failure(new, what, restored) from None
        except _ConnectionLost as e:
            # charon went away mid-way: try to restore on a fresh connection.
            try:
                with _session(self.uri, self.timeout) as conn:
                    restored = self._restore(conn, new_id, previous, progress)
            except DeployUnavailable:
                err = DeployUnavailable(
                    f"session {new.session}: charon at {self.uri} stopped answering during "
                    f"{e.command}"
                )
                err.hint = _UNAVAILABLE_HINT
                raise err from None
            except _ConnectionLost:
                restored = "charon stopped answering again while restoring the previous pair"
            raise self._failure(new, str(e), restored) from None

        detail = (
            f"charon uses certificate serial {serial:#x} with key id {new_id}"
            + (f"; old key {old_id} unloaded" if "unload-key old" in progress else "")
            + (
                f"; old key {old_id} was not loaded over VICI (if charon holds it from "
                "another source such as ipsec.secrets, remove it there)"
                if "old key not loaded over VICI" in progress
                else ""
            )
        )
        log.info("session %s deployed to charon: %s", new.session, detail)
        return DeployResult(deployed=True, detail=detail)

    def _swap(
        self,
        conn: _Vici,
        new: CredentialPair,
        new_id: KeyId,
        new_der: bytes,
        old_id: KeyId | None,
        progress: list[str],
    ) -> None:
        """Steps 1-3 of the identity-mode swap; ``progress`` records what charon accepted."""
        keys_before = conn.get_keys()
        got = conn.load_pair_key(new)
        if got != new_id:
            # Remove the stray key again unless it was loaded before (old or another session's).
            if got not in keys_before:
                conn.unload_key(got)
            raise _CheckFailed(
                "load-key", f"the new key {new.key_path} does not match {new.cert_path}"
            )
        conn.load_cert(new.cert_pem, ca=False)
        progress.append("load-cert new")
        for ca_pem in new.ca_certs_pem:
            conn.load_cert(ca_pem, ca=True)
        ok = any(der == new_der and cert.has_privkey for der, cert in conn.list_certs())
        if not ok:
            raise _CheckFailed(
                "list-certs", "the new certificate is not listed with its private key"
            )
        if old_id is not None and old_id != new_id:
            if old_id in conn.get_keys():
                conn.unload_key(old_id)
                progress.append("unload-key old")
            else:
                progress.append("old key not loaded over VICI")
        conn.flush_certs()

    def _restore(
        self,
        conn: _Vici,
        new_id: KeyId,
        previous: CredentialPair | None,
        progress: list[str],
    ) -> str:
        """Make ``previous`` charon's choice again; return a sentence saying what was done."""
        try:
            old_id: KeyId | None = None
            if previous is not None:
                # Re-load the old pair first, so a usable pair exists at every moment.
                old_id = conn.load_pair_key(previous)
                conn.load_cert(previous.cert_pem, ca=False)
                for ca_pem in previous.ca_certs_pem:
                    conn.load_cert(ca_pem, ca=True)
            if new_id != old_id and new_id in conn.get_keys():
                # Without its key the new certificate can no longer be chosen.
                conn.unload_key(new_id)
            conn.flush_certs()
        except _CommandFailed as e:
            log.error("restoring the previous pair failed: %s refused: %s", e.command, e.errmsg)
            return (
                f"restoring the previous pair failed too ({e.command}: {e.errmsg}); "
                "which pair charon uses is uncertain: check `swanctl --list-certs` and "
                "restart charon once the files in storage are the pair to use"
            )
        if previous is None:
            return "there was no previous pair; charon holds no key of this session"
        if new_id == old_id and "load-cert new" in progress:
            return (
                "the previous pair is loaded again; the new certificate (same key) stays "
                "loaded because VICI cannot unload certificates"
            )
        return "the previous pair is live again"

    def _failure(self, new: CredentialPair, what: str, restored: str) -> DeployError:
        err = DeployError(f"session {new.session}: deploying to charon at {self.uri} failed: "
                          f"{what}; {restored}")
        err.hint = "fix the cause and renew again; the previous certificate stays in use"
        return err


# --------------------------------------------------------------------------- bindings


@dataclass(frozen=True)
class ConnBinding:
    """How one loaded connection uses a certificate.

    ``mode`` is ``pinned`` (``local.certs`` names the certificate: the connection
    must be re-sent on renewal) or ``identity`` (``local.id`` selects it; a
    hot-loaded renewal is picked up by itself).
    """

    connection: str
    mode: str
    local_id: str | None


def charon_dn(name: x509.Name) -> str:
    """A DN as charon prints it: wire order, ``, `` between RDNs."""
    parts = []
    for rdn in name.rdns:
        parts.append("+".join(a.rfc4514_string() for a in rdn))
    return ", ".join(parts)


def _identity_matches(local_id: str, cert: x509.Certificate) -> bool:
    ident = local_id.strip()
    if ident.startswith("@"):
        ident = ident.lstrip("@#")
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    names = {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
    names |= {n.lower() for n in sans.get_values_for_type(x509.RFC822Name)}
    names |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    if ident.lower() in names:
        return True
    return ident.replace(" ", "") == charon_dn(cert.subject).replace(" ", "")


def connection_bindings(uri: str, cert_pem: bytes, *, connections: Iterable[str] = (),
                        timeout: float = DEFAULT_TIMEOUT) -> tuple[ConnBinding, ...]:
    """The loaded connections whose local authentication uses ``cert_pem``.

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused ``list-conns``.
    """
    cert = _load_cert(cert_pem)
    wanted = set(connections)
    subject = charon_dn(cert.subject).replace(" ", "")
    found: list[ConnBinding] = []
    with _session(uri, timeout) as conn:
        try:
            items = conn.stream("list-conns", "list-conn")
        except (_CommandFailed, _ConnectionLost) as e:
            raise _wrap_query_error(uri, e) from None
    for item in items:
        for name, cfg in item.items():
            if (wanted and name not in wanted) or not isinstance(cfg, dict):
                continue
            for section, auth in cfg.items():
                if not section.startswith("local") or not isinstance(auth, dict):
                    continue
                local_id = _text(auth["id"]) if auth.get("id") else None
                pinned = [_text(c).replace(" ", "") for c in auth.get("certs", [])]
                if pinned:
                    if subject in pinned:
                        found.append(ConnBinding(name, "pinned", local_id))
                elif local_id and _identity_matches(local_id, cert):
                    found.append(ConnBinding(name, "identity", local_id))
    return tuple(found)


def binding_check(uri: str, *, timeout: float = 5.0) -> Callable[..., Any]:
    """An extra check item for ``swcmp session check``: does charon use this certificate?

    Passes when a loaded connection selects the session's certificate (by
    identity or pinned). Warns (with the fix) when charon is unreachable or no
    connection uses it: these are states of the running system, not of the
    session, and a renewal commits its files without charon (the start hook
    loads them), so they must not block enabling auto-update.
    """
    from swcmp.checks import OK, WARN, CheckResult

    def check(session: Any, paths: Any, now: Any) -> CheckResult:
        name = "strongswan"
        cert_path = paths.cert_file(session.name)
        if not cert_path.exists():
            return CheckResult(name, WARN, "no certificate yet, so no connection can use it",
                               f"swcmp request initial {session.name}")
        try:
            found = connection_bindings(uri, cert_path.read_bytes(),
                                        connections=session.connections, timeout=timeout)
        except (OSError, ValueError) as e:
            return CheckResult(name, WARN, f"cannot read {cert_path}: {e}",
                               f"swcmp request initial {session.name}")
        except DeployError as e:
            return CheckResult(name, WARN, f"charon: {e}; renewed files are loaded by the "
                               "charon start hook when it starts",
                               "start charon, or point swcmp at its socket with --vici URI "
                               "(--vici none for hosts without charon)")
        if not found:
            which = (f"connection(s) {', '.join(session.connections)}" if session.connections
                     else "any loaded connection")
            return CheckResult(
                name, WARN,
                f"{which} does not use the certificate (no local.id matching its subject or "
                "SANs, and no local.certs naming it)",
                f"set local.id in swanctl.conf to the certificate's identity and run "
                f"`swanctl --load-conns`, or `swcmp session set {session.name} --connection "
                "NAME`")
        desc = ", ".join(f"{b.connection} ({b.mode}"
                         + (f", id {b.local_id})" if b.local_id else ")") for b in found)
        pinned = [b.connection for b in found if b.mode == "pinned"]
        detail = f"used by {desc}"
        if pinned:
            detail += ("; pinned connections (local.certs) are re-sent with load-conn on "
                       "renewal (PinnedDeployer) and the old key stays loaded until IKE SAs "
                       "made with the old certificate are gone: identity mode (local.id) "
                       "avoids both")
        return CheckResult(name, OK, detail, "")

    return check


# --------------------------------------------------------------------------- pinned mode


DEFAULT_SWANCTL_CONF = "/etc/swanctl/swanctl.conf"
"""swanctl's configuration; its directory is the swanctl directory (``x509/``, ``private/``)."""


@dataclass(frozen=True)
class StaleKey:
    """An old private key a pinned-mode renewal left loaded on purpose.

    IKE SAs established before the connection was replaced keep the old
    connection config, and so the old pinned certificate: when they
    re-authenticate they sign with the old key. Unload it with
    :func:`unload_stale_keys` once none of them is left.

    Attributes:
        key_id: charon's id of the old key.
        session: the swcmp session it belonged to.
        connections: the connections that were replaced.
        ike_sas: unique ids of the IKE SAs of those connections that were up when
            they were replaced (they hold the old config).
        replaced_at: when (seconds since the epoch).
    """

    key_id: KeyId
    session: str
    connections: tuple[str, ...]
    ike_sas: frozenset[int]
    replaced_at: float

    def with_successor(self, old_uniqueid: int, new_uniqueid: int) -> StaleKey:
        """Follow an IKE SA rekey or reauthentication (``ike-rekey`` event).

        A rekeyed or re-authenticated IKE SA inherits the old connection config,
        so its new unique id must be tracked too. Returns self when
        ``old_uniqueid`` is not tracked.
        """
        if old_uniqueid not in self.ike_sas:
            return self
        return StaleKey(self.key_id, self.session, self.connections,
                        self.ike_sas | {new_uniqueid}, self.replaced_at)


@dataclass(frozen=True)
class StaleCleanup:
    """What :func:`unload_stale_keys` did.

    Attributes:
        unloaded: key ids removed from charon (or already gone).
        kept: the stale keys still needed, each with the reason.
    """

    unloaded: tuple[KeyId, ...]
    kept: tuple[tuple[StaleKey, str], ...]


def _ike_sas(conn: _Vici, names: Iterable[str]) -> dict[int, str]:
    """Unique id -> connection name of the IKE SAs of the given connections."""
    wanted = set(names)
    found: dict[int, str] = {}
    for item in conn.stream("list-sas", "list-sa"):
        for name, sa in item.items():
            if name not in wanted or not isinstance(sa, dict):
                continue
            try:
                found[int(_text(sa.get("uniqueid", b"0")))] = name
            except ValueError:
                continue
    return found


def unload_stale_keys(
    uri: str,
    stale: Iterable[StaleKey],
    *,
    keep: Iterable[KeyId] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> StaleCleanup:
    """Unload old keys that no IKE SA with the old pinned config can need any more.

    A stale key is unloaded when none of the IKE SAs recorded in it (see
    :meth:`StaleKey.with_successor` for rekeys) is still up, and it is not in
    ``keep`` (pass the key ids of every session's current pair, so a key that is
    in use again, e.g. re-certified, is never removed).

    Args:
        uri: charon's VICI URI.
        stale: the records :attr:`PinnedDeployer.stale_keys` collected.
        keep: key ids that must stay loaded whatever happens.
        timeout: seconds to wait for charon.

    Returns:
        Which keys were unloaded and which are still needed (and why).

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused a command.
    """
    keep_ids = {KeyId(k.lower()) for k in keep}
    records = tuple(stale)
    unloaded: list[KeyId] = []
    kept: list[tuple[StaleKey, str]] = []
    with _session(uri, timeout) as conn:
        try:
            up = _ike_sas(conn, {c for s in records for c in s.connections})
            loaded = set(conn.get_keys())
            for record in records:
                old = sorted(uid for uid in record.ike_sas if uid in up)
                if record.key_id in keep_ids:
                    kept.append((record, "the key is in use by a current pair"))
                elif old:
                    kept.append((record, "IKE SA(s) " + ", ".join(f"#{u}" for u in old)
                                 + " made with the old certificate are still up"))
                else:
                    if record.key_id in loaded:
                        conn.unload_key(record.key_id)
                        loaded.discard(record.key_id)
                        log.info("unloaded stale key %s of session %s", record.key_id,
                                 record.session)
                    unloaded.append(record.key_id)
        except (_CommandFailed, _ConnectionLost) as e:
            raise _wrap_query_error(uri, e) from None
    return StaleCleanup(tuple(unloaded), tuple(kept))


def load_stale_keys(path: Path) -> list[StaleKey]:
    """The stale-key records saved in ``path`` (none when it is missing or damaged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [StaleKey(KeyId(str(r["key_id"])), str(r["session"]),
                         tuple(str(c) for c in r["connections"]),
                         frozenset(int(u) for u in r["ike_sas"]), float(r["replaced_at"]))
                for r in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("stale-key records %s unreadable (%s); ignored", path, e)
        return []


def save_stale_keys(path: Path, records: Iterable[StaleKey]) -> None:
    """Write the records (atomically); remove the file when there are none."""
    from swcmp import fsutil

    data = [{"key_id": r.key_id, "session": r.session, "connections": list(r.connections),
             "ike_sas": sorted(r.ike_sas), "replaced_at": r.replaced_at} for r in records]
    if not data:
        fsutil.remove_file(path, missing_ok=True)
        return
    fsutil.ensure_dir(path.parent, mode=0o700)
    fsutil.atomic_write(path, json.dumps(data, indent=1).encode(), mode=0o600)


def unload_stale_from_file(uri: str, path: Path, *, keep: Iterable[KeyId] = (),
                           timeout: float = DEFAULT_TIMEOUT) -> StaleCleanup:
    """:func:`unload_stale_keys` for the records in ``path``; keeps only those still needed.

    ``swcmp serve`` runs this on every pass, so an old pinned-mode key leaves
    charon once the IKE SAs made with the old certificate are gone.
    """
    records = load_stale_keys(path)
    if not records:
        return StaleCleanup((), ())
    result = unload_stale_keys(uri, records, keep=keep, timeout=timeout)
    save_stale_keys(path, [record for record, _ in result.kept])
    return result


def _start_children(conf: ConfSection, connection: str) -> list[str]:
    """Children of ``connection`` whose ``start_action`` includes ``start``."""
    children = conf.section(f"connections.{connection}.children")
    if children is None:
        return []
    found = []
    for name, child in children.sections.items():
        action = (child.get("start_action") or "").lower()
        if "start" in action.replace("|", " ").split():
            found.append(name)
    return found


class PinnedDeployer:
    """Make a renewed pair live in charon when connections pin it (``local.certs = file``).

    Such a connection holds the certificate itself, so besides loading the new
    key and certificate (as in identity mode) each affected connection is
    re-sent with ``load-conn``, built from swanctl.conf exactly as
    ``swanctl --load-conns`` builds it (the renewal engine has already
    rewritten the certificate file in place). charon replaces a connection
    whose certificate changed; children with ``start_action = start`` are
    closed and initiated again (a warning is logged), ``trap`` policies are
    reinstalled. IKE SAs already established keep the old connection config
    and, when they re-authenticate, the old certificate: the old key therefore
    stays loaded and is recorded in :attr:`stale_keys` for
    :func:`unload_stale_keys`.

    If charon refuses a step, the connections already replaced are re-sent
    with the previous certificate and the new key is unloaded.

    Args:
        uri: charon's VICI URI.
        swanctl_conf: swanctl.conf to build the connections from.
        swanctl_dir: swanctl's directory (default: the directory of
            ``swanctl_conf``, as ``swanctl --file`` does).
        connections: the connections to re-send (the session's connection
            list); empty: every connection whose ``local*.certs`` names the
            certificate file.
        timeout: seconds to wait for charon.

    Raises:
        ConfigError: ``uri`` is not a usable VICI URI.
    """

    def __init__(
        self,
        uri: str = DEFAULT_VICI_URI,
        *,
        swanctl_conf: Path | str = DEFAULT_SWANCTL_CONF,
        swanctl_dir: Path | str | None = None,
        connections: Iterable[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        stale_file: Path | None = None,
    ) -> None:
        vici_socket_path(uri)
        self.uri = uri
        #: Where old keys left loaded are recorded for :func:`unload_stale_from_file`.
        self.stale_file = stale_file
        self.swanctl_conf = Path(swanctl_conf)
        self.swanctl_dir = Path(swanctl_dir) if swanctl_dir is not None else (
            self.swanctl_conf.parent)
        self.connections = tuple(connections)
        self.timeout = timeout
        self.stale_keys: list[StaleKey] = []

    def __repr__(self) -> str:
        return f"PinnedDeployer(uri={self.uri!r}, swanctl_conf={str(self.swanctl_conf)!r})"

    # -- planning (no charon involved)

    def _plan(self, new: CredentialPair, previous: CredentialPair | None
              ) -> tuple[list[str], dict[str, dict[str, object]],
                         dict[str, dict[str, object]] | None, list[str]]:
        """Connections, their new and previous load-conn messages, and warnings."""
        try:
            conf = parse_file(self.swanctl_conf)
        except ConfigError as e:
            raise DeployError(f"session {new.session}: {e}; charon was not changed") from None
        names = list(self.connections) or list(
            connections_using_cert(conf, self.swanctl_dir, new.cert_path))
        if not names:
            raise DeployError(
                f"session {new.session}: no connection in {self.swanctl_conf} pins "
                f"{new.cert_path} (local.certs); charon was not changed"
            ).with_hint("name the connections with --connection, or use identity mode "
                        "(local.id without local.certs)")
        pinned = set(connections_using_cert(conf, self.swanctl_dir, new.cert_path))
        notes: list[str] = []
        for name in names:
            if name not in pinned:
                notes.append(f"connection {name} does not name {new.cert_path} in local.certs")
            for child in _start_children(conf, name):
                notes.append(f"child {name}/{child} has start_action = start: charon closes "
                             "and re-initiates it when the connection is replaced")
        try:
            on_disk = new.cert_path.read_bytes()
        except OSError as e:
            raise DeployError(f"session {new.session}: cannot read {new.cert_path}: "
                              f"{e.strerror or e}; charon was not changed") from None
        if on_disk != new.cert_pem:
            raise DeployError(
                f"session {new.session}: {new.cert_path} does not hold the certificate to "
                "deploy; charon was not changed"
            ).with_hint("the renewal engine commits the file before deploying: run the "
                        "renewal again")
        try:
            messages = {n: build_load_conn(conf, n, self.swanctl_dir) for n in names}
            restore = None
            if previous is not None:
                override: dict[Path | str, bytes] = {new.cert_path: previous.cert_pem}
                if previous.cert_path != new.cert_path:
                    override[previous.cert_path] = previous.cert_pem
                restore = {n: build_load_conn(conf, n, self.swanctl_dir, overrides=override)
                           for n in names}
        except ConfigError as e:
            raise DeployError(f"session {new.session}: {e}; charon was not changed") from None
        return names, messages, restore, notes

    # -- deploy

    def deploy(self, new: CredentialPair, previous: CredentialPair | None) -> DeployResult:
        """Activate ``new`` and re-send the connections that pin it; on failure restore.

        Args:
            new: the committed, verified pair (its certificate file is rewritten).
            previous: the pair charon used so far, or None on a first enrolment.

        Returns:
            What was done; the old key id is added to :attr:`stale_keys`.

        Raises:
            DeployUnavailable: charon is not reachable; nothing was changed in it.
            DeployError: a step failed; the previous pair and connection configs are
                live again (as far as the message says).
        """
        new_id, new_der, serial, old_id = _deploy_ids(new, previous)
        names, messages, restore, notes = self._plan(new, previous)
        for note in notes:
            log.warning("session %s: %s", new.session, note)

        replaced: list[str] = []
        state: dict[str, Any] = {"keys_before": None}
        try:
            with _session(self.uri, self.timeout) as conn:
                try:
                    old_sas = self._swap(conn, new, new_id, new_der, names, messages,
                                         replaced, state)
                except _CommandFailed as e:
                    restored = self._restore(conn, new_id, old_id, restore, replaced, state)
                    what = (f"check after {e.command} failed: {e.errmsg}"
                            if isinstance(e, _CheckFailed)
                            else f"charon refused {e.command}: {e.errmsg}")
                    raise self._failure(new, what, restored) from None
        except _ConnectionLost as e:
            try:
                with _session(self.uri, self.timeout) as conn:
                    restored = self._restore(conn, new_id, old_id, restore, replaced, state,
                                             previous=previous, reconnected=True)
            except DeployUnavailable:
                err = DeployUnavailable(
                    f"session {new.session}: charon at {self.uri} stopped answering during "
                    f"{e.command}" + (f" after replacing {', '.join(replaced)}"
                                      if replaced else ""))
                err.hint = _UNAVAILABLE_HINT
                raise err from None
            except _ConnectionLost:
                restored = "charon stopped answering again while restoring the previous pair"
            raise self._failure(new, str(e), restored) from None

        detail = (f"charon uses certificate serial {serial:#x} with key id {new_id}; "
                  f"re-sent connection(s) {', '.join(names)}")
        if old_id is not None and old_id != new_id and old_id in state.get("keys_after", ()):
            record = StaleKey(old_id, new.session, tuple(names), frozenset(old_sas),
                              time.time())
            self.stale_keys.append(record)
            if self.stale_file is not None:
                save_stale_keys(self.stale_file, [*load_stale_keys(self.stale_file), record])
            detail += (f"; old key {old_id} stays loaded for "
                       f"{len(old_sas)} IKE SA(s) made with the old certificate")
        if notes:
            detail += "; " + "; ".join(notes)
        log.info("session %s deployed to charon (pinned): %s", new.session, detail)
        return DeployResult(deployed=True, detail=detail)

    def _swap(self, conn: _Vici, new: CredentialPair, new_id: KeyId, new_der: bytes,
              names: list[str], messages: Mapping[str, Mapping[str, object]],
              replaced: list[str], state: dict[str, Any]) -> set[int]:
        keys_before = conn.get_keys()
        state["keys_before"] = keys_before
        got = conn.load_pair_key(new)
        if got != new_id:
            if got not in keys_before:
                conn.unload_key(got)
            raise _CheckFailed(
                "load-key", f"the new key {new.key_path} does not match {new.cert_path}")
        conn.load_cert(new.cert_pem, ca=False)
        for ca_pem in new.ca_certs_pem:
            conn.load_cert(ca_pem, ca=True)
        if not any(der == new_der and c.has_privkey for der, c in conn.list_certs()):
            raise _CheckFailed(
                "list-certs", "the new certificate is not listed with its private key")
        old_sas = set(_ike_sas(conn, names))
        for name in names:
            replaced.append(name)  # restore it too if charon fails half-way through
            try:
                conn.call("load-conn", messages[name])
            except _CommandFailed as e:
                replaced.remove(name)  # a refused load-conn leaves the old config in place
                raise _CommandFailed(f"load-conn {name}", e.errmsg) from None
        state["keys_after"] = conn.get_keys()
        conn.flush_certs()
        return old_sas

    def _restore(self, conn: _Vici, new_id: KeyId, old_id: KeyId | None,
                 restore: Mapping[str, Mapping[str, object]] | None,
                 replaced: list[str], state: dict[str, Any], *,
                 previous: CredentialPair | None = None, reconnected: bool = False) -> str:
        problems: list[str] = []
        if reconnected and previous is not None and restore is not None:
            # The connection was lost: charon may have been restarted meanwhile. A new
            # charon has no previous key (the start hook loads the files, which hold the
            # new pair until the renewal engine restores them) and took its connections
            # from swanctl.conf, i.e. pinned to the new certificate file. So load the
            # previous pair again and re-send every connection, not only those replaced.
            try:
                conn.load_pair_key(previous)
                conn.load_cert(previous.cert_pem, ca=False)
                for ca_pem in previous.ca_certs_pem:
                    conn.load_cert(ca_pem, ca=True)
            except _CommandFailed as e:
                problems.append(f"loading the previous pair again failed ({e.command}: "
                                f"{e.errmsg})")
            replaced[:] = list(restore)
        if replaced:
            if restore is None:
                problems.append(f"connection(s) {', '.join(replaced)} keep the new certificate "
                                "(there is no previous one)")
            else:
                for name in replaced:
                    try:
                        conn.call("load-conn", restore[name])
                    except _CommandFailed as e:
                        problems.append(f"re-sending {name} with the previous certificate "
                                        f"failed: {e.errmsg}")
        keys_before = state.get("keys_before")
        try:
            if (new_id != old_id and new_id in conn.get_keys()
                    and (keys_before is None or new_id not in keys_before)):
                conn.unload_key(new_id)
            conn.flush_certs()
        except _CommandFailed as e:
            problems.append(f"{e.command} failed: {e.errmsg}")
        if problems:
            log.error("restoring the previous state failed: %s", "; ".join(problems))
            return ("restoring the previous state failed in part (" + "; ".join(problems)
                    + "): check `swanctl --list-conns` and `swanctl --list-certs`")
        if replaced:
            return (f"connection(s) {', '.join(replaced)} use the previous certificate again "
                    "and the new key is unloaded")
        return "no connection was changed and the new key is unloaded"

    def _failure(self, new: CredentialPair, what: str, restored: str) -> DeployError:
        err = DeployError(f"session {new.session}: deploying to charon at {self.uri} failed "
                          f"(pinned mode): {what}; {restored}")
        err.hint = "fix the cause and renew again; the previous certificate stays in use"
        return err


def reload_pinned_connections(uri: str, cert_path: Path | str, *,
                              swanctl_conf: Path | str = DEFAULT_SWANCTL_CONF,
                              swanctl_dir: Path | str | None = None,
                              connections: Iterable[str] = (),
                              timeout: float = DEFAULT_TIMEOUT) -> tuple[str, ...]:
    """Re-send the connections that pin ``cert_path`` with the file's current content.

    A pinned connection carries its certificate inside its config, so loading
    the certificate alone does not change what it uses. The charon start hook
    calls this after committing a renewal. Returns the connections re-sent
    (none when swanctl.conf pins nothing).

    Raises:
        ConfigError: swanctl.conf cannot be parsed.
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused a connection.
    """
    conf_path = Path(swanctl_conf)
    if not conf_path.exists():
        return ()
    base = Path(swanctl_dir) if swanctl_dir is not None else conf_path.parent
    conf = parse_file(conf_path)
    names = connections_using_cert(conf, base, cert_path)
    wanted = set(connections)
    names = tuple(n for n in names if not wanted or n in wanted)
    if not names:
        return ()
    messages = {n: build_load_conn(conf, n, base) for n in names}
    with _session(uri, timeout) as conn:
        for n in names:
            try:
                conn.call("load-conn", messages[n])
            except (_CommandFailed, _ConnectionLost) as e:
                raise _wrap_query_error(uri, e) from None
    return names


def choose_deployer(
    uri: str,
    cert_path: Path | str,
    *,
    swanctl_conf: Path | str = DEFAULT_SWANCTL_CONF,
    swanctl_dir: Path | str | None = None,
    connections: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    stale_file: Path | None = None,
) -> ViciDeployer | PinnedDeployer:
    """The deployer for a certificate: pinned mode when swanctl.conf pins the file.

    A connection whose ``local*.certs`` names ``cert_path`` (restricted to
    ``connections`` when given) selects :class:`PinnedDeployer`; otherwise
    identity mode (:class:`ViciDeployer`). A missing swanctl.conf means
    identity mode.

    Raises:
        ConfigError: swanctl.conf cannot be parsed, or ``uri`` is not usable.
    """
    conf_path = Path(swanctl_conf)
    base = Path(swanctl_dir) if swanctl_dir is not None else conf_path.parent
    if conf_path.exists():
        pinned = connections_using_cert(parse_file(conf_path), base, cert_path)
        wanted = tuple(connections)
        if pinned and (not wanted or set(pinned) & set(wanted)):
            return PinnedDeployer(uri, swanctl_conf=conf_path, swanctl_dir=base,
                                  connections=wanted, timeout=timeout, stale_file=stale_file)
    return ViciDeployer(uri, timeout=timeout)
