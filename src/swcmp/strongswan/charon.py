"""The charon port (:class:`swcmp.deploy.Charon`) over VICI: what the renewal, the
service, the CA's life and the start hook ask of charon, in one object."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from swcmp.deploy import CredentialPair, DeployError, DeployResult
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.strongswan.authorities import load_authorities
from swcmp.strongswan.deployers import choose_deployer, reload_pinned_connections
from swcmp.strongswan.hook import load_current
from swcmp.strongswan.stale_keys import unload_stale_from_file
from swcmp.strongswan.vici import (
    DEFAULT_TIMEOUT,
    CommandFailed,
    ConnectionLost,
    KeyId,
    SocketFactory,
    key_id_from_cert_pem,
    list_loaded_certs,
    loaded_key_ids,
    open_session,
    query_error,
    vici_socket_path,
)

log = logging.getLogger(__name__)

#: The metrics ask charon with this timeout at most: a slow charon must not stall a pass.
METRICS_TIMEOUT = 5.0


def stale_keys_file(paths: Paths, name: str) -> Path:
    """Where old pinned-mode keys still loaded in charon are recorded for a session."""
    return paths.session_state_dir(name) / "stale-keys.json"


class ViciCharon:
    """charon at ``uri``, for the sessions under ``paths``.

    Args:
        uri: charon's VICI URI, ``unix:///path``.
        paths: the directories (swanctl.conf decides identity or pinned mode).
        timeout: seconds to wait for charon to accept or answer.
        connect: a factory of connected sockets to use instead of ``uri`` (tests).

    Raises:
        ConfigError: ``uri`` is not a usable VICI URI.
    """

    def __init__(self, uri: str, paths: Paths, *, timeout: float = DEFAULT_TIMEOUT,
                 connect: SocketFactory | None = None) -> None:
        vici_socket_path(uri)  # validate early
        self.uri = uri
        self.paths = paths
        self.timeout = timeout
        self.connect = connect

    def __repr__(self) -> str:
        return f"ViciCharon(uri={self.uri!r})"

    def deploy(self, session: Session, new: CredentialPair,
               previous: CredentialPair | None) -> DeployResult:
        deployer = choose_deployer(
            self.uri,
            self.paths.cert_file(session.name),
            swanctl_conf=self.paths.swanctl_dir / "swanctl.conf",
            swanctl_dir=self.paths.swanctl_dir,
            connections=session.connections,
            timeout=self.timeout,
            stale_file=stale_keys_file(self.paths, session.name),
            connect=self.connect,
        )
        return deployer.deploy(new, previous)

    def held_key_ids(self) -> tuple[str, ...]:
        return loaded_key_ids(self.uri, timeout=self.timeout, connect=self.connect)

    def certs_with_key(self) -> frozenset[tuple[str, int]]:
        loaded = list_loaded_certs(self.uri, timeout=min(self.timeout, METRICS_TIMEOUT),
                                   connect=self.connect)
        return frozenset(
            (c.subject, c.serial) for c in loaded if c.has_privkey and c.flag == "NONE")

    def load_authorities(self, ca_certs_pem: Sequence[bytes],
                         crls_der: Sequence[bytes]) -> str:
        return load_authorities(self.uri, ca_certs_pem, crls_der, timeout=self.timeout,
                                connect=self.connect)

    def load_current(self, pairs: Sequence[CredentialPair]) -> DeployResult:
        return load_current(self.uri, pairs, timeout=self.timeout, connect=self.connect)

    def reload_pinned(self, session: Session) -> tuple[str, ...]:
        return reload_pinned_connections(
            self.uri, self.paths.cert_file(session.name),
            swanctl_conf=self.paths.swanctl_dir / "swanctl.conf",
            swanctl_dir=self.paths.swanctl_dir, connections=session.connections,
            timeout=self.timeout, connect=self.connect)

    def unload_key(self, key_id: str) -> bool:
        with open_session(self.uri, self.timeout, self.connect) as conn:
            try:
                if KeyId(key_id.lower()) not in conn.get_keys():
                    return False
                conn.unload_key(KeyId(key_id.lower()))
            except (CommandFailed, ConnectionLost) as e:
                raise query_error(self.uri, e) from None
        log.info("unloaded the key %s from charon", key_id)
        return True

    def unload_stale_keys(self, sessions: Sequence[Session]) -> None:
        files = [f for s in sessions if (f := stale_keys_file(self.paths, s.name)).exists()]
        if not files:
            return
        # Every session's current key stays, known from its certificate alone: a token
        # that cannot be opened now must not stop the cleanup of the others.
        keep: list[KeyId] = []
        for s in sessions:
            try:
                keep.append(key_id_from_cert_pem(self.paths.cert_file(s.name).read_bytes()))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                log.warning("%s: certificate unreadable (%s); stale keys left for later",
                            s.name, e)
                return
        for f in files:
            try:
                done = unload_stale_from_file(self.uri, f, keep=keep, timeout=self.timeout,
                                              connect=self.connect)
            except DeployError as e:  # charon down: try again next pass
                log.debug("stale keys in %s left for later: %s", f, e)
                continue
            for key_id in done.unloaded:
                log.info("unloaded the old key %s: no IKE SA uses the old certificate any more",
                         key_id)
