"""The :class:`KeyStore` protocol and what its operations exchange (see
:mod:`swcmp.keystore`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cryptography import x509

    from swcmp.checkresult import CheckResult
    from swcmp.cmp.keys import SigningKey
    from swcmp.deploy import CredentialPair
    from swcmp.store import Journal, JournalEntry

#: Asks charon which key ids it holds now; None where swcmp has no charon to ask.
HeldKeys = Callable[[], Collection[str]] | None


@dataclass(frozen=True)
class Installed:
    """What :meth:`KeyStore.install` changed, for :meth:`KeyStore.undo`.

    Attributes:
        previous: the pair the new one replaced, as charon had it (None: a first pair,
            or the same certificate committed again).
        replaced_serial: the serial of the certificate replaced (None: nothing replaced).
        undo_data: what the backend needs to put ``previous`` back.
    """

    previous: CredentialPair | None
    replaced_serial: int | None = None
    undo_data: Mapping[str, Any] | None = None


class KeyStore(Protocol):
    """The key pairs of one session (opened once per run by :func:`open`)."""

    #: Whether :meth:`collect` may ever forget a pair (False: it keeps a bounded archive
    #: and does nothing), so that a pass takes the session's lock only to collect.
    collects: bool
    #: The key types (swcmp's names, as ``--key-type`` takes them) this store can make.
    key_types: tuple[str, ...]

    @property
    def key_file(self) -> Path | None:
        """The live key's file, for the renewal's report and hooks (None: no file)."""
        ...

    # -- the live pair

    def live_key(self) -> SigningKey | None:
        """The session's current key (None: none yet)."""
        ...

    def live_pair(self) -> CredentialPair | None:
        """The current key and certificate as charon is given them (None: not both yet)."""
        ...

    # -- enrolment (IR, CR)

    def ensure_key(self) -> tuple[SigningKey, bool]:
        """The current key, or a new one made per the session's key type (and whether
        it is new)."""
        ...

    def enrolled(self) -> None:
        """An enrolment wrote the session's certificate: make the rest follow it."""
        ...

    # -- a key update

    def recover(self, j: Journal, entry: JournalEntry
                ) -> tuple[SigningKey | None, JournalEntry | None]:
        """After a crash: the key staged by the interrupted run, if it is usable, and the
        journal entry to go on with (None: the attempt was discarded and cleared)."""
        ...

    def reserve(self) -> dict[str, Any]:
        """What the journal records before a new key is made (so that a crash while it
        is made can be cleaned up)."""
        ...

    def make_staged(self, j: Journal, entry: JournalEntry) -> SigningKey:
        """Make the new key reserved in ``entry`` and keep it staged (not live)."""
        ...

    def has_staged(self, j: Journal, entry: JournalEntry) -> bool:
        """True when a staged key waits to be certified."""
        ...

    def discard_staged(self, j: Journal, entry: JournalEntry) -> None:
        """Destroy the staged key: its transaction ended without a certificate, and a CA
        that enforces unique public keys would refuse it in every later one."""
        ...

    def install(self, j: Journal, cert: x509.Certificate,
                checkpoint: Callable[[str], None]) -> Installed:
        """Make the staged (or live) key and ``cert`` the session's live pair, keeping
        the pair it replaces reachable (for :meth:`undo` and revocation)."""
        ...

    def undo(self, installed: Installed) -> None:
        """Put back the pair :meth:`install` replaced (charon refused the new one)."""
        ...

    def collect(self, held: HeldKeys, *, keep_serials: Collection[int] = ()) -> list[str]:
        """Forget replaced key pairs charon no longer holds, except those of the
        certificates in ``keep_serials`` (a revocation still needs their key); return
        what went."""
        ...

    # -- revocation and checks

    def key_for(self, cert: x509.Certificate) -> SigningKey | None:
        """The key of ``cert``, a live or a replaced certificate of the session."""
        ...

    def checks(self) -> list[CheckResult]:
        """The ``session check`` items of this kind of store."""
        ...
