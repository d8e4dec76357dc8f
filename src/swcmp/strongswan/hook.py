"""charon's start hook: load every session's current pair into a charon that just started.

After a (re)start charon holds no credentials loaded over VICI; ``swcmp hook
charon-start`` (charon's ``start-scripts``) calls :func:`load_current` with every
session's pair, after finishing any renewal a crash interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from swcmp.deploy import CredentialPair, DeployError, DeployResult, DeployUnavailable
from swcmp.strongswan.deployers import load_pair
from swcmp.strongswan.vici import (
    DEFAULT_TIMEOUT,
    CheckFailed,
    CommandFailed,
    ConnectionLost,
    SocketFactory,
    key_id_from_cert_pem,
    open_session,
)

log = logging.getLogger(__name__)


def load_current(
    uri: str,
    pairs: Iterable[CredentialPair],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    connect: SocketFactory | None = None,
) -> DeployResult:
    """Load the current pairs and their CA certificates into charon.

    For charon's ``start-scripts`` hook: after a (re)start charon holds no
    VICI credentials. Each pair's key and certificate and its CA certificates
    are loaded; a pair charon refuses does not stop the others.

    Args:
        uri: charon's VICI URI.
        pairs: every session's current pair.
        timeout: seconds to wait for charon.
        connect: a factory of connected sockets to use instead of ``uri`` (tests).

    Returns:
        What was loaded.

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused at least one pair (the others are loaded).
    """
    pairs = tuple(pairs)
    failed: list[str] = []
    loaded: list[str] = []
    with open_session(uri, timeout, connect) as conn:
        for pair in pairs:
            try:
                expected = key_id_from_cert_pem(pair.cert_pem)
            except ValueError:
                failed.append(f"{pair.session}: certificate {pair.cert_path} does not parse")
                continue
            try:
                load_pair(conn, pair, expected)
            except CheckFailed as e:
                failed.append(f"{pair.session}: {e.errmsg}")
                continue
            except CommandFailed as e:
                failed.append(f"{pair.session}: charon refused {e.command}: {e.errmsg}")
                continue
            except ConnectionLost as e:
                err = DeployUnavailable(f"charon at {uri} closed the connection ({e})")
                err.hint = "check that charon is running"
                raise err from None
            loaded.append(pair.session)
            log.info("loaded session %s into charon (key id %s)", pair.session, expected)
        try:
            conn.flush_certs()
        except CommandFailed as e:
            log.warning("charon refused flush-certs: %s", e.errmsg)
        except ConnectionLost:
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
