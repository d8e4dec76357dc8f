"""Running renewals: one pass (``swcmp renew``) and the service (``swcmp serve``).

Split by job:

* :mod:`swcmp.service.passes`: one pass over the sessions (:class:`RenewalService`);
* :mod:`swcmp.service.serve`: the serve loop (:class:`Server`);
* :mod:`swcmp.service.host`: host-wide settings and the HA role (:class:`HostConfig`);
* :mod:`swcmp.service.metrics_file`: writing the Prometheus textfile.

Host-wide settings live in ``<config_dir>/swcmp.toml`` (all optional)::

    [ha]
    role_file = "/run/swcmp/role"     # written by a keepalived notify script
    role_command = "/usr/local/bin/ha-role"   # prints MASTER/BACKUP/...
    [hooks]
    post_renew = ["/usr/local/sbin/notify-renewed"]
    [metrics]
    textfile = "/var/lib/node_exporter/swcmp.prom"

A node renews only while its role is MASTER/ACTIVE (or no role source is set);
BACKUP, FAULT, STOP..., and a role source that cannot be read, request nothing
and report ``standby`` (see :mod:`swcmp.ha`).
"""

from typing import TYPE_CHECKING

from swcmp.service.host import HostConfig, host_role
from swcmp.service.passes import (
    MAX_PARALLEL_CAS,
    RenewalService,
    SessionReport,
    load_cert,
)

if TYPE_CHECKING:
    from swcmp.service.serve import RESCAN, Server


def __getattr__(name: str) -> object:
    """The serve loop is imported by ``swcmp serve`` only, not by ``renew`` or a request."""
    if name in ("RESCAN", "Server"):
        from swcmp.service import serve

        return getattr(serve, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "MAX_PARALLEL_CAS",
    "RESCAN",
    "HostConfig",
    "RenewalService",
    "Server",
    "SessionReport",
    "host_role",
    "load_cert",
]
