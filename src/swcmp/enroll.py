"""From a configured session to CMP requests and stored credentials.

This is where a :class:`~swcmp.session.Session` becomes a CMP client with the
right protection, and where an issued certificate becomes files in swanctl's
layout. ``request_initial`` (IR) and ``request_certificate`` (CR) live here;
key updates go through the staged, crash-safe path in :mod:`swcmp.renewal`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from swcmp import fsutil, keystore
from swcmp.cmp import certs, keys
from swcmp.deploy import Charon, CredentialPair, DeployError, DeployUnavailable
from swcmp.errors import ConfigError, SwcmpError
from swcmp.keystore import KeyStore
from swcmp.paths import Paths
from swcmp.session import (
    Session,
    auth_credentials,
    read_mac_secret,
    tls_client_files,
)
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore
from swcmp.store import (
    load_cert_files,
    load_trust,
    need_setting,
    read_file,
    session_ca_certs,
    write_ca_certs,
    write_cert,
)

if TYPE_CHECKING:  # the protocol stack is imported only when a request is made
    from swcmp.cmp.client import CMPClient, Enrollment
    from swcmp.cmp.protection import Protection, ResponseTrust
    from swcmp.cmp.transport import Transport
    from swcmp.cmp.urls import Endpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a request or renewal did, for the CLI, the log and ``--json``."""

    session: str
    action: str
    ok: bool
    message: str
    serial: str | None = None
    not_after: datetime | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    ca_paths: tuple[Path, ...] = ()
    charon: str | None = None
    #: A renewal: the serial (hex) of the certificate it replaced, known also to a run
    #: that finished a commit an earlier run was killed in (None: nothing replaced).
    replaced_serial: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "session": self.session, "action": self.action, "ok": self.ok,
            "message": self.message, "serial": self.serial,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "cert_path": str(self.cert_path) if self.cert_path else None,
            "key_path": str(self.key_path) if self.key_path else None,
            "ca_paths": [str(p) for p in self.ca_paths], "charon": self.charon,
        }


def signature_credentials(session: Session, paths: Paths, store: KeyStore | None = None
                          ) -> tuple[keys.SigningKey, x509.Certificate, list[x509.Certificate]]:
    """The key, certificate and intermediates that sign requests for this session.

    With no key file to name (``auth_key`` unset and the session's key not a file), the
    session's own live key signs: ``store``'s, or its key store opened now.
    """
    cert_path, key_path = auth_credentials(session, paths)
    if key_path is None and cert_path is not None and session.key is not None:
        chain = certs.load_certificates(read_file(cert_path, "authentication certificate"))
        own = (store if store is not None else keystore.open(session, paths)).live_key()
        need_setting(own, "key pair in its key store", session, "--key")
        assert own is not None
        return own, chain[0], [c for c in chain[1:] if c.issuer != c.subject]
    need_setting(cert_path, "authentication certificate", session, "--auth-cert")
    need_setting(key_path, "authentication key", session, "--auth-key")
    assert cert_path is not None and key_path is not None
    chain = certs.load_certificates(read_file(cert_path, "authentication certificate"))
    key = keys.load_private_key(read_file(key_path, "authentication key"))
    return key, chain[0], [c for c in chain[1:] if c.issuer != c.subject]


def mac_protection(session: Session) -> Protection:
    from swcmp.cmp.protection import MacProtection

    need_setting(session.mac_ref, "MAC reference", session, "--mac-ref")
    assert session.mac_ref is not None
    return MacProtection(reference=session.mac_ref.encode(), secret=read_mac_secret(session),
                         mac_alg=session.mac_alg, iterations=session.mac_iterations)


