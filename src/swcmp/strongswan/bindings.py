"""Which loaded connections use a session's certificate, and the check item for it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from swcmp.deploy import DeployError
from swcmp.strongswan.releases import charon_version, closes_childless, replace_warning
from swcmp.strongswan.vici import (
    DEFAULT_TIMEOUT,
    CommandFailed,
    ConnectionLost,
    open_session,
    parse_cert,
    query_error,
    text,
)


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
    cert = parse_cert(cert_pem)
    wanted = set(connections)
    subject = charon_dn(cert.subject).replace(" ", "")
    found: list[ConnBinding] = []
    with open_session(uri, timeout) as conn:
        try:
            items = conn.stream("list-conns", "list-conn")
        except (CommandFailed, ConnectionLost) as e:
            raise query_error(uri, e) from None
    for item in items:
        for name, cfg in item.items():
            if (wanted and name not in wanted) or not isinstance(cfg, dict):
                continue
            for section, auth in cfg.items():
                if not section.startswith("local") or not isinstance(auth, dict):
                    continue
                local_id = text(auth["id"]) if auth.get("id") else None
                pinned = [text(c).replace(" ", "") for c in auth.get("certs", [])]
                if pinned:
                    if subject in pinned:
                        found.append(ConnBinding(name, "pinned", local_id))
                elif local_id and _identity_matches(local_id, cert):
                    found.append(ConnBinding(name, "identity", local_id))
    return tuple(found)


def pinned_release_warning(uri: str, cert_pem: bytes, *, connections: Iterable[str] = (),
                           timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """Why pinned mode costs IKE SAs on this charon, or None (identity mode, older release).

    charon 6.0 and later close the IKE SAs without CHILD_SA of every connection that a
    renewal in pinned mode re-sends (see :mod:`~swcmp.strongswan.releases`).

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused a command.
        ValueError: ``cert_pem`` is no certificate.
    """
    pinned = [b.connection for b in connection_bindings(
        uri, cert_pem, connections=connections, timeout=timeout) if b.mode == "pinned"]
    if not pinned:
        return None
    with open_session(uri, timeout) as conn:
        try:
            version = charon_version(conn)
        except ConnectionLost as e:
            raise query_error(uri, e) from None
    return replace_warning(version, pinned) if closes_childless(version) else None


PINNED_FIX = ("use identity mode: remove local.certs from the connection, set local.id to an "
              "identity of the certificate and run `swanctl --load-conns`")
"""What to do about :func:`pinned_release_warning`."""


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
            try:
                with open_session(uri, timeout) as conn:
                    version = charon_version(conn)
            except (DeployError, ConnectionLost):
                version = ""
            if closes_childless(version):
                return CheckResult(name, WARN, f"{detail}; {replace_warning(version, pinned)}",
                                   PINNED_FIX)
        return CheckResult(name, OK, detail, "")

    return check
