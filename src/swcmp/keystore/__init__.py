"""One session's key pairs, wherever they are kept: the :class:`KeyStore` protocol.

A session keeps its keys in files (``private/<key>.key``, :class:`~swcmp.keystore.files.FileKeys`)
or in a PKCS#11 token (a ``pkcs11:`` key URI, :class:`~swcmp.keystore.token.TokenKeys`).
Which one is decided once, by :func:`open`, and the rest of swcmp (enrolment, the
renewal, revocation, ``session check``) asks the store it was handed and never asks
what kind of key it has. Each operation of the protocol is one the two backends
really do differently; what they share (the journal, the certificate files, the
commit order) stays in :mod:`swcmp.store` and :mod:`swcmp.renewal`.

A key update goes through the store in this order, the renewal writing its journal
between the steps (see :mod:`swcmp.renewal`)::

    recover (after a crash) | reserve -> [journal "key-making"] -> make_staged
        -> [journal "key-ready"] ... the CA issues ... -> install -> (charon refuses:
        undo) -> collect

Every backend passes the contract suite in ``tests/keystore_contract.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swcmp.keystore.base import HeldKeys, Installed, KeyStore

if TYPE_CHECKING:
    from swcmp.paths import Paths
    from swcmp.session import Session


def open(session: Session, paths: Paths) -> KeyStore:
    """The key store of ``session``: files, or its token for a ``pkcs11:`` key URI.

    Nothing is read yet; a token is opened (and its PIN file read) at the first
    operation that needs it, once for this store.
    """
    from swcmp.keystore.keyref import names_token

    if names_token(session.key):
        from swcmp.keystore.token import TokenKeys

        return TokenKeys(session, paths)
    from swcmp.keystore.files import FileKeys

    return FileKeys(session, paths)


__all__ = ["HeldKeys", "Installed", "KeyStore", "open"]