def request_chain(session: Session, paths: Paths, cert: x509.Certificate,
                  given: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The extraCerts after the protection certificate: its chain, then --extra-certs.

    The chain is built toward the trust anchors from what the session holds (the
    certificates beside the signing certificate, its CA certificates, the anchors)
    and sent without the self-signed root (RFC 9483 3.3); when it cannot be built
    the certificates given with the signing certificate are sent as they are.
    ``--extra-certs`` files follow, e.g. the root for CAs that want it.
    """
    chain: list[x509.Certificate] = list(given)
    anchors = load_trust(session)
    if anchors:
        try:
            path = certs.build_chain(cert, anchors=anchors,
                                     untrusted=[*given, *session_ca_certs(session, paths)],
                                     now=datetime.now(UTC), check_leaf_validity=False)
            chain = [c for c in path[1:] if c.subject != c.issuer]
        except SwcmpError as e:
            log.debug("%s: no chain for the signing certificate (%s); sending the given one",
                      session.name, e)
    out: list[x509.Certificate] = []
    for c in [*chain, *load_cert_files(session.extra_certs, "extra certificate file")]:
        if c not in out and c != cert:
            out.append(c)
    return out


def signature_protection(session: Session, paths: Paths) -> Protection:
    from swcmp.cmp.protection import SignatureProtection

    key, cert, chain = signature_credentials(session, paths)
    return SignatureProtection(key=key, cert=cert,
                               chain=request_chain(session, paths, cert, chain))


def response_trust(session: Session, paths: Paths | None = None) -> ResponseTrust:
    """Whom the session believes about signed answers (see ResponseTrust)."""
    from swcmp.cmp.protection import ResponseTrust

    return ResponseTrust(
        anchors=tuple(load_trust(session)),
        ca_name=session.ca_dn,
        pinned=tuple(load_cert_files(session.server_cert, "server certificate file")),
        untrusted=tuple(session_ca_certs(session, paths)) if paths is not None else (),
        ignore_keyusage=session.ignore_keyusage,
    )


def make_client(session: Session, *, transport: Transport | None = None,
                implicit_confirm: bool | None = None, poll_deadline: float = 300.0,
                sleep: Callable[[float], None] | None = None,
                paths: Paths | None = None,
                clock: Callable[[], datetime] | None = None) -> CMPClient:
    """A CMPClient for the session's CA (an HttpTransport unless one is given);
    ``clock`` is the client's time (the renewal's, so that an injected clock holds)."""
    from swcmp.cmp.client import CMPClient
    from swcmp.cmp.transport import HttpTransport

    need_setting(session.server_url, "server URL", session, "--server-url")
    need_setting(session.ca_name, "CA name", session, "--ca-name")
    assert session.server_url is not None and session.ca_dn is not None
    if transport is None:
        bundle = str(session.tls_ca_bundle) if session.tls_ca_bundle else None
        tls_client = tls_client_files(session)
        transport = HttpTransport(
            session.server_url, ca_bundle=bundle, total_timeout=float(session.timeout),
            connect_timeout=min(10.0, float(session.timeout)),
            client_cert=str(tls_client[0]) if tls_client else None,
            client_key=str(tls_client[1]) if tls_client else None)
    client = CMPClient(transport, recipient=session.ca_dn, trust=response_trust(session, paths),
                       implicit_confirm=(session.implicit_confirm if implicit_confirm is None
                                         else implicit_confirm),
                       poll_deadline=poll_deadline, cert_profile=session.cert_profile,
                       sender=session.entity_dn,
                       granted_with_mods=session.granted_with_mods,
                       endpoints=session_endpoints(session))
    if sleep is not None:
        client.sleep = sleep
    if clock is not None:
        client.clock = clock
    return client


def session_endpoints(session: Session) -> Endpoints:
    """The session's URL of each operation (see :mod:`swcmp.cmp.urls`)."""
    from swcmp.cmp.urls import Endpoints

    assert session.server_url is not None
    return Endpoints.build(session.server_url, paths=session.operation_paths,
                           profile_label=session.profile_label,
                           operation_urls=session.operation_urls)


def usable_ca_pubs(session: Session, enrolled: Enrollment) -> list[x509.Certificate]:
    """The caPubs worth keeping: CA certificates only, and with trust anchors
    configured only those that are anchors or chain to them.

    At most certs.MAX_CANDIDATES distinct ones are looked at: each costs a bounded
    chain search, and a CA that sends hundreds must not cost hundreds of them.
    """
    anchors = load_trust(session)
    out: list[x509.Certificate] = []
    for c in certs.unique_candidates(enrolled.ca_pubs):
        if not certs.is_ca(c):
            log.warning("%s: ignoring caPubs certificate %s: not a CA certificate",
                        session.name, certs.describe(c))
            continue
        if anchors and c not in anchors:
            try:
                certs.build_chain(c, anchors=anchors,
                                  untrusted=[*enrolled.chain, *enrolled.ca_pubs],
                                  now=datetime.now(UTC))
            except SwcmpError as e:
                log.warning("%s: ignoring caPubs certificate %s: %s", session.name,
                            certs.describe(c), e)
                continue
        out.append(c)
    return out


