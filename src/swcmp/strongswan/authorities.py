"""CA certificates and CRLs into charon: what the CA's life (swcmp.calife) loads.

Neither needs a key and neither replaces anything: charon keeps every CA certificate
loaded (the two roots of a rollover side by side) and uses the newest CRL of an issuer.
"""

from __future__ import annotations

from collections.abc import Iterable

from swcmp.strongswan.vici import (
    DEFAULT_TIMEOUT,
    CommandFailed,
    ConnectionLost,
    SocketFactory,
    open_session,
    query_error,
)


def load_authorities(uri: str, ca_certs_pem: Iterable[bytes], crls_der: Iterable[bytes], *,
                     timeout: float = DEFAULT_TIMEOUT,
                     connect: SocketFactory | None = None) -> str:
    """Load CA certificates (``load-cert`` flag CA) and CRLs (type X509_CRL) into charon.

    One that charon refuses does not keep the others out.

    Returns what was loaded, in words.

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused one of them (the others are loaded).
    """
    cas, crls = tuple(ca_certs_pem), tuple(crls_der)
    refused: list[CommandFailed] = []
    with open_session(uri, timeout, connect) as conn:
        try:
            for pem in cas:
                try:
                    conn.load_cert(pem, ca=True)
                except CommandFailed as e:
                    refused.append(e)
            for der in crls:
                try:
                    conn.call("load-cert", {"type": "X509_CRL", "data": der})
                except CommandFailed as e:
                    refused.append(e)
            if cas:
                conn.flush_certs()
        except (CommandFailed, ConnectionLost) as e:
            raise query_error(uri, e) from None
    if refused:
        raise query_error(uri, refused[0])
    parts = []
    if cas:
        parts.append(f"{len(cas)} CA certificate(s)")
    if crls:
        parts.append(f"{len(crls)} CRL(s)")
    return "loaded " + " and ".join(parts) + " into charon" if parts else "nothing to load"
