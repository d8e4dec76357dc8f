"""The CA's own life, seen from one session: its CA certificates, a root CA rollover,
revocation and CRLs.

A gateway loses its tunnels less often because its own certificate expires (renewal
handles that) than because the CA changes around it. This module keeps a session in
step with its CA:

* **CA certificates** (genm caCerts, RFC 9483 4.3.1): after each renewal, on
  ``swcmp request cacerts`` and weekly under ``serve``. An answer is taken only if every
  certificate in it is a CA certificate that chains to the session's trust anchors; it
  then replaces ``x509ca/<session>-caN.crt`` (a stored CA certificate the current
  certificate still chains through is kept) and is loaded into charon.
* **Root CA update** (genm rootCaCert / rootCaKeyUpdate, RFC 9483 4.3.2, RFC 9480 2.4):
  newWithNew is taken only if newWithOld verifies with the current root and carries the
  same key and name (and oldWithNew, when sent, verifies with the new key). Both roots
  are then trust anchors and both are in ``x509ca/<session>-root-<id>.crt`` (loaded into
  charon); the old one is dropped once it has expired.
* **Revocation** (rr, RFC 9483 4.2): signed with the key of the certificate revoked;
  after a key update with ``revoke_superseded`` the replaced certificate is revoked
  (reason superseded). A revocation that fails is kept and retried; it never touches
  the renewed pair.
* **CRLs** (genm currentCRL, RFC 4210 5.3.19.6): fetched when the cached one is due,
  checked to be signed by the issuer of the session's certificate and not older than
  the cached one, stored in ``x509crl/<session>.crl`` and loaded into charon.

What the module remembers is in ``<state_dir>/sessions/<name>/calife.json``: when each
question was last asked, which ones the CA answered with an error (not asked again for
UNSUPPORTED_RETRY), the rollover, pending revocations and the cached CRL's dates.
"""

from swcmp.calife.life import CaLife
from swcmp.calife.state import (
    CaLifeError,
    CaLifeState,
    CaLifeStore,
    Result,
    fingerprint,
    reason_code,
    reason_name,
)
from swcmp.calife.status import roots_check, status_info, status_rows
from swcmp.store import crl_file, root_cert_files

__all__ = [
    "CaLife",
    "CaLifeError",
    "CaLifeState",
    "CaLifeStore",
    "Result",
    "crl_file",
    "fingerprint",
    "reason_code",
    "reason_name",
    "root_cert_files",
    "roots_check",
    "status_info",
    "status_rows",
]