def deploy(charon: Charon | None, session: Session, new: CredentialPair,
           previous: CredentialPair | None) -> str:
    """Hand a committed pair to charon; return what happened, in words.

    An unreachable charon is not a failure: the files are committed and the
    charon start hook loads them. A DeployError propagates.
    """
    if charon is None:
        return "not loaded into charon (--vici none or --no-deploy)"
    try:
        return charon.deploy(session, new, previous).detail
    except DeployUnavailable as e:
        reason = str(e.args[0]) if e.args else str(e)
        # in_outcome: the returned text is the command's output too (shown once there)
        log.warning("%s: charon not updated: %s (the files are in place; charon loads them "
                    "when it starts)", new.session, reason, extra={"in_outcome": True})
        return f"charon not updated: {reason}"


def _store_and_configure(session: Session, paths: Paths, store: SessionStore | None,
                         keys_: KeyStore, enrolled: Enrollment, action: str,
                         charon: Charon | None) -> Outcome:
    previous = keys_.live_pair()
    cert_path = paths.cert_file(session.name)
    ca_pubs = usable_ca_pubs(session, enrolled)
    ca_list = list(dict.fromkeys([*enrolled.chain, *ca_pubs]))  # as write_ca_certs stores them
    ca_paths = write_ca_certs(session, paths, ca_list)
    write_cert(paths, session, enrolled.certificate)
    keys_.enrolled()
    if store is not None:
        # From now on requests are signed with the session's own certificate; a
        # session that had no trust anchor takes the CA certificates the MAC vouched for.
        unset = [f for f in ("auth_cert", "auth_key") if getattr(session, f) is not None]
        set_values: dict[str, object] = {}
        roots = [c for c in ca_pubs if c.subject == c.issuer]
        if not session.trust and roots:
            # Only self-signed CA certificates become anchors, and the operator sees
            # what was trusted on the MAC's word, to compare with the CA's published one.
            set_values["trust"] = tuple(str(p) for p, c in zip(ca_paths, ca_list, strict=True)
                                        if c in roots)
            for c in roots:
                log.warning("%s: now trusting CA %s, SHA-256 fingerprint %s (sent as caPubs "
                            "under the verified MAC): compare it with the CA's published "
                            "fingerprint", session.name, certs.describe(c),
                            c.fingerprint(hashes.SHA256()).hex(":"))
        if unset or set_values:
            store.update(session.name, set_values=set_values, unset=unset)
    new = keys_.live_pair()
    assert new is not None
    detail = deploy(charon, session, new,
                    previous if previous and previous.cert_pem != new.cert_pem else None)
    cert = enrolled.certificate
    return Outcome(session.name, action, True,
                   f"certificate {certs.describe(cert)} issued, valid until "
                   f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z",
                   serial=f"{cert.serial_number:x}", not_after=cert.not_valid_after_utc,
                   cert_path=cert_path, key_path=keys_.key_file, ca_paths=ca_paths,
                   charon=detail)


def _run_request(session: Session, paths: Paths, action: str,
                 work: Callable[[], Outcome],
                 clock: Callable[[], datetime] | None = None) -> Outcome:
    states = StateStore(paths)
    now = (clock or (lambda: datetime.now(UTC)))()
    try:
        outcome = work()
    except SwcmpError as e:
        with states.update(session.name) as st:
            st.record(action, False, str(e), now=now)
        raise
    with states.update(session.name) as st:
        st.record(action, True, outcome.message, now=now, serial=outcome.serial)
        if outcome.charon:
            st.charon = outcome.charon
        # a new certificate ends the failures of the renewals before it (the operator's
        # `request initial` after an expiry): their count, backoff and state go, or
        # SwcmpRenewalsFailing kept firing and status kept saying needs_ir
        st.failures, st.next_attempt, st.state = 0, None, "idle"
    return outcome


