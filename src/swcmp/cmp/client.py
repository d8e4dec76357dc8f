"""CMP client transactions: ir, cr, kur, p10cr, genm, rr.

One :class:`CMPClient` talks to one CA through a transport. Each transaction
draws a fresh transactionID; every message a fresh senderNonce; every
response must echo it as recipNonce, carry our transactionID and valid
protection. Waiting answers are polled until a deadline. Issued certificates
are checked (our key, requested subject, chain to the trust anchor) before
they are confirmed; a certificate that fails is rejected in certConf.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from swcmp.cmp import certs, codec, keys, oids, progress, text
from swcmp.cmp.choices import GRANTED_WITH_MODS as GRANTED_WITH_MODS_POLICIES
from swcmp.cmp.dn import format_dn
from swcmp.cmp.errors import (
    CertificateError,
    CertificateRejectedError,
    CMPErrorResponse,
    HTTPStatusError,
    PollingTimeoutError,
    ProtocolError,
    SwcmpError,
)
from swcmp.cmp.issued import cert_hash_algorithm, check_issued_content, modifications
from swcmp.cmp.messages import (
    GRANTED_WITH_MODS,
    REJECTION,
    WAITING,
    AlgorithmId,
    CertRepContent,
    CertResponse,
    ErrorInfo,
    InfoValue,
    OldCertId,
    PKIMessageInfo,
    PollRepEntry,
    RevRepInfo,
    RootCaKeyUpdate,
    StatusInfo,
)
from swcmp.cmp.protection import (
    MacProtection,
    Protection,
    ResponseTrust,
    Verified,
    verify_response,
)
from swcmp.cmp.transport import Transport
from swcmp.cmp.urls import Endpoints, Route, operation_of

if TYPE_CHECKING:
    from swcmp.cmp import template

log = logging.getLogger(__name__)

#: Allowed difference between our clock and the CA's messageTime before we warn.
CLOCK_SKEW_WARNING = timedelta(minutes=10)
#: What to do with a certificate granted with modifications (PKIStatus grantedWithMods):
#: "check" (default) takes it only when its subject, subjectAltNames and key are the ones
#: asked for; "accept" takes it whatever they are (the key must still be ours), logged;
#: "reject" refuses it in certConf.
GRANTED_WITH_MODS_CHOICES = GRANTED_WITH_MODS_POLICIES
#: Shortest wait between polls, whatever checkAfter says (0 would spin).
MIN_POLL_INTERVAL = 0.2
#: The certReqId of a pollReq/pollRep for an answer that is not a certificate (a
#: pkiConf, genp or rp delayed by an error with status waiting; RFC 9483 4.4).
NO_CERT_REQ_ID = -1
#: failInfo incorrectData: what we put in a certConf that rejects a certificate.
_INCORRECT_DATA = 7
#: CRLReason unspecified (RFC 5280 5.3.1): what an rr says when no reason is given.
REASON_UNSPECIFIED = 0
#: What decoding or checking hostile bytes can raise below swcmp's own errors
#: (UnicodeError is a ValueError, OverflowError an ArithmeticError, IndexError and
#: KeyError LookupErrors; cryptography adds UnsupportedAlgorithm and InvalidSignature).
HOSTILE_INPUT_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, LookupError, AttributeError, ArithmeticError, RecursionError,
    UnsupportedAlgorithm, InvalidSignature)


@dataclass(frozen=True)
class Enrollment:
    """A certificate that the CA issued and swcmp checked (and confirmed)."""

    certificate: x509.Certificate
    cert_der: bytes
    chain: tuple[x509.Certificate, ...]
    ca_pubs: tuple[x509.Certificate, ...]
    extra_certs: tuple[x509.Certificate, ...]
    transaction_id: bytes
    implicit_confirm: bool
    polls: int
    status: StatusInfo


@dataclass(frozen=True)
class TxEvent:
    """A point in a transaction worth writing down before going on.

    ``phase`` is ``"sending"`` (the request is about to leave: transactionID
    known), ``"waiting"`` (the CA answered waiting; ``server_nonce`` is what a
    pollReq must echo) or ``"received"`` (a checked certificate, not yet
    confirmed). A renewal journals these so that after a crash it can poll the
    same transaction instead of asking for a second certificate.
    """

    phase: str
    kind: str
    transaction_id: bytes
    cert_req_id: int
    server_nonce: bytes | None = None
    cert_der: bytes | None = None
    #: with phase "received": our certConf was answered 'waiting' (RFC 9483 4.4); the
    #: pkiConf must then be polled for, and may echo this senderNonce of the certConf
    confirm_nonce: bytes | None = None
    #: where the transaction's messages go (None: the transport's one URL); a resumed
    #: transaction must send its pollReq and certConf there too
    route: Route | None = None


Journal = Callable[[TxEvent], None]
Accept = Callable[[x509.Certificate], None]


@dataclass
class _Tx:
    """State of one transaction."""

    protection: Protection
    sender_der: bytes
    implicit_confirm: bool = False
    transaction_id: bytes = field(default_factory=lambda: os.urandom(16))
    server_nonce: bytes | None = None
    pvno: int = 2
    #: the certificate that signed this transaction's first verified answer: it may
    #: sign the later ones (pkiConf, pollRep, error) without sending itself again
    signer: x509.Certificate | None = None
    #: the subjectAltNames asked for (None: not known, e.g. a resumed transaction)
    expect_sans: frozenset[x509.GeneralName] | None = None
    #: the certificate a kur replaces: the new one may not be older
    replaces: x509.Certificate | None = None
    #: the senderNonce of our last request
    sent_nonce: bytes | None = None
    #: where this transaction's messages go (None: the transport's one URL)
    route: Route | None = None


class CMPClient:
    """CMP transactions against one CA.

    Args:
        transport: sends bytes, returns bytes (see :mod:`swcmp.cmp.transport`).
        recipient: the CA's name for the PKIHeader recipient.
        trust: trust anchors for signed responses and issued certificates, or a
            :class:`~swcmp.cmp.protection.ResponseTrust` that also says who may sign answers.
        implicit_confirm: ask the CA to skip certConf/pkiConf.
        cert_profile: the certificate profile named in requests (RFC 9483 3.1).
        sender: the end entity's name, sent as sender of MAC-protected messages
            that carry no subject of their own (genm, rr); NULL-DN when None.
        poll_deadline: seconds to keep polling a 'waiting' CA in one call.
        granted_with_mods: one of :data:`GRANTED_WITH_MODS_CHOICES`.
        endpoints: the URL of each operation, for CAs that route by path (None: every
            message to the transport's URL). A transaction's certConf and pollReq go
            where its request went.
        clock: returns the current UTC time (tests pass a fixed one).
        sleep: waits between polls (tests pass a fake).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        recipient: x509.Name,
        trust: Sequence[x509.Certificate] | ResponseTrust = (),
        implicit_confirm: bool = False,
        cert_profile: str | None = None,
        sender: x509.Name | None = None,
        poll_deadline: float = 300.0,
        granted_with_mods: str = "check",
        endpoints: Endpoints | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.recipient_der = recipient.public_bytes()
        self.policy = (trust if isinstance(trust, ResponseTrust)
                       else ResponseTrust(anchors=tuple(trust), ca_name=recipient))
        self.trust = self.policy.anchors
        self.implicit_confirm = implicit_confirm
        self.cert_profile = cert_profile
        #: The sender of MAC-protected messages that name no subject (genm, rr).
        self.sender_der = sender.public_bytes() if sender is not None else None
        self.poll_deadline = poll_deadline
        if granted_with_mods not in GRANTED_WITH_MODS_CHOICES:
            raise ValueError(f"granted_with_mods {granted_with_mods!r}")
        self.granted_with_mods = granted_with_mods
        self.endpoints = None if endpoints is None or endpoints.single else endpoints
        #: The transport's own URL: a resumed transaction may post to another one (its
        #: journaled URL), and every other transaction still goes here.
        url = getattr(transport, "url", None)
        self._home_url = url if isinstance(url, str) and url else None
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        #: Counts per (event, request type): ("sent", "kur"), ("received", "kur") for an
        #: answer to a kur (whatever its body), ("failed", "kur") for a failed transaction.
        self.stats: Counter[tuple[str, str]] = Counter()

    # ------------------------------------------------------------------ requests

    def initial(self, *, key: keys.SigningKey, subject: x509.Name,
                sans: Sequence[x509.GeneralName] = (), protection: Protection,
                journal: Journal | None = None, accept: Accept | None = None) -> Enrollment:
        """IR: a first certificate, protected by MAC or an external certificate.

        ``journal`` is told about each step (see :class:`TxEvent`); ``accept``
        sees the checked certificate before it is confirmed and may refuse it
        by raising (the CA is then told in certConf).
        """
        return self._enroll("ir", key=key, subject=subject, sans=sans, protection=protection,
                            journal=journal, accept=accept)

    def certificate(self, *, key: keys.SigningKey, subject: x509.Name,
                    sans: Sequence[x509.GeneralName] = (), protection: Protection,
                    journal: Journal | None = None, accept: Accept | None = None,
                    replaces: x509.Certificate | None = None) -> Enrollment:
        """CR: an additional certificate, signed with a certificate this CA issued.

        ``replaces``: a renewal by cr; the new certificate may not be older than this one.
        """
        return self._enroll("cr", key=key, subject=subject, sans=sans, protection=protection,
                            journal=journal, accept=accept, replaces=replaces)

    def key_update(self, *, key: keys.SigningKey, old_cert: x509.Certificate,
                   protection: Protection, subject: x509.Name | None = None,
                   sans: Sequence[x509.GeneralName] | None = None,
                   journal: Journal | None = None, accept: Accept | None = None
                   ) -> Enrollment:
        """KUR: update ``old_cert`` (same or new ``key``), signed with the old certificate.

        The template repeats the old subject and SANs unless others are given.
        """
        if sans is None:
            try:
                sans = list(old_cert.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value)
            except x509.ExtensionNotFound:
                sans = []
        old_id = OldCertId(old_cert.issuer.public_bytes(), old_cert.serial_number)
        return self._enroll("kur", key=key, subject=subject or old_cert.subject, sans=sans,
                            protection=protection, old_cert_id=old_id, journal=journal,
                            accept=accept, replaces=old_cert)

    def resume(self, *, kind: str, transaction_id: bytes, server_nonce: bytes,
               key: keys.SigningKey, subject: x509.Name, protection: Protection,
               cert_req_id: int = 0, journal: Journal | None = None,
               accept: Accept | None = None, route: Route | None = None) -> Enrollment:
        """Continue a transaction the CA answered 'waiting' (e.g. before a crash).

        Sends pollReq in the old transaction, echoing the CA's last nonce, and
        carries on as if the original call had never stopped. ``route``: where the
        transaction's request went (journaled); None derives it from ``kind``.
        """
        tx = _Tx(protection, self._sender_for(protection, subject.public_bytes()),
                 implicit_confirm=self.implicit_confirm, transaction_id=transaction_id,
                 server_nonce=server_nonce, route=route or self._route(kind))
        with self._transaction():
            return self._run_enrollment(
                tx, kind, None, cert_req_id, keys.spki_der(key), subject.public_bytes(),
                journal=journal, accept=accept)

    def confirm_again(self, *, transaction_id: bytes, server_nonce: bytes, cert_der: bytes,
                      subject: x509.Name, protection: Protection, cert_req_id: int = 0,
                      confirm_nonce: bytes | None = None,
                      journal: Journal | None = None, kind: str = "kur",
                      route: Route | None = None) -> None:
        """Send certConf for a certificate received before an interruption.

        With ``confirm_nonce`` (the CA had answered our certConf 'waiting'), the
        pkiConf is polled for in the same transaction instead (RFC 9483 4.4).
        Raises if the CA does not answer pkiConf (it may have given up waiting
        for the confirmation; the certificate must then not be used). ``route``:
        where the transaction's request (a ``kind``) went; None derives it from ``kind``.
        """
        tx = _Tx(protection, self._sender_for(protection, subject.public_bytes()),
                 transaction_id=transaction_id, server_nonce=server_nonce,
                 route=route or self._route(kind))
        note = journal or (lambda event: None)

        def waiting(nonce: bytes) -> None:
            note(TxEvent("received", "certConf", tx.transaction_id, cert_req_id,
                         tx.server_nonce, cert_der, nonce, self._sent_to(tx)))

        with self._transaction():
            if confirm_nonce is None:
                self._confirm(tx, cert_der, cert_req_id, None, note=waiting)
            else:
                self._poll_delayed(tx, "certConf", ("pkiconf",), confirm_nonce, 0.0,
                                   lambda: waiting(confirm_nonce))

    def p10(self, *, csr: x509.CertificateSigningRequest, protection: Protection,
            journal: Journal | None = None, accept: Accept | None = None,
            replaces: x509.Certificate | None = None) -> Enrollment:
        """p10cr: a certificate for a PKCS#10 request (certReqId -1).

        ``journal``, ``accept`` as for :meth:`initial`; ``replaces`` as for
        :meth:`certificate`.
        """
        from cryptography.hazmat.primitives import serialization

        body = codec.p10cr_body(csr.public_bytes(serialization.Encoding.DER))
        spki = csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        tx = self._tx(protection, self._sender_for(protection, csr.subject.public_bytes()),
                      "p10cr")
        try:
            tx.expect_sans = frozenset(csr.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            tx.expect_sans = frozenset()
        tx.replaces = replaces
        return self._finish_enrollment(tx, "p10cr", body, -1, spki, csr.subject.public_bytes(),
                                       journal=journal, accept=accept)

    def ca_certs(self, *, protection: Protection) -> tuple[x509.Certificate, ...]:
        """genm id-it-caCerts: the CA certificates the CA wants us to have."""
        values = self._genm(protection, [InfoValue(oids.IT_CA_CERTS, None)])
        for v in values:
            if v.oid == oids.IT_CA_CERTS:
                return tuple(certs.load_certificate(c) for c in codec.parse_ca_certs(v.value_der))
        return ()

    def root_ca_update(self, *, protection: Protection,
                       old_root: x509.Certificate | None = None) -> RootCaKeyUpdate | None:
        """genm id-it-rootCaCert: ask whether the root CA has a new key."""
        value = certs.der_of(old_root) if old_root is not None else None
        values = self._genm(protection, [InfoValue(oids.IT_ROOT_CA_CERT, value)])
        for v in values:
            if v.oid == oids.IT_ROOT_CA_KEY_UPDATE:
                return codec.parse_root_ca_key_update(v.value_der)
        return None

    def current_crl(self, *, protection: Protection) -> x509.CertificateRevocationList | None:
        """genm id-it-currentCRL (RFC 4210 5.3.19.6): the CA's latest CRL; None when the
        CA sends none. The CRL is not checked here: its signer is the caller's question."""
        values = self._genm(protection, [InfoValue(oids.IT_CURRENT_CRL, None)])
        for v in values:
            if v.oid == oids.IT_CURRENT_CRL and v.value_der is not None:
                try:
                    return x509.load_der_x509_crl(v.value_der)
                except ValueError as e:
                    raise ProtocolError(f"the CA's currentCRL does not parse: {e}") from e
        return None

    def crl_status(self, *, protection: Protection, issuer: x509.Name,
                   this_update: datetime | None = None
                   ) -> tuple[x509.CertificateRevocationList, ...] | None:
        """genm id-it-crlStatusList (RFC 9483 4.3.4): the CRL of ``issuer`` if the CA has
        one newer than ``this_update`` (that of the CRL we hold).

        Returns the CRLs of the answer's id-it-crls, () when the CA says it has none newer,
        None when the answer has no id-it-crls at all (a CA that does not know the
        question). The CRLs are not checked here: their signer is the caller's question.
        """
        value = codec.crl_status_list_value(issuer.public_bytes(), this_update)
        values = self._genm(protection, [InfoValue(oids.IT_CRL_STATUS_LIST, value)])
        for v in values:
            if v.oid == oids.IT_CRLS:
                try:
                    return tuple(x509.load_der_x509_crl(c)
                                 for c in codec.parse_crls(v.value_der))
                except ValueError as e:
                    raise ProtocolError(f"a CRL in the CA's crls does not parse: {e}") from e
        return None

    def cert_req_template(self, *, protection: Protection) -> template.CertReqTemplate | None:
        """genm id-it-certReqTemplate (RFC 9483 4.3.3): what the CA wants in requests.

        Returns the template (``offered`` False when the CA has none: no requirements),
        or None when the answer has no id-it-certReqTemplate at all (a CA that does not
        know the question). ProtocolError for a template that cannot be read.
        """
        # Imported here: its classes cost ~3 ms to build, and a KUR never asks this.
        from swcmp.cmp import template

        values = self._genm(protection, [InfoValue(oids.IT_CERT_REQ_TEMPLATE, None)])
        for v in values:
            if v.oid == oids.IT_CERT_REQ_TEMPLATE:
                return template.parse(v.value_der)
        return None

    def revoke(self, *, cert: x509.Certificate, protection: Protection,
               reason: int = REASON_UNSPECIFIED) -> StatusInfo:
        """rr: revoke ``cert`` (e.g. the one a key update superseded).

        The request always carries a CRL reason (RFC 9483 4.2), unspecified by default.
        """
        tx = self._tx(protection, self._sender_for(protection, None), "rr")
        body = codec.rr_body([(cert.issuer.public_bytes(), cert.serial_number, reason)])
        with self._transaction():
            msg, _ = self._exchange_delayed(tx, "rr", body, ("rp",))
        assert isinstance(msg.body, RevRepInfo)
        if not msg.body.statuses:
            raise ProtocolError("the CA's revocation response has no status")
        st = msg.body.statuses[0]
        if not st.granted:
            self.stats["failed", "rr"] += 1
            raise CMPErrorResponse(status=st.status_name, fail_info=st.fail_names,
                                   text=st.text, context="revocation request")
        return st

    # ------------------------------------------------------------------ internals

    def _tx(self, protection: Protection, sender_der: bytes, body: str,
            info_oid: str | None = None) -> _Tx:
        """A new transaction that starts with a ``body`` (a genm: asking ``info_oid``)."""
        return _Tx(protection, sender_der, implicit_confirm=self.implicit_confirm,
                   route=self._route(body, info_oid))

    def _route(self, body: str, info_oid: str | None = None) -> Route | None:
        """Where a transaction started by ``body`` sends its messages; None: to the
        transport's one URL."""
        if self.endpoints is None:
            return None
        return self.endpoints.route(operation_of(body, info_oid), body)

    def _sent_to(self, tx: _Tx) -> Route | None:
        """Where ``tx``'s messages go, for the journal: its route, or the transport's one
        URL (a resumed transaction goes there even after the session's URL changed)."""
        if tx.route is not None:
            return tx.route
        return Route(self._home_url) if self._home_url is not None else None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            yield
        except HOSTILE_INPUT_ERRORS as e:
            # Whatever the CA's bytes made a library (or swcmp) trip over: a plain
            # ProtocolError, never a traceback that ends `swcmp serve`.
            log.debug("processing the CA's answer raised:", exc_info=True)
            raise ProtocolError(
                f"the CA's answer could not be processed ({type(e).__name__}: "
                f"{text.safe(str(e))[:200]})").with_hint(
                "the answer is malformed or hostile; nothing was stored. Run with -v for "
                "details; if the CA is genuine, report this to its operator") from e
        finally:
            end = getattr(self.transport, "end_transaction", None)
            if end is not None:
                end()

    def _sender_for(self, protection: Protection, subject_der: bytes | None) -> bytes:
        # RFC 9483 3.1: the sender is the subject of the protection certificate; under
        # MAC, a name of the end entity (CAs such as the Siemens Mock CA match it to
        # the MAC reference), NULL-DN only when no name is known.
        cert = getattr(protection, "cert", None)
        if isinstance(cert, x509.Certificate):
            return cert.subject.public_bytes()
        return subject_der or self.sender_der or codec.NULL_DN_DER

    def _genm(self, protection: Protection, items: list[InfoValue]) -> tuple[InfoValue, ...]:
        tx = self._tx(protection, self._sender_for(protection, None), "genm",
                      items[0].oid if items else None)
        tx.implicit_confirm = False
        with self._transaction():
            msg, _ = self._exchange_delayed(tx, "genm", codec.genm_body(items), ("genp",))
        assert isinstance(msg.body, tuple)
        return tuple(v for v in msg.body if isinstance(v, InfoValue))

    def _enroll(self, kind: str, *, key: keys.SigningKey, subject: x509.Name,
                sans: Sequence[x509.GeneralName], protection: Protection,
                old_cert_id: OldCertId | None = None, journal: Journal | None = None,
                accept: Accept | None = None,
                replaces: x509.Certificate | None = None) -> Enrollment:
        subject_der = subject.public_bytes()
        spki = keys.spki_der(key)
        ext_der = None
        if sans:
            san_value = x509.SubjectAlternativeName(list(sans)).public_bytes()
            ext_der = codec.extensions_der([(oids.SUBJECT_ALT_NAME, False, san_value)])
        pop_alg = keys.default_signature_algorithm(key)

        def sign_pop(data: bytes) -> tuple[AlgorithmId, bytes]:
            return AlgorithmId(pop_alg.oid, pop_alg.params_der), keys.sign(key, pop_alg, data)

        spec = codec.CertReqSpec(cert_req_id=0, spki_der=spki, subject_der=subject_der,
                                 extensions_der=ext_der, old_cert_id=old_cert_id,
                                 sign_pop=sign_pop)
        body = codec.cert_req_body(kind, [spec])
        tx = self._tx(protection, self._sender_for(protection, subject_der), kind)
        tx.expect_sans = frozenset(sans)
        tx.replaces = replaces
        return self._finish_enrollment(tx, kind, body, 0, spki, subject_der, journal=journal,
                                       accept=accept)

    def _finish_enrollment(self, tx: _Tx, kind: str, body: bytes, req_id: int,
                           spki: bytes, subject_der: bytes, *, journal: Journal | None = None,
                           accept: Accept | None = None) -> Enrollment:
        with self._transaction():
            return self._run_enrollment(tx, kind, body, req_id, spki, subject_der,
                                        journal=journal, accept=accept)

    def _run_enrollment(self, tx: _Tx, kind: str, body: bytes | None, req_id: int,
                        spki: bytes, subject_der: bytes, *, journal: Journal | None = None,
                        accept: Accept | None = None) -> Enrollment:
        """Send ``body`` (None: resume by polling) and see the enrollment through."""
        rep_kind = {"ir": "ip", "cr": "cp", "p10cr": "cp", "kur": "kup"}[kind]
        note = journal or (lambda event: None)
        try:
            if body is None:
                msg, verified = self._exchange(tx, "pollReq", codec.poll_req_body([req_id]),
                                               (rep_kind, "pollRep"))
            else:
                note(TxEvent("sending", kind, tx.transaction_id, req_id, route=self._sent_to(tx)))
                msg, verified = self._exchange(tx, kind, body, (rep_kind,))
            response, msg, verified, polls = self._await_certificate(
                tx, kind, rep_kind, msg, verified, req_id, note)
            req_id = response.cert_req_id  # certConf names the id the CA answered with
        except Exception:
            self.stats["failed", kind] += 1
            raise
        assert isinstance(msg.body, CertRepContent)
        if response.cert_der is None:
            self.stats["failed", kind] += 1
            raise ProtocolError(f"the CA granted the {kind} but sent no certificate")
        ca_pubs = tuple(certs.load_certificate(c) for c in msg.body.ca_pubs)
        extra = tuple(certs.load_certificate(c) for c in msg.extra_certs)
        try:
            cert = certs.load_certificate(response.cert_der)
            expect_sans = tx.expect_sans
            if response.status.status == GRANTED_WITH_MODS:
                subject_der, expect_sans = self._granted_with_mods(
                    kind, cert, spki, subject_der, expect_sans)
            chain = self._check_issued(cert, spki, subject_der, verified, ca_pubs, extra)
            check_issued_content(cert, expect_sans=expect_sans, replaces=tx.replaces)
        except CertificateError as e:
            self.stats["failed", kind] += 1
            self._reject(tx, response.cert_der, req_id, str(e))
            raise CertificateRejectedError(
                f"refused the certificate the CA issued: {e}"
            ).with_hint("the CA was told (certConf rejection); nothing was stored") from e
        note(TxEvent("received", kind, tx.transaction_id, req_id, tx.server_nonce,
                     response.cert_der, route=self._sent_to(tx)))
        if accept is not None:
            try:
                accept(cert)
            except SwcmpError as e:
                # e.g. the certificate could not be staged (disk full): tell the CA
                # we will not use it, so that it is not left issued and unconfirmed.
                self.stats["failed", kind] += 1
                self._reject(tx, response.cert_der, req_id, f"not accepted: {e}")
                raise
        implicit = tx.implicit_confirm and msg.header.implicit_confirm
        if not implicit:
            try:
                cert_der = response.cert_der

                def confirm_waiting(nonce: bytes) -> None:
                    note(TxEvent("received", kind, tx.transaction_id, req_id, tx.server_nonce,
                                 cert_der, nonce, self._sent_to(tx)))

                self._confirm(tx, response.cert_der, req_id, None, note=confirm_waiting)
            except Exception:
                self.stats["failed", kind] += 1
                raise
        log.info("%s: certificate %s issued (transaction %s%s)", kind, certs.describe(cert),
                 tx.transaction_id.hex(), ", implicitly confirmed" if implicit else "")
        return Enrollment(
            certificate=cert, cert_der=response.cert_der, chain=tuple(chain[1:]),
            ca_pubs=ca_pubs if verified.kind == "mac" else (), extra_certs=extra,
            transaction_id=tx.transaction_id, implicit_confirm=implicit, polls=polls,
            status=response.status,
        )

    def _granted_with_mods(self, kind: str, cert: x509.Certificate, spki: bytes,
                           subject_der: bytes,
                           expect_sans: frozenset[x509.GeneralName] | None
                           ) -> tuple[bytes, frozenset[x509.GeneralName] | None]:
        """Apply the grantedWithMods setting; returns the subject and SANs the issued
        certificate is then checked against (CertificateError refuses it)."""
        asked_subject = subject_der if subject_der != codec.NULL_DN_DER else \
            cert.subject.public_bytes()
        changes = modifications(cert, spki_der=spki, subject_der=asked_subject,
                                expect_sans=expect_sans)
        what = "; ".join(changes) if changes else "subject, subjectAltNames and key as asked"
        policy = self.granted_with_mods
        if policy == "reject" or (policy == "check" and changes):
            raise CertificateError(
                f"the CA granted the {kind} with modifications ({what}), and the session's "
                f"granted_with_mods setting is {policy}; accept such certificates with "
                "--granted-with-mods accept, or ask the CA operator why the request was "
                "changed")
        log.warning("%s granted with modifications (%s); accepted (granted_with_mods %s)",
                    kind, what, policy)
        if policy == "accept":
            return codec.NULL_DN_DER, None  # the key is still checked; names may differ
        return subject_der, expect_sans

    def _await_certificate(self, tx: _Tx, kind: str, rep_kind: str, msg: PKIMessageInfo,
                           verified: Verified, req_id: int, note: Journal
                           ) -> tuple[CertResponse, PKIMessageInfo, Verified, int]:
        start = self.monotonic()
        polls = 0
        while True:
            wait: float
            if msg.body_type == rep_kind:
                assert isinstance(msg.body, CertRepContent)
                response = _response_for(msg.body, req_id)
                if response.status.status == REJECTION:
                    raise CMPErrorResponse(status=response.status.status_name,
                                           fail_info=response.status.fail_names,
                                           text=response.status.text, context=kind)
                if response.status.status != WAITING:
                    if not response.status.granted:
                        raise ProtocolError(
                            f"unexpected status {response.status.status_name} in {rep_kind}")
                    return response, msg, verified, polls
                wait = 1.0  # no checkAfter in a 'waiting' CertResponse: poll soon
            else:
                assert isinstance(msg.body, tuple)
                entry = next((e for e in msg.body if isinstance(e, PollRepEntry)
                              and e.cert_req_id == req_id), None)
                if entry is None:
                    raise ProtocolError(f"pollRep does not mention certReqId {req_id}")
                wait = float(entry.check_after)
                if entry.reason:
                    log.info("CA says: %s", text.safe(" / ".join(entry.reason)))
            wait = max(wait, MIN_POLL_INTERVAL)
            # Journal the CA's latest nonce before anything can end the wait: a run
            # that resumes this transaction must echo that one.
            note(TxEvent("waiting", kind, tx.transaction_id, req_id, tx.server_nonce,
                         route=self._sent_to(tx)))
            elapsed = self.monotonic() - start
            if elapsed + wait > self.poll_deadline:
                raise PollingTimeoutError(
                    f"the CA is still processing the {kind} after {polls} polls; it asked to "
                    f"come back in {wait:g}s, past the {self.poll_deadline:g}s deadline "
                    f"(transaction {tx.transaction_id.hex()})"
                ).with_hint("retry later; the CA may need an operator to approve the request")
            log.info("%s: CA is waiting; polling again in %gs", kind, wait)
            self.sleep(wait)
            polls += 1
            msg, verified = self._exchange(tx, "pollReq", codec.poll_req_body([req_id]),
                                           (rep_kind, "pollRep"))

    def _check_issued(self, cert: x509.Certificate, spki: bytes, subject_der: bytes,
                      verified: Verified, ca_pubs: Sequence[x509.Certificate],
                      extra: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        if certs.spki_of(cert) != spki:
            raise CertificateError("the issued certificate is for another public key")
        if subject_der != codec.NULL_DN_DER and cert.subject.public_bytes() != subject_der:
            raise CertificateError(
                f"the issued certificate's subject {text.safe(format_dn(cert.subject))} "
                "is not the one requested")
        anchors = list(self.trust)
        if verified.kind == "mac" and not anchors:
            # the MAC with our secret vouches for them, when nothing else is trusted;
            # with trust anchors configured, the certificate must chain to those (a
            # root sent only in caPubs is at most an intermediate on the way)
            anchors.extend(ca_pubs)
        return certs.build_chain(cert, anchors=anchors, untrusted=[*extra, *ca_pubs],
                                 now=self.clock())

    def _confirm(self, tx: _Tx, cert_der: bytes, req_id: int,
                 status: StatusInfo | None,
                 note: Callable[[bytes], None] | None = None) -> None:
        """certConf, waiting for the pkiConf if the CA delays it; ``note`` is told the
        certConf's senderNonce each time before waiting (to journal it)."""
        cert = certs.load_certificate(cert_der)
        digest, hash_alg = cert_hash_algorithm(cert)
        if hash_alg is not None:
            tx.pvno = 3  # a certConf naming its hashAlg is CMP v3 (RFC 9480 2.10)
        h = hashes.Hash(digest)
        h.update(cert_der)
        body = codec.cert_conf_body([(h.finalize(), req_id, status, hash_alg)])
        self._exchange_delayed(tx, "certConf", body, ("pkiconf",), note=note)

    def _exchange_delayed(self, tx: _Tx, kind: str, body: bytes, expected: tuple[str, ...],
                          note: Callable[[bytes], None] | None = None
                          ) -> tuple[PKIMessageInfo, Verified]:
        """Send a request that is not for a certificate (certConf, genm, rr) and see
        delayed delivery through: a CA that answers with an error of status waiting
        is polled (pollReq certReqId -1) until the answer comes (RFC 9483 4.4), with
        the deadline of certificate polling. ``note(nonce)`` is called before each wait."""
        msg, verified = self._exchange(tx, kind, body, expected, delayed=True)
        if msg.body_type != "error":
            return msg, verified
        first = tx.sent_nonce
        assert first is not None
        log.info("%s: the CA delays its answer (status waiting); polling", kind)
        return self._poll_delayed(tx, kind, expected, first, 1.0,
                                  (lambda: note(first)) if note is not None else None)

    def _poll_delayed(self, tx: _Tx, kind: str, expected: tuple[str, ...],
                      first_nonce: bytes, wait: float,
                      note: Callable[[], None] | None) -> tuple[PKIMessageInfo, Verified]:
        """Poll for the delayed answer to ``kind`` until it comes or the deadline passes.

        The answer may echo the senderNonce of the pollReq it answers or that of the
        delayed request itself (``first_nonce``); either is ours in this transaction.
        """
        start = self.monotonic()
        polls = 0
        while True:
            wait = max(wait, MIN_POLL_INTERVAL)
            if note is not None:
                note()  # the CA's latest nonce, written down before anything can end the wait
            if self.monotonic() - start + wait > self.poll_deadline:
                raise PollingTimeoutError(
                    f"the CA still delays its answer to the {kind} after {polls} polls; it "
                    f"asked to come back in {wait:g}s, past the {self.poll_deadline:g}s "
                    f"deadline (transaction {tx.transaction_id.hex()})"
                ).with_hint("retry later; the CA may need an operator to act")
            log.info("%s: CA is waiting; polling again in %gs", kind, wait)
            self.sleep(wait)
            polls += 1
            msg, verified = self._exchange(tx, "pollReq", codec.poll_req_body([NO_CERT_REQ_ID]),
                                           ("pollRep", *expected), first_nonce=first_nonce)
            if msg.body_type != "pollRep":
                return msg, verified
            assert isinstance(msg.body, tuple)
            entry = next((e for e in msg.body if isinstance(e, PollRepEntry)
                          and e.cert_req_id == NO_CERT_REQ_ID), None)
            if entry is None:
                raise ProtocolError(f"pollRep does not mention certReqId {NO_CERT_REQ_ID}")
            wait = float(entry.check_after)
            if entry.reason:
                log.info("CA says: %s", text.safe(" / ".join(entry.reason)))

    def _reject(self, tx: _Tx, cert_der: bytes, req_id: int, reason: str) -> None:
        status = StatusInfo(REJECTION, frozenset({_INCORRECT_DATA}), (reason,))
        try:
            self._confirm(tx, cert_der, req_id, status)
        except Exception as e:  # the rejection is what matters; report the rest in the log
            log.warning("the CA did not acknowledge our rejection: %s", e)

    def _exchange(self, tx: _Tx, kind: str, body: bytes, expected: tuple[str, ...], *,
                  delayed: bool = False, first_nonce: bytes | None = None
                  ) -> tuple[PKIMessageInfo, Verified]:
        """One request and its checked answer.

        ``delayed``: an error with status waiting is returned (checked like any answer)
        instead of raised. ``first_nonce``: the answer may also echo this senderNonce
        (the delayed request's, when its answer comes after polling).
        """
        nonce = os.urandom(16)
        tx.sent_nonce = nonce
        prot = tx.protection.start()
        header = codec.HeaderFields(
            sender_der=tx.sender_der,
            recipient_der=self.recipient_der,
            transaction_id=tx.transaction_id,
            sender_nonce=nonce,
            recip_nonce=tx.server_nonce,
            message_time=self.clock().replace(microsecond=0),
            protection_alg=prot.alg,
            sender_kid=prot.sender_kid,
            implicit_confirm=tx.implicit_confirm and kind in (*codec.CERT_REQ_BODIES, "p10cr"),
            pvno=tx.pvno,
            cert_profile=(self.cert_profile
                          if kind in (*codec.CERT_REQ_BODIES, "p10cr") else None),
        )
        header_der = codec.encode_header(header)
        data = codec.assemble(header_der, body, prot.protect(codec.protected_part(header_der,
                                                                                  body)),
                              prot.extra_certs)
        log.debug("sending %s (%d bytes, transaction %s)", kind, len(data),
                  tx.transaction_id.hex())
        self.stats["sent", kind] += 1
        url = tx.route.message_url(kind) if tx.route is not None else self._home_url
        if self.endpoints is None and url == getattr(self.transport, "url", None):
            url = None  # where a transport for one URL posts anyway
        try:
            with progress.exchange(kind, url or getattr(self.transport, "url", None)):
                # the URL only when routing: a transport for one URL needs none
                raw = (self.transport.post(data) if url is None
                       else self.transport.post(data, url))
        except HTTPStatusError as e:
            wrong_path = self.endpoints is not None and e.status in (400, 404, 405)
            try:
                if e.body:
                    self._raise_if_error(tx, codec.decode_message(e.body), nonce)
            except CMPErrorResponse as refused:
                if wrong_path:  # a CA that routes by path may refuse a body at a path
                    refused.hint = (f"the CA answered HTTP {e.status} at {url}; if it "
                                    "routes messages by path, check the session's "
                                    "operation paths and operation URLs")
                    refused.setting = "operation_paths"
                raise
            if wrong_path:
                e.hint = (f"the CA refused the path of this {kind}: check the session's "
                          "operation paths and operation URLs")
                e.setting = "operation_paths"
            raise
        msg = codec.decode_message(raw)
        # Counted per request answered: a certificate delivered after polling answers a
        # pollReq, not the kur again.
        self.stats["received", kind] += 1
        waiting = delayed and _is_waiting(msg)
        if not waiting:
            self._raise_if_error(tx, msg, nonce)
        mac = tx.protection if isinstance(tx.protection, MacProtection) else None
        verified = verify_response(msg, mac=mac, trust=self.policy, now=self.clock(),
                                   known_signer=tx.signer)
        if verified.signer is not None:
            tx.signer = verified.signer
        h = msg.header
        if h.transaction_id != tx.transaction_id:
            raise ProtocolError("the response carries another transactionID")
        if h.recip_nonce != nonce and (first_nonce is None or h.recip_nonce != first_nonce):
            raise ProtocolError("the response's recipNonce does not match our senderNonce")
        if not h.sender_nonce or len(h.sender_nonce) < 16:
            raise ProtocolError("the response has no 128-bit senderNonce")
        if msg.body_type not in expected and not waiting:
            raise ProtocolError(
                f"expected {' or '.join(expected)} from the CA, got {msg.body_type}")
        if h.message_time is not None and abs(h.message_time - self.clock()) > CLOCK_SKEW_WARNING:
            log.warning("the CA's clock differs from ours by more than %s: check NTP",
                        CLOCK_SKEW_WARNING)
        tx.server_nonce = h.sender_nonce
        return msg, verified

    def _raise_if_error(self, tx: _Tx, msg: PKIMessageInfo, nonce: bytes) -> None:
        """Raise the CA's error message as CMPErrorResponse.

        ``protected`` in it is True only for an error that is provably the CA's answer
        to this very message: valid protection, our transactionID, our senderNonce as
        its recipNonce. Anything else (unprotected, or a replay of an old error) is
        reported, but callers must not let it end a transaction (see renewal).
        """
        if msg.body_type != "error":
            return
        assert isinstance(msg.body, ErrorInfo)
        mac = tx.protection if isinstance(tx.protection, MacProtection) else None
        try:
            verify_response(msg, mac=mac, trust=self.policy, now=self.clock(),
                            known_signer=tx.signer)
            protected = (msg.header.transaction_id == tx.transaction_id
                         and msg.header.recip_nonce == nonce)
        except (ProtocolError, CertificateError):
            protected = False
        st = msg.body.status
        error = CMPErrorResponse(
            status=st.status_name, fail_info=st.fail_names,
            text=st.text + msg.body.details, error_code=msg.body.error_code,
            protected=protected,
        )
        if mac is not None and (not protected or "badMessageCheck" in st.fail_names):
            # A CA that shares our MAC secret protects its error with it; one that cannot
            # (or says the check failed) did not get the secret or reference we used,
            # whatever failInfo it chose (OpenSSL's mock says badRequest).
            error.hint = ("the CA could not verify the request's MAC: check the reference "
                          "value and the secret in the MAC secret file")
            error.setting = "mac_secret"
        raise error


def _is_waiting(msg: PKIMessageInfo) -> bool:
    """An error message whose status is waiting: delayed delivery (RFC 9483 4.4)."""
    return (msg.body_type == "error" and isinstance(msg.body, ErrorInfo)
            and msg.body.status.status == WAITING)


def _response_for(content: CertRepContent, req_id: int) -> CertResponse:
    for r in content.responses:
        if r.cert_req_id == req_id:
            return r
    if req_id == -1 and len(content.responses) == 1 and content.responses[0].cert_req_id == 0:
        # A p10cr has no certReqId and RFC 9483 says the answer carries -1; EJBCA and
        # NCM answer with 0. One answer for our one request is unambiguous.
        log.info("the CA answered the p10cr with certReqId 0 instead of -1; accepted")
        return content.responses[0]
    raise ProtocolError(f"the CA's response has no answer for certReqId {req_id}")
