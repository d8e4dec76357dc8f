"""The seam between the renewal engine and whatever uses the credentials: the
:class:`Charon` port, the one way swcmp reaches charon.

The renewal engine commits a new key and certificate to storage and then hands
them to a :class:`Deployer`. A deployer must either make the new pair live or
leave the previous pair live and raise :class:`DeployError`. When the consumer
(charon) is not reachable at all, it raises :class:`DeployUnavailable`: the
files are committed and the consumer picks them up when it next starts.
Where there is no consumer (``--vici none``), the renewal is given no charon
at all and writes the files only.

The renewal, enrolment, the service, the CA's life and the start hook are handed a
:class:`Charon` (``swcmp.strongswan.ViciCharon`` implements it over VICI); none of
them talks VICI or knows charon's URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from swcmp.errors import SwcmpError

if TYPE_CHECKING:
    from swcmp.session import Session


@dataclass(frozen=True)
class KeyFile:
    """A private key in a file: charon's ``load-key`` takes its content.

    ``pem`` is an unencrypted PKCS#8 PEM private key: never log it.
    """

    path: Path
    pem: bytes = field(repr=False)

    def describe(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class TokenRef:
    """A private key that stays in a PKCS#11 token: what charon's ``load-token`` takes.

    ``handle`` is the key pair's CKA_ID in hex; ``pin`` the token's user PIN: never log
    it; ``where`` names the token and label, for messages.
    """

    handle: str
    pin: str = field(repr=False)
    where: str = "the token"

    def describe(self) -> str:
        return f"CKA_ID {self.handle} in {self.where}"


#: What charon is given for a pair's private key: a key file's content or a token handle.
CharonKey = KeyFile | TokenRef


@dataclass(frozen=True)
class CredentialPair:
    """One session's key and certificate as charon is given them.

    ``ca_certs_pem`` holds the CA certificates (issuer chain, trust anchors) that go
    with the certificate, each a single PEM certificate.
    """

    session: str
    key: CharonKey
    cert_path: Path
    cert_pem: bytes
    ca_certs_pem: tuple[bytes, ...] = ()

    @classmethod
    def of_files(cls, session: str, key_path: Path, cert_path: Path, key_pem: bytes,
                 cert_pem: bytes, ca_certs_pem: tuple[bytes, ...] = ()) -> CredentialPair:
        """A pair whose key is the file ``key_path`` holding ``key_pem``."""
        return cls(session, KeyFile(key_path, key_pem), cert_path, cert_pem, ca_certs_pem)

    def __repr__(self) -> str:  # never show key material
        return (f"CredentialPair(session={self.session!r}, key={self.key.describe()!r}, "
                f"cert_path={str(self.cert_path)!r})")


@dataclass(frozen=True)
class DeployResult:
    """What a deployer did, for status output and the log."""

    deployed: bool
    detail: str


class DeployError(SwcmpError):
    """The deployer failed and restored the previous pair (or had nothing to restore)."""


class DeployUnavailable(DeployError):
    """The consumer is not running or not reachable; nothing was changed in it."""


class Deployer(Protocol):
    """Makes a committed pair live."""

    def deploy(self, new: CredentialPair, previous: CredentialPair | None) -> DeployResult:
        """Activate ``new``; on failure restore ``previous`` and raise DeployError."""
        ...


class Charon(Protocol):
    """charon as swcmp uses it: the one port (see the module docstring).

    Every method raises :class:`DeployUnavailable` when charon cannot be reached and
    :class:`DeployError` when it refuses.
    """

    def deploy(self, session: Session, new: CredentialPair,
               previous: CredentialPair | None) -> DeployResult:
        """Make ``new`` live for ``session`` (identity or pinned mode, as its
        swanctl.conf says); on failure restore ``previous`` and raise DeployError."""
        ...

    def held_key_ids(self) -> tuple[str, ...]:
        """The ids of the private keys charon holds now (loaded over VICI)."""
        ...

    def certs_with_key(self) -> frozenset[tuple[str, int]]:
        """(subject, serial) of the certificates charon holds a private key for."""
        ...

    def load_authorities(self, ca_certs_pem: Sequence[bytes],
                         crls_der: Sequence[bytes]) -> str:
        """Load CA certificates and CRLs; say what was loaded, in words."""
        ...

    def load_current(self, pairs: Sequence[CredentialPair]) -> DeployResult:
        """After a (re)start: load every session's current pair (one refused pair does
        not keep the others out)."""
        ...

    def reload_pinned(self, session: Session) -> tuple[str, ...]:
        """Re-send the connections that pin ``session``'s certificate file; their names."""
        ...

    def unload_stale_keys(self, sessions: Sequence[Session]) -> None:
        """Unload old pinned-mode keys that no IKE SA made with the old config needs."""
        ...

    def unload_key(self, key_id: str) -> bool:
        """Unload the private key ``key_id`` (a decommissioned pair); False when charon
        does not hold it. Its certificate stays loaded: VICI cannot unload certificates,
        and without the key charon cannot authenticate with it."""
        ...
