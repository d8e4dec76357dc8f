"""swcmp's strongSwan side: hot-load renewed key and certificate pairs into charon.

The only package that imports :mod:`vici` (in :mod:`swcmp.strongswan.vici`):

- :mod:`~swcmp.strongswan.charon`: :class:`ViciCharon`, the charon port
  (:class:`swcmp.deploy.Charon`) the rest of swcmp is handed;
- :mod:`~swcmp.strongswan.vici`: VICI sessions, charon's key ids, queries;
- :mod:`~swcmp.strongswan.deployers`: identity and pinned mode on one shared swap;
- :mod:`~swcmp.strongswan.hook`: loading every pair into a charon that just started;
- :mod:`~swcmp.strongswan.authorities`: CA certificates and CRLs (swcmp.calife's);
- :mod:`~swcmp.strongswan.stale_keys`: old keys pinned mode leaves loaded;
- :mod:`~swcmp.strongswan.bindings`: which connections use a certificate;
- :mod:`~swcmp.strongswan.releases`: what a charon release does to IKE SAs of a
  connection that ``load-conn`` replaces;
- :mod:`~swcmp.strongswan.swanctl_conf`: swanctl.conf parsed as swanctl parses it.

The names most callers need are importable from here.
"""

from swcmp.strongswan.authorities import load_authorities
from swcmp.strongswan.bindings import (
    ConnBinding,
    binding_check,
    charon_dn,
    connection_bindings,
    pinned_release_warning,
)
from swcmp.strongswan.charon import ViciCharon, stale_keys_file
from swcmp.strongswan.deployers import (
    DEFAULT_SWANCTL_CONF,
    PinnedDeployer,
    ViciDeployer,
    choose_deployer,
    reload_pinned_connections,
)
from swcmp.strongswan.hook import load_current
from swcmp.strongswan.stale_keys import (
    StaleCleanup,
    StaleKey,
    load_stale_keys,
    save_stale_keys,
    unload_stale_from_file,
    unload_stale_keys,
)
from swcmp.strongswan.vici import (
    DEFAULT_TIMEOUT,
    DEFAULT_VICI_URI,
    CharonStatus,
    KeyId,
    LoadedCert,
    charon_status,
    key_id_from_cert_pem,
    key_id_from_public_key,
    key_id_from_spki,
    list_loaded_certs,
    loaded_key_ids,
    vici_socket_path,
)

__all__ = [
    "DEFAULT_SWANCTL_CONF",
    "DEFAULT_TIMEOUT",
    "DEFAULT_VICI_URI",
    "CharonStatus",
    "ConnBinding",
    "KeyId",
    "LoadedCert",
    "PinnedDeployer",
    "StaleCleanup",
    "StaleKey",
    "ViciCharon",
    "ViciDeployer",
    "binding_check",
    "charon_dn",
    "charon_status",
    "choose_deployer",
    "connection_bindings",
    "key_id_from_cert_pem",
    "key_id_from_public_key",
    "key_id_from_spki",
    "list_loaded_certs",
    "load_authorities",
    "load_current",
    "load_stale_keys",
    "loaded_key_ids",
    "pinned_release_warning",
    "reload_pinned_connections",
    "save_stale_keys",
    "stale_keys_file",
    "unload_stale_from_file",
    "unload_stale_keys",
    "vici_socket_path",
]