def _request(kind: str, session: Session, paths: Paths, protection: Callable[[], Protection],
             store: SessionStore | None, charon: Charon | None,
             transport: Transport | None,
             clock: Callable[[], datetime] | None = None) -> Outcome:
    """An IR or CR for the session's key (generated if missing), stored and deployed."""
    def work() -> Outcome:
        need_setting(session.entity, "entity (subject DN)", session, "--entity")
        assert session.entity_dn is not None and session.key is not None
        prot = protection()
        keys_ = keystore.open(session, paths)
        client = make_client(session, transport=transport, paths=paths, clock=clock)
        taken: Callable[[], None] = _nothing
        if kind == "ir":
            # Before a key is made: a key type the CA's template forbids is not generated
            taken = _check_template(session, paths, client, prot, keys_,
                                    now=clock() if clock is not None else datetime.now(UTC))
        key, _ = keys_.ensure_key()
        try:
            if kind == "p10cr":
                enrolled = client.p10(csr=make_csr(key, session.entity_dn, session.san_names),
                                      protection=prot)
            else:
                send = client.initial if kind == "ir" else client.certificate
                enrolled = send(key=key, subject=session.entity_dn, sans=session.san_names,
                                protection=prot)
        finally:
            _record_stats(paths, session.name, client)
        taken()  # the CA took the request: a refusal of the template question was its own
        return _store_and_configure(session, paths, store, keys_, enrolled, kind, charon)

    # The renewal lock: a renewal committing a new key while this request is on the
    # wire would otherwise end with its key beside our certificate for the old one.
    with fsutil.exclusive_lock(paths.lock_dir, session.name, blocking=False,
                               what=f"session {session.name}"):
        return _run_request(session, paths, kind, work, clock)


def _nothing() -> None:
    return None


def _check_template(session: Session, paths: Paths, client: CMPClient, prot: Protection,
                    keys_: KeyStore, *, now: datetime) -> Callable[[], None]:
    """genm certReqTemplate before an IR: refuse a key type or subject the CA's template
    forbids before anything else is sent (see swcmp.calife.template). Returns what to
    call once the CA took the IR."""
    from swcmp.calife.template import check_request, key_of, key_of_session

    assert session.entity_dn is not None
    live = keys_.live_key()
    try:
        return check_request(session, paths, client, prot, now=now,
                      key=key_of(keys.public_key_of(live)) if live is not None
                      else key_of_session(session), key_is_new=live is None,
                      subject=session.entity_dn, what="initial request",
                      makeable=keys_.key_types)
    except SwcmpError:
        _record_stats(paths, session.name, client)
        raise


def request_initial(session: Session, paths: Paths, *, store: SessionStore | None = None,
                    charon: Charon | None = None,
                    transport: Transport | None = None,
                    clock: Callable[[], datetime] | None = None) -> Outcome:
    """IR: enroll the session's key (generated if missing), MAC or signature protected.

    Stores the certificate as ``x509/<session>.crt``, CA certificates in
    ``x509ca/``, points the session's authentication at its own certificate
    and, under MAC with no trust anchor configured, trusts the CA certificates
    the MAC-protected answer carried. ``clock``: the time (tests inject one).
    """
    def protection() -> Protection:
        if session.ir_auth == "mac":
            return mac_protection(session)
        return signature_protection(session, paths)

    return _request("ir", session, paths, protection, store, charon, transport, clock)


def request_certificate(session: Session, paths: Paths, *, store: SessionStore | None = None,
                        charon: Charon | None = None, transport: Transport | None = None,
                        pkcs10: bool = False) -> Outcome:
    """CR: a certificate for the session's key, signed with a certificate this CA issued.

    ``pkcs10``: send the request as a PKCS#10 CSR in a p10cr (RFC 9483 4.1.4) instead.
    """
    return _request("p10cr" if pkcs10 else "cr", session, paths,
                    lambda: signature_protection(session, paths), store, charon, transport)


def make_csr(key: keys.SigningKey, subject: x509.Name,
             sans: Sequence[x509.GeneralName]) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for ``key`` with the session's subject and SANs."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    alg = keys.default_signature_algorithm(key)
    try:
        return builder.sign(key, keys.hash_for_cert_signature(alg.oid))  # type: ignore[arg-type]
    except TypeError:  # cryptography signs CSRs only with keys it holds in memory
        raise ConfigError("a PKCS#10 request (p10cr) cannot be signed by a key in a token "
                          "yet").with_hint("use an ir or cr for this session") from None


def _record_stats(paths: Paths, name: str, client: CMPClient) -> None:
    counts = client.stats
    if counts:
        try:
            with StateStore(paths).update(name) as st:
                st.add_stats(counts)
        except SwcmpError as e:  # statistics must never mask the request's own outcome
            log.warning("%s: could not record statistics: %s", name, e)


__all__ = ["DeployError", "Outcome", "request_certificate", "request_initial"]
