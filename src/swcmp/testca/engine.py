"""The CMP logic of the test CA: the bytes of one request in, the bytes of the answer out.

Nothing here knows about HTTP. Every request is checked the way a careful CA
checks it, in this order: it decodes; its protection verifies (a MAC with the
configured reference and secret, or a signature by a confirmed, unexpired,
unrevoked certificate this CA issued); the header follows the rules (16-byte
transactionID and senderNonce, recipNonce absent on a first message and equal
to our last senderNonce on a follow-up, messageTime close to our clock,
recipient this CA); then the body. Any refusal is an ``error`` message with
PKIStatus rejection, a failInfo bit and a text saying why, protected like the
request when its protection verified, else signed with the CA key (the one
protection a client can check without sharing a secret with us).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID

from swcmp.cmp import certs, codec, keys, oids
from swcmp.cmp.messages import (
    ACCEPTED,
    GRANTED_WITH_MODS,
    REJECTION,
    WAITING,
    AlgorithmId,
    CertRequestInfo,
    CertResponse,
    CertStatusInfo,
    Header,
    InfoValue,
    OldCertId,
    PKIMessageInfo,
    PollRepEntry,
    RevDetailsInfo,
    RootCaKeyUpdate,
    StatusInfo,
)
from swcmp.cmp.protection import (
    MacProtection,
    Protection,
    SignatureProtection,
    pbm_params,
    verify_mac,
)
from swcmp.errors import FAILURE_BIT, ProtectionError, ProtocolError, SwcmpError
from swcmp.names import parse_dn
from swcmp.testca import derutil
from swcmp.testca.authority import BACKDATE, Authority, is_supported_key, rollover_stamp
from swcmp.testca.config import CAConfig
from swcmp.testca.state import (
    AWAITING_CONF,
    CONFIRMED,
    PENDING,
    REJECTED,
    REVOKED,
    WAITING_POLL,
    CertRecord,
    StateStore,
    TxRecord,
)

log = logging.getLogger(__name__)

#: Request body type -> the body type of the answer that carries the certificate.
REPLY_OF = {"ir": "ip", "cr": "cp", "kur": "kup", "p10cr": "cp"}
#: Bodies that start a transaction, and those that continue one.
FIRST_MESSAGES = ("ir", "cr", "kur", "p10cr", "genm", "rr")
FOLLOW_UPS = ("certConf", "pollReq", "error")
#: RFC 9483 3.1: transactionID and senderNonce are 128 bits.
ID_LENGTH = 16
#: Template extensions the CA replaces by its own policy instead of refusing them.
_POLICY_EXTENSIONS = {
    ExtensionOID.KEY_USAGE.dotted_string: "keyUsage",
    ExtensionOID.EXTENDED_KEY_USAGE.dotted_string: "extendedKeyUsage",
    ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string: "subjectKeyIdentifier",
    ExtensionOID.CERTIFICATE_POLICIES.dotted_string: "certificatePolicies",
}
_SAN_OID = ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string
_BC_OID = ExtensionOID.BASIC_CONSTRAINTS.dotted_string
_SAN_TYPES = (x509.DNSName, x509.IPAddress, x509.RFC822Name, x509.UniformResourceIdentifier)
_SHA1_MACS = (oids.HMAC_SHA1, oids.HMAC_WITH_SHA1)
_MAX_TEXT = 200


class Refusal(Exception):
    """A request is refused: answered with an ``error`` message.

    Args:
        fail: the failInfo name (see ``swcmp.errors.FAILURE_INFO``).
        text: what is wrong, for the statusString.
        ends_transaction: a refused follow-up ends its transaction (its
            certificate is dropped). False where the message may not come
            from the transaction's client at all (a replay, a wrong nonce,
            another signer), which must not be able to break a transaction.
    """

    def __init__(self, fail: str, text: str, *, ends_transaction: bool = True) -> None:
        super().__init__(text)
        assert fail in FAILURE_BIT, fail
        self.fail = fail
        self.text = text
        self.ends_transaction = ends_transaction


@dataclass(frozen=True)
class Auth:
    """How a request's protection was verified.

    ``mac_alg`` and ``iterations`` shape the MAC of our answer after the
    request's own (a client configured for HMAC-SHA1 may know no other).
    """

    kind: str  # "mac" or "signature"
    mac_alg: str = "hmac-sha256"
    iterations: int = 10_000
    signer: x509.Certificate | None = None
    signer_serial: int | None = None


@dataclass(frozen=True)
class Answer:
    """An answer's body and what the header and the log line need."""

    body_type: str
    body_der: bytes
    implicit_confirm: bool = False
    extra_certs: tuple[bytes, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class _Plan:
    """What a certificate request asks to be certified, after all checks."""

    cert_req_id: int
    public_key: keys.PublicKey
    subject: x509.Name
    san: x509.ExtensionType | None
    ignored: tuple[str, ...]
    #: the certificate a kur updates (its key may be certified again)
    old_serial: int | None = None


class CMPEngine:
    """Answers CMP requests as the test CA.

    Args:
        authority: the CA key and certificate.
        store: issued certificates and open transactions (persisted).
        config: policy and test knobs.
        clock: the current UTC time (tests pass their own).
        sleep: how ``config.delay`` waits.
    """

    def __init__(self, authority: Authority, store: StateStore, config: CAConfig, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.authority = authority
        self.store = store
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self._signer = SignatureProtection(key=authority.key, cert=authority.cert,
                                           send_cert=config.signer_in_extra_certs)
        #: Requests answered, by (who sent it, body type): for tests that prove a node
        #: sent nothing (an HA standby). Who: the signer's subject of a signed request,
        #: else the sender name (RFC 4514); in memory only.
        self.requests: Counter[tuple[str, str]] = Counter()
        self._requests_lock = threading.Lock()
        #: the directory whose `testca rollover` this engine follows (None: none)
        self.directory: Path | None = None
        self._rollover_seen = 0
        self._crl_number = 0
        self._forger: Authority | None = None

    def follow(self, directory: Path) -> None:
        """Pick up a rollover made in ``directory`` (by ``swcmp testca rollover``)."""
        self.directory = directory
        self._rollover_seen = rollover_stamp(directory)

    def _follow_rollover(self) -> None:
        if self.directory is None:
            return
        stamp = rollover_stamp(self.directory)
        if stamp in (0, self._rollover_seen):
            return
        try:
            authority = Authority.load_or_create(self.directory, key_type=self.config.key_type,
                                                 now=self.clock())
        except SwcmpError as e:
            log.error("cannot load the rolled-over CA: %s (keeping the current key)", e)
            return
        self.authority = authority
        self._signer = SignatureProtection(key=authority.key, cert=authority.cert,
                                           send_cert=self.config.signer_in_extra_certs)
        self._rollover_seen = stamp
        log.info("now issuing with the new root %s", certs.describe(authority.cert))

    # ------------------------------------------------------------------ entry point

    def handle(self, data: bytes) -> bytes:
        """Answer one DER-encoded PKIMessage with the DER of the answer.

        Every problem with the request, and any failure of the CA itself, is answered with
        a CMP error message; nothing about the request makes this raise.
        """
        if self.config.delay:
            self.sleep(self.config.delay)
        self._follow_rollover()
        started = time.monotonic()
        nonce = os.urandom(ID_LENGTH)
        try:
            msg = codec.decode_message(data, max_size=self.config.max_request_size)
        except ProtocolError as e:
            return self._undecodable(data, e, nonce)
        auth: Auth | None = None
        try:
            self._expire_transactions()
            auth = self._authenticate(msg)
            answer = self._dispatch(msg, auth, nonce)
        except Refusal as r:
            if auth is not None and r.ends_transaction and msg.body_type in FOLLOW_UPS:
                self._abort(msg, auth, r.text)
            answer = self._error(r)
        except SwcmpError as e:
            log.error("cannot process %s: %s", msg.body_type, e)
            answer = self._error(Refusal("systemFailure", f"the test CA failed: {e}"))
        except Exception:
            # A bug must still produce a CMP answer the client can report, not a dead socket.
            log.exception("internal error while processing %s", msg.body_type)
            answer = self._error(Refusal("systemFailure", "internal error in the test CA"))
        reply = self._encode(msg.header, auth, answer, nonce)
        with self._requests_lock:
            self.requests[(self._sender(msg, auth), msg.body_type)] += 1
        log.info("%s tx=%s from %s [%s] -> %s %s(%.1f ms)", msg.body_type,
                 _hex(msg.header.transaction_id), self._who(msg, auth),
                 auth.kind if auth else "unverified", answer.body_type,
                 f"{answer.note} " if answer.note else "",
                 (time.monotonic() - started) * 1000)
        return reply

    def _sender(self, msg: PKIMessageInfo, auth: Auth | None) -> str:
        """The request's sender as an RFC 4514 string ("" when it has no usable name)."""
        if auth is not None and auth.signer is not None:
            return str(auth.signer.subject.rfc4514_string())
        sender = msg.header.sender_der
        if not sender or sender == codec.NULL_DN_DER:
            return ""
        try:
            return str(derutil.name_from_der(sender).rfc4514_string())
        except ProtocolError:
            return ""

    def request_counts(self, sender: str) -> dict[str, int]:
        """How many requests of each body type ``sender`` (RFC 4514) sent so far."""
        with self._requests_lock:
            return {kind: n for (who, kind), n in self.requests.items() if who == sender}

    def _who(self, msg: PKIMessageInfo, auth: Auth | None) -> str:
        who = self._sender(msg, auth)
        return f"'{who}'" if who else "(no sender name)"

    # ------------------------------------------------------------------ protection

    def _authenticate(self, msg: PKIMessageInfo) -> Auth:
        alg = msg.header.protection_alg
        if msg.protection is None or alg is None:
            raise Refusal("badMessageCheck", "unprotected requests are refused: protect the "
                          "request with the shared secret or a certificate this CA issued")
        if alg.oid in (oids.PASSWORD_BASED_MAC, oids.PBMAC1):
            return self._check_mac(msg)
        return self._check_signature(msg)

    def _check_mac(self, msg: PKIMessageInfo) -> Auth:
        h = msg.header
        alg = h.protection_alg
        assert alg is not None and msg.protection is not None
        ref, secret = self.config.mac_ref, self.config.mac_secret
        if ref is None or secret is None:
            raise Refusal("wrongIntegrity", "this CA has no shared secret: sign the request "
                          "with a certificate it issued")
        if not hmac.compare_digest(h.sender_kid or b"", ref):
            raise Refusal("badMessageCheck", "unknown MAC reference (senderKID)")
        try:
            verify_mac(secret, alg, msg.protected_part, msg.protection)
        except ProtectionError as e:
            reason = "wrong MAC" if "does not verify" in str(e) else str(e)
            raise Refusal("badMessageCheck", f"MAC check failed: {reason}") from e
        if alg.oid == oids.PBMAC1 or alg.params_der is None:
            return Auth("mac")
        params = pbm_params(alg.params_der)  # verify_mac has accepted them
        mac_alg = "hmac-sha1" if params.mac_oid in _SHA1_MACS else "hmac-sha256"
        return Auth("mac", mac_alg=mac_alg, iterations=params.iterations)

    def _check_signature(self, msg: PKIMessageInfo) -> Auth:
        h = msg.header
        alg = h.protection_alg
        assert alg is not None and msg.protection is not None
        if not msg.extra_certs:
            raise Refusal("signerNotTrusted",
                          "signed request without the signer's certificate in extraCerts")
        try:
            signer = certs.load_certificate(msg.extra_certs[0])
        except SwcmpError as e:
            raise Refusal("badDataFormat", f"the first extraCert does not load: {e}") from e
        try:
            keys.verify(signer.public_key(), alg,
                        msg.protection, msg.protected_part)
        except ProtectionError as e:
            if isinstance(e.__cause__, InvalidSignature):
                raise Refusal("badMessageCheck", "the request's signature does not verify with "
                              "the certificate in extraCerts") from e
            raise Refusal("badAlg", f"protection algorithm not accepted: {e}") from e
        serial = signer.serial_number
        if not self.authority.issued_here(signer):
            raise Refusal("signerNotTrusted",
                          f"the signing certificate {certs.describe(signer)} was not issued by "
                          "this CA")
        with self.store.lock:
            rec = self.store.issued.get(serial)
            status = rec.status if rec else None
        if status == REVOKED:
            raise Refusal("certRevoked",
                          f"the signing certificate {certs.describe(signer)} is revoked")
        if status != CONFIRMED:
            raise Refusal("signerNotTrusted",
                          f"the signing certificate {certs.describe(signer)} is "
                          f"{status or 'unknown to this CA'}, not a confirmed certificate")
        now = self.clock()
        if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
            raise Refusal("signerNotTrusted",
                          f"the signing certificate {certs.describe(signer)} is not valid now "
                          f"(expired {signer.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z?)")
        if h.sender_der not in (None, codec.NULL_DN_DER) and \
                h.sender_der != signer.subject.public_bytes():
            raise Refusal("badMessageCheck",
                          "the header's sender is not the subject of the signing certificate")
        kid = certs.subject_key_id(signer)
        if h.sender_kid is not None and kid is not None and h.sender_kid != kid:
            raise Refusal("badMessageCheck", "senderKID is not the signing certificate's "
                          "subjectKeyIdentifier")
        return Auth("signature", signer=signer, signer_serial=serial)

    # ------------------------------------------------------------------ dispatch

    def _check_header(self, h: Header) -> None:
        if h.transaction_id is None or len(h.transaction_id) != ID_LENGTH:
            raise Refusal("badRequest", "transactionID must be present and 16 bytes long",
                          ends_transaction=False)
        if h.sender_nonce is None or len(h.sender_nonce) != ID_LENGTH:
            raise Refusal("badSenderNonce", "senderNonce must be present and 16 bytes long",
                          ends_transaction=False)
        if h.message_time is not None and \
                abs(h.message_time - self.clock()) > self.config.max_skew:
            raise Refusal("badTime", f"messageTime {h.message_time:%Y-%m-%d %H:%M:%S}Z is more "
                          f"than {self.config.max_skew} away from the CA's clock")
        if h.recipient_der not in (None, codec.NULL_DN_DER, self.authority.subject_der):
            raise Refusal("wrongAuthority", "the recipient is not this CA "
                          f"('{self.authority.cert.subject.rfc4514_string()}')")

    def _dispatch(self, msg: PKIMessageInfo, auth: Auth, nonce: bytes) -> Answer:
        h = msg.header
        self._check_header(h)
        kind = msg.body_type
        tid = h.transaction_id
        assert tid is not None
        if kind in FIRST_MESSAGES:
            if h.recip_nonce is not None:
                raise Refusal("badRecipientNonce",
                              "the first message of a transaction must not carry a recipNonce")
            self._check_unused(tid)
        if kind in REPLY_OF:
            return self._certify(msg, auth, nonce)
        if kind == "certConf":
            return self._cert_conf(msg, auth, nonce)
        if kind == "pollReq":
            return self._poll(msg, auth, nonce)
        if kind == "genm":
            return self._genm(msg)
        if kind == "rr":
            return self._revoke(msg, auth)
        if kind == "error":
            return self._client_error(msg, auth)
        raise Refusal("badRequest", f"a CA does not accept {kind} messages")

    def _check_unused(self, tid: bytes) -> None:
        with self.store.lock:
            if self.store.in_use(tid):
                raise Refusal("transactionIdInUse", "this transactionID is already in use "
                              "(or was used recently): start with a fresh one",
                              ends_transaction=False)

    def _follow_up(self, msg: PKIMessageInfo, auth: Auth) -> TxRecord:
        """The open transaction a certConf/pollReq/error continues (the caller holds the lock)."""
        h = msg.header
        assert h.transaction_id is not None
        tx = self.store.transactions.get(h.transaction_id)
        if tx is None:
            raise Refusal("badRequest", "no open transaction has this transactionID (it is "
                          "finished, expired or was never started)", ends_transaction=False)
        if h.recip_nonce is None or not hmac.compare_digest(h.recip_nonce, tx.last_nonce):
            raise Refusal("badRecipientNonce", "recipNonce is not the senderNonce of the CA's "
                          "last answer in this transaction", ends_transaction=False)
        if auth.kind != tx.protection or (auth.kind == "signature"
                                          and auth.signer_serial != tx.signer_serial):
            raise Refusal("notAuthorized", "this message is not protected by the same secret or "
                          "certificate as the transaction's first message",
                          ends_transaction=False)
        return tx

    # ------------------------------------------------------------------ certificate requests

    def _certify(self, msg: PKIMessageInfo, auth: Auth, nonce: bytes) -> Answer:
        kind = msg.body_type
        reply = REPLY_OF[kind]
        h = msg.header
        tid = h.transaction_id
        assert tid is not None
        if kind == "kur" and auth.kind != "signature":
            raise Refusal("wrongIntegrity",
                          "a kur must be signed with the certificate it updates, not MAC-protected")
        if kind == "p10cr":
            assert isinstance(msg.body, bytes)
            plan = self._plan_p10(msg.body)
        else:
            assert isinstance(msg.body, tuple)
            reqs = tuple(r for r in msg.body if isinstance(r, CertRequestInfo))
            plan = self._plan_crmf(kind, reqs, auth)
        if self.config.reject:
            st = StatusInfo(REJECTION, frozenset(FAILURE_BIT[n] for n in self.config.reject),
                            ("request rejected by the test CA (--reject)",))
            with self.store.changing():
                self.store.finish(tid, self.clock())
            body = codec.cert_rep_body(reply, [CertResponse(plan.cert_req_id, st, None)])
            return Answer(reply, body, note="rejection (--reject " +
                          ",".join(self.config.reject) + ")")

        if self.config.unique_public_keys:
            self._check_unique_key(plan)
        public_key = plan.public_key
        if self.config.fault == "other-key":
            public_key = keys.public_key_of(keys.generate_key("ecdsa:p256"))
        now = self.clock()
        with self.store.lock:
            serial = x509.random_serial_number()
            while serial in self.store.issued:
                serial = x509.random_serial_number()
        cert = self.authority.issue(public_key=public_key, subject=plan.subject, san=plan.san,
                                    serial=serial, now=now, validity=self.config.validity)
        _check_issued_sans(cert)
        cert_der = certs.der_of(cert)
        self.store.write_cert(cert)

        implicit = self.config.implicit_confirm and h.implicit_confirm
        polls = self.config.poll
        done = implicit and polls == 0
        status = GRANTED_WITH_MODS if plan.ignored else ACCEPTED
        text = (f"the CA's policy replaced the requested {', '.join(plan.ignored)}",) \
            if plan.ignored else ()
        with self.store.changing():
            # Checked again under the lock: two requests with one transactionID may race.
            self._check_unused(tid)
            if serial in self.store.issued:
                raise Refusal("systemFailure", "serial number collision; retry")
            self.store.issued[serial] = CertRecord(
                serial=serial, subject=cert.subject.rfc4514_string(),
                status=CONFIRMED if done else PENDING, not_after=cert.not_valid_after_utc,
                issued_at=now, transaction=tid.hex(), key_sha256=_key_digest(public_key))
            if done:
                self.store.finish(tid, now)
            else:
                self.store.transactions[tid] = TxRecord(
                    transaction_id=tid, request=kind, reply=reply,
                    state=WAITING_POLL if polls else AWAITING_CONF,
                    cert_req_id=plan.cert_req_id, serial=serial, protection=auth.kind,
                    signer_serial=auth.signer_serial, last_nonce=nonce, polls_left=polls,
                    implicit_requested=h.implicit_confirm,
                    ca_pubs=reply == "ip" and auth.kind == "mac", status=status,
                    status_text=text, started=now)
        log.info("issued serial %x to '%s' for a %s key, valid until %s (%s, tx=%s)", serial,
                 cert.subject.rfc4514_string(), keys.key_type_of(public_key),
                 f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z", kind, tid.hex())
        if polls:
            waiting = StatusInfo(WAITING, frozenset(),
                                 (f"the test CA delivers after {polls} pollReq",))
            body = codec.cert_rep_body(reply, [CertResponse(plan.cert_req_id, waiting, None)])
            return Answer(reply, body, note=f"waiting, serial {serial:x}")
        body = self._delivery(reply, plan.cert_req_id, StatusInfo(status, frozenset(), text),
                              cert_der, ca_pubs=reply == "ip" and auth.kind == "mac")
        return Answer(reply, body, implicit_confirm=implicit,
                      extra_certs=(self.authority.cert_der,),
                      note=f"serial {serial:x}{', implicitly confirmed' if done else ''}")

    def _delivery(self, reply: str, req_id: int, status: StatusInfo, cert_der: bytes, *,
                  ca_pubs: bool) -> bytes:
        return codec.cert_rep_body(reply, [CertResponse(req_id, status, cert_der)],
                                   ca_pubs=(self.authority.cert_der,) if ca_pubs else ())

    def _plan_crmf(self, kind: str, reqs: Sequence[CertRequestInfo], auth: Auth) -> _Plan:
        if len(reqs) != 1:
            raise Refusal("badRequest", f"exactly one certificate request per {kind}, "
                          f"not {len(reqs)}")
        r = reqs[0]
        if r.cert_req_id != 0:
            raise Refusal("badRequest", f"certReqId must be 0, not {r.cert_req_id}")
        if r.public_key_der is None:
            raise Refusal("badCertTemplate", "the template has no public key (this CA does not "
                          "generate keys)")
        pub = _load_public_key(r.public_key_der)
        _check_pop(r, pub)
        old = self._old_certificate(r.old_cert_id, auth) if kind == "kur" else None

        if r.subject_der is not None and r.subject_der != codec.NULL_DN_DER:
            try:
                subject = derutil.name_from_der(r.subject_der)
            except ProtocolError as e:
                raise Refusal("badCertTemplate", f"subject refused: {e}") from e
        elif old is not None:
            subject = old.subject
        else:
            subject = x509.Name([])
        san: x509.ExtensionType | None = None
        ignored: tuple[str, ...] = ()
        if r.extensions_der is not None:
            try:
                raw = derutil.parse_extensions(r.extensions_der)
            except ProtocolError as e:
                raise Refusal("badDataFormat", f"template extensions: {e}") from e
            san, ignored = _template_extensions(raw)
        if san is None and old is not None:
            # A kur without SANs in its template keeps those of the certificate it updates.
            try:
                san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            except x509.ExtensionNotFound:
                san = None
        if len(subject) == 0 and san is None:
            raise Refusal("badCertTemplate", "the template has neither a subject nor "
                          "subjectAltNames")
        return _Plan(r.cert_req_id, pub, subject, san, ignored,
                     old.serial_number if old is not None else None)

    def _check_unique_key(self, plan: _Plan) -> None:
        """Refuse a public key this CA certified before (EJBCA's "enforce unique public
        keys", on by default there): for another subject, or one that was only ever in
        certificates never confirmed (a transaction that failed). The key of the
        subject's confirmed certificate may be certified again (a key update or cr with
        the same key)."""
        digest = _key_digest(plan.public_key)
        subject = plan.subject.rfc4514_string()
        with self.store.lock:
            same = [r for r in self.store.issued.values()
                    if r.key_sha256 == digest and r.serial != plan.old_serial]
            confirmed_here = plan.old_serial is not None or any(
                r.subject == subject and r.status == CONFIRMED for r in same)
            clash = next((r for r in same if r.subject != subject or not confirmed_here),
                         None)
        if clash is not None:
            raise Refusal("badCertTemplate", "the public key is already defined for the "
                          f"certificate serial {clash.serial:x} ('{clash.subject}'): this CA "
                          "enforces unique public keys")

    def _old_certificate(self, cid: OldCertId | None, auth: Auth) -> x509.Certificate:
        """The certificate a kur updates: named in oldCertID, confirmed, the request's signer."""
        if cid is None:
            raise Refusal("badRequest", "a kur needs the oldCertID control naming the "
                          "certificate to update")
        with self.store.lock:
            rec = self.store.issued.get(cid.serial)
            status = rec.status if rec else None
        if cid.issuer_der != self.authority.subject_der or status is None:
            raise Refusal("badCertId", f"oldCertID (serial {cid.serial:x}) names no certificate "
                          "this CA issued")
        if status == REVOKED:
            raise Refusal("certRevoked", f"certificate serial {cid.serial:x} is revoked: "
                          "request a new one with ir")
        if status != CONFIRMED:
            raise Refusal("badCertId", f"certificate serial {cid.serial:x} was never "
                          f"confirmed ({status})")
        if auth.signer is None or auth.signer_serial != cid.serial:
            signer = f"{auth.signer_serial:x}" if auth.signer_serial is not None else "none"
            raise Refusal("notAuthorized", f"a kur must be signed with the certificate it updates "
                          f"(oldCertID serial {cid.serial:x}, signed by serial {signer})")
        return auth.signer

    def _plan_p10(self, csr_der: bytes) -> _Plan:
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError as e:
            raise Refusal("badDataFormat", f"the PKCS#10 request does not load: {e}") from e
        try:
            pop_ok = csr.is_signature_valid
        except (UnsupportedAlgorithm, ValueError):
            pop_ok = False
        if not pop_ok:
            raise Refusal("badPOP", "the PKCS#10 request's signature does not verify")
        pub = csr.public_key()
        if not is_supported_key(pub):
            raise Refusal("badCertTemplate", "key type not accepted: use RSA (2048 bits or more),"
                          " ECDSA P-256/P-384 or Ed25519")
        assert isinstance(pub, keys.PublicKey)
        try:
            raw = [derutil.RawExtension(e.oid.dotted_string, e.critical, e.value.public_bytes())
                   for e in csr.extensions]
        except (ValueError, NotImplementedError) as e:
            raise Refusal("badCertTemplate", f"the request's extensions: {e}") from e
        san, ignored = _template_extensions(raw)
        if len(csr.subject) == 0 and san is None:
            raise Refusal("badCertTemplate", "the request has neither a subject nor "
                          "subjectAltNames")
        return _Plan(-1, pub, csr.subject, san, ignored)

    # ------------------------------------------------------------------ follow-ups

    def _cert_conf(self, msg: PKIMessageInfo, auth: Auth, nonce: bytes) -> Answer:
        assert isinstance(msg.body, tuple)
        entries = [e for e in msg.body if isinstance(e, CertStatusInfo)]
        with self.store.changing():
            tx = self._follow_up(msg, auth)
            if tx.state != AWAITING_CONF:
                raise Refusal("badRequest", "the certificate has not been delivered yet: "
                              "send pollReq")
            if len(entries) != 1:
                raise Refusal("badRequest", f"certConf must confirm exactly one certificate, "
                              f"not {len(entries)}")
            e = entries[0]
            if e.cert_req_id != tx.cert_req_id:
                raise Refusal("badRequest", f"certConf for certReqId {e.cert_req_id}, but this "
                              f"transaction's is {tx.cert_req_id}")
            cert = self.store.load_cert(tx.serial)
            _check_cert_hash(e, cert, msg.header.pvno)
            if e.status is not None and e.status.status not in (ACCEPTED, GRANTED_WITH_MODS,
                                                                 REJECTION):
                raise Refusal("badRequest", f"certConf status {e.status.status_name} "
                              "is meaningless")
            rejected = e.status is not None and e.status.status == REJECTION
            rec = self.store.issued[tx.serial]
            rec.status = REJECTED if rejected else CONFIRMED
            if rejected:
                assert e.status is not None
                why = " / ".join(e.status.text) or ", ".join(e.status.fail_names) or "no reason"
                rec.reason = f"refused by the client: {why}"[:_MAX_TEXT]
            self.store.finish(tx.transaction_id, self.clock())
        if rejected:
            log.info("client refused serial %x (tx=%s): %s", tx.serial,
                     tx.transaction_id.hex(), rec.reason)
        return Answer("pkiconf", codec.pkiconf_body(),
                      note=f"serial {tx.serial:x} {'rejected' if rejected else 'confirmed'}")

    def _poll(self, msg: PKIMessageInfo, auth: Auth, nonce: bytes) -> Answer:
        assert isinstance(msg.body, tuple)
        with self.store.changing():
            tx = self._follow_up(msg, auth)
            if tx.state != WAITING_POLL:
                raise Refusal("badRequest", "the certificate was already delivered: "
                              "send certConf")
            if tx.cert_req_id not in msg.body:
                raise Refusal("badRequest", f"pollReq does not name certReqId {tx.cert_req_id}")
            cert_der = certs.der_of(self.store.load_cert(tx.serial))
            tx.polls_left -= 1
            tx.last_nonce = nonce
            if tx.polls_left > 0:
                entry = PollRepEntry(tx.cert_req_id, self.config.check_after,
                                     (f"{tx.polls_left} more poll(s) to go",))
                return Answer("pollRep", codec.poll_rep_body([entry]),
                              note=f"{tx.polls_left} to go")
            implicit = self.config.implicit_confirm and tx.implicit_requested
            if implicit:
                self.store.issued[tx.serial].status = CONFIRMED
                self.store.finish(tx.transaction_id, self.clock())
            else:
                tx.state = AWAITING_CONF
        body = self._delivery(tx.reply, tx.cert_req_id,
                              StatusInfo(tx.status, frozenset(), tx.status_text), cert_der,
                              ca_pubs=tx.ca_pubs)
        return Answer(tx.reply, body, implicit_confirm=implicit,
                      extra_certs=(self.authority.cert_der,),
                      note=f"serial {tx.serial:x} delivered")

    def _client_error(self, msg: PKIMessageInfo, auth: Auth) -> Answer:
        """The client gives up on a transaction: forget its certificate, acknowledge."""
        with self.store.changing():
            tx = self._follow_up(msg, auth)
            rec = self.store.issued.get(tx.serial)
            if rec is not None and rec.status == PENDING:
                rec.status = REJECTED
                rec.reason = "the client ended the transaction with an error message"
            self.store.finish(tx.transaction_id, self.clock())
        return Answer("pkiconf", codec.pkiconf_body(), note="transaction ended by the client")

    def _abort(self, msg: PKIMessageInfo, auth: Auth, reason: str) -> None:
        """End the transaction of a refused follow-up (only when it really belongs to it)."""
        tid = msg.header.transaction_id
        if tid is None:
            return
        with self.store.changing():
            tx = self.store.transactions.get(tid)
            if tx is None or tx.protection != auth.kind or tx.signer_serial != auth.signer_serial \
                    or msg.header.recip_nonce != tx.last_nonce:
                return
            rec = self.store.issued.get(tx.serial)
            if rec is not None and rec.status == PENDING:
                rec.status = REJECTED
                rec.reason = f"transaction aborted: {reason}"[:_MAX_TEXT]
            self.store.finish(tid, self.clock())

    def _expire_transactions(self) -> None:
        now = self.clock()
        limit = self.config.transaction_timeout
        with self.store.lock:
            stale = [tx for tx in self.store.transactions.values() if now - tx.started > limit]
            if not stale:
                return
            with self.store.changing():
                for tx in stale:
                    rec = self.store.issued.get(tx.serial)
                    if rec is not None and rec.status == PENDING:
                        rec.status = REJECTED
                        rec.reason = f"not confirmed within {limit}"
                    self.store.finish(tx.transaction_id, now)
        for tx in stale:
            log.info("transaction %s expired; serial %x dropped as unconfirmed",
                     tx.transaction_id.hex(), tx.serial)

    # ------------------------------------------------------------------ genm, rr

    def _genm(self, msg: PKIMessageInfo) -> Answer:
        assert isinstance(msg.body, tuple) and msg.header.transaction_id is not None
        items = [i for i in msg.body if isinstance(i, InfoValue)]
        if not items:
            raise Refusal("badRequest", "genm without any InfoTypeAndValue")
        out: list[InfoValue] = []
        for item in items:
            if item.oid == oids.IT_CA_CERTS:
                sent = [self.authority.cert_der]
                if self.config.fault == "foreign-ca-cert":
                    sent.append(certs.der_of(self._stranger().cert))
                out.append(InfoValue(oids.IT_CA_CERTS, codec.cert_seq_der(sent)))
            elif item.oid == oids.IT_ROOT_CA_CERT:
                # RFC 9483 4.3.2: no value means the root has no update (for a client
                # that names the new root as its own, there is none either).
                out.append(InfoValue(oids.IT_ROOT_CA_KEY_UPDATE, self._root_update(item)))
            elif item.oid == oids.IT_CURRENT_CRL:
                out.append(InfoValue(oids.IT_CURRENT_CRL, self._current_crl()))
            elif item.oid == oids.IT_CRL_STATUS_LIST:
                out.append(InfoValue(oids.IT_CRLS, self._crls_for(item.value_der)))
            elif item.oid == oids.IT_CERT_REQ_TEMPLATE:
                if self.config.template_unknown:
                    raise Refusal("badRequest", "genm certReqTemplate is not supported")
                out.append(InfoValue(oids.IT_CERT_REQ_TEMPLATE, self._template()))
            else:
                # RFC 4210 5.3.19: an infoType we cannot answer comes back without a value.
                out.append(InfoValue(item.oid, None))
        with self.store.changing():
            self.store.finish(msg.header.transaction_id, self.clock())
        return Answer("genp", codec.genm_body(out, kind="genp"),
                      note=", ".join(i.oid for i in items))

    def _template(self) -> bytes | None:
        """The certificate request template (RFC 9483 4.3.3), or None (no template)."""
        cfg = self.config
        if not cfg.template_key_types and cfg.template_subject is None:
            return None
        controls: list[tuple[str, bytes]] = []
        for t in cfg.template_key_types:
            if t.startswith("rsa:"):
                controls.append((oids.REG_CTRL_RSA_KEY_LEN, codec.rsa_key_len_der(int(t[4:]))))
                continue
            if t == "ed25519":
                alg = AlgorithmId(oids.ED25519)
            else:
                curve = {"ecdsa:p256": ec.EllipticCurveOID.SECP256R1,
                         "ecdsa:p384": ec.EllipticCurveOID.SECP384R1}.get(t)
                alg = AlgorithmId(oids.EC_PUBLIC_KEY, None if curve is None else
                                  codec.oid_der(curve.dotted_string))
            controls.append((oids.REG_CTRL_ALG_ID, codec.algorithm_der(alg)))
        subject = (parse_dn(cfg.template_subject).public_bytes()
                   if cfg.template_subject is not None else None)
        return codec.cert_req_template_value(subject, controls)

    def _root_update(self, item: InfoValue) -> bytes | None:
        a = self.authority
        if a.previous is None or a.new_with_old is None:
            return None
        if item.value_der is not None:
            try:
                theirs = certs.load_certificate(item.value_der)
            except SwcmpError as e:
                raise Refusal("badDataFormat", f"rootCaCert does not parse: {e}") from e
            if theirs != a.previous.cert:
                return None
        link = a.new_with_old
        if self.config.fault == "bad-new-with-old":
            link = self._stranger().cross_sign(a.new_with_old)
        return codec.root_ca_key_update_der(RootCaKeyUpdate(
            a.cert_der, certs.der_of(link),
            certs.der_of(a.old_with_new) if a.old_with_new is not None else None))

    def _crls_for(self, value_der: bytes | None) -> bytes | None:
        """The id-it-crls value answering a crlStatusList (RFC 9483 4.3.4): this CA's CRL
        when it is asked for (by issuer name, or by a distribution point: this CA has one
        CRL) and has changed since the thisUpdate named (a revocation since); no value
        otherwise."""
        try:
            asked = codec.parse_crl_status_list(value_der)
        except ProtocolError as e:
            raise Refusal("badDataFormat", f"crlStatusList: {e}") from e
        with self.store.lock:
            changed = max((r.revoked_at for r in self.store.issued.values()
                           if r.status == REVOKED and r.revoked_at is not None), default=None)
        for issuer, this_update in asked:
            if issuer is not None and issuer != self.authority.subject_der:
                continue
            # a CRL's thisUpdate is its making time less BACKDATE: one made after the
            # last revocation is as new as ours
            if this_update is not None and self.config.fault != "foreign-crl" and (
                    changed is None or this_update >= (changed - BACKDATE).replace(
                        microsecond=0)):
                continue  # nothing revoked since the CRL the client holds was made
            return codec.cert_seq_der([self._current_crl()])
        return None

    def _current_crl(self) -> bytes:
        """The CRL of every certificate this CA revoked, signed by its current key."""
        with self.store.lock:
            revoked = [(r.serial, r.revoked_at or r.issued_at, r.reason_code)
                       for r in self.store.issued.values() if r.status == REVOKED]
            self._crl_number += 1
            number = self._crl_number
        signer = self._stranger() if self.config.fault == "foreign-crl" else self.authority
        crl = signer.crl(revoked, now=self.clock(), number=number)
        return crl.public_bytes(serialization.Encoding.DER)

    def _stranger(self) -> Authority:
        """A CA with this CA's name and another key: what a forger would sign with."""
        if self._forger is None:
            self._forger = Authority.impostor(self.authority, now=self.clock())
        return self._forger

    def _revoke(self, msg: PKIMessageInfo, auth: Auth) -> Answer:
        assert isinstance(msg.body, tuple) and msg.header.transaction_id is not None
        entries = [d for d in msg.body if isinstance(d, RevDetailsInfo)]
        if len(entries) != 1:
            raise Refusal("badRequest", f"exactly one certificate per rr, not {len(entries)}")
        d = entries[0]
        with self.store.changing():
            rec = self.store.issued.get(d.serial) if d.serial is not None else None
            if rec is None or d.issuer_der != self.authority.subject_der:
                raise Refusal("badCertId", "the rr names no certificate this CA issued")
            if rec.status == REVOKED:
                raise Refusal("certRevoked", f"certificate serial {rec.serial:x} is already "
                              "revoked")
            if rec.status != CONFIRMED:
                raise Refusal("badCertId", f"certificate serial {rec.serial:x} was never "
                              f"confirmed ({rec.status})")
            if auth.kind == "signature" and auth.signer_serial != rec.serial:
                raise Refusal("notAuthorized", "an rr must be signed with the certificate "
                              "it revokes (or protected with the shared secret)")
            self._check_unused(msg.header.transaction_id)
            rec.status = REVOKED
            rec.reason = f"rr, reason code {d.reason}" if d.reason is not None else "rr"
            rec.revoked_at, rec.reason_code = self.clock(), d.reason
            self.store.finish(msg.header.transaction_id, self.clock())
        log.info("revoked serial %x ('%s')", rec.serial, rec.subject)
        return Answer("rp", codec.rp_body([StatusInfo(ACCEPTED)]), note=f"serial {rec.serial:x}")

    # ------------------------------------------------------------------ answers

    def _error(self, r: Refusal) -> Answer:
        st = StatusInfo(REJECTION, frozenset({FAILURE_BIT[r.fail]}), (r.text[:_MAX_TEXT],))
        return Answer("error", codec.error_body(st), note=f"{r.fail}: {r.text}")

    def _reply_protection(self, auth: Auth | None) -> Protection:
        if auth is not None and auth.kind == "mac":
            ref, secret = self.config.mac_ref, self.config.mac_secret
            assert ref is not None and secret is not None
            return MacProtection(reference=ref, secret=secret, mac_alg=auth.mac_alg,
                                 iterations=auth.iterations)
        prev = self.authority.previous
        if (auth is not None and auth.signer is not None and prev is not None
                and prev.signed(auth.signer) and not self.authority.signed(auth.signer)):
            # A client with a certificate of the old root may not know the new one yet
            # (RFC 4210 4.4): answer it with the old key, which it trusts.
            return SignatureProtection(key=prev.key, cert=prev.cert,
                                       send_cert=self.config.signer_in_extra_certs)
        return self._signer

    def _encode(self, h: Header, auth: Auth | None, answer: Answer, nonce: bytes) -> bytes:
        fault = None if answer.body_type == "error" else self.config.fault
        prot = self._reply_protection(auth).start()
        recip_nonce = os.urandom(ID_LENGTH) if fault == "wrong-nonce" else h.sender_nonce
        unprotected = fault == "unprotected"
        fields = codec.HeaderFields(
            sender_der=self.authority.subject_der,
            recipient_der=h.sender_der or codec.NULL_DN_DER,
            transaction_id=h.transaction_id or os.urandom(ID_LENGTH),
            sender_nonce=nonce,
            recip_nonce=recip_nonce,
            message_time=self.clock().replace(microsecond=0),
            protection_alg=None if unprotected else prot.alg,
            sender_kid=prot.sender_kid,
            implicit_confirm=answer.implicit_confirm,
            pvno=h.pvno if h.pvno in (2, 3) else 2,
        )
        header_der = codec.encode_header(fields)
        protection = None
        if not unprotected:
            protection = prot.protect(codec.protected_part(header_der, answer.body_der))
            if fault == "bad-protection":
                protection = protection[:-1] + bytes([protection[-1] ^ 0x01])
        extra = tuple(dict.fromkeys((*prot.extra_certs, *answer.extra_certs)))
        if not self.config.signer_in_extra_certs:  # the root stays out of every answer
            extra = tuple(c for c in extra if c != self.authority.cert_der)
        return codec.assemble(header_der, answer.body_der, protection, extra)

    def _undecodable(self, data: bytes, err: ProtocolError, nonce: bytes) -> bytes:
        peek = derutil.peek_header(data)
        body_name = codec.BODY_TAGS.get(peek.body_tag) if peek.body_tag is not None else None
        if peek.pvno is not None and peek.pvno not in (2, 3):
            r = Refusal("unsupportedVersion", f"pvno {peek.pvno} is not supported: use 2 "
                        "(3 for CMP v3 features)")
        elif body_name is not None and body_name not in (*FIRST_MESSAGES, *FOLLOW_UPS):
            r = Refusal("badRequest", f"a CA does not accept {body_name} messages")
        else:
            r = Refusal("badDataFormat", f"the request does not decode: {str(err)[:_MAX_TEXT]}")
        header = Header(pvno=2, sender_der=None, recipient_der=None,
                        transaction_id=peek.transaction_id, sender_nonce=peek.sender_nonce,
                        recip_nonce=None)
        answer = self._error(r)
        try:
            reply = self._encode(header, None, answer, nonce)
        except ProtocolError:
            # The echoed IDs themselves were unusable: answer without them.
            header = Header(pvno=2, sender_der=None, recipient_der=None, transaction_id=None,
                            sender_nonce=None, recip_nonce=None)
            reply = self._encode(header, None, answer, nonce)
        log.info("undecodable request (%d bytes) -> error %s", len(data), answer.note)
        return reply


# ---------------------------------------------------------------------- pure checks


def _hex(b: bytes | None) -> str:
    return b.hex() if b else "-"


def _load_public_key(spki_der: bytes) -> keys.PublicKey:
    try:
        pub = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise Refusal("badCertTemplate", f"the template's public key does not load: {e}") from e
    if not is_supported_key(pub):
        raise Refusal("badCertTemplate", "key type not accepted: use RSA (2048 bits or more), "
                      "ECDSA P-256/P-384 or Ed25519")
    assert isinstance(pub, keys.PublicKey)
    return pub


def _check_pop(r: CertRequestInfo, pub: keys.PublicKey) -> None:
    """Signature proof of possession over the exact CertRequest bytes, with the new key."""
    if r.popo_kind != "signature":
        raise Refusal("badPOP", f"proof of possession by {r.popo_kind} is not accepted: sign "
                      "the certificate request with the key to be certified")
    if r.popo_has_input:
        raise Refusal("badPOP", "poposkInput must be absent when the template holds the key")
    if r.popo_alg is None or r.popo_signature is None:
        raise Refusal("badPOP", "the POP signature is missing")
    try:
        keys.verify(pub, r.popo_alg,
                    r.popo_signature, r.request_der)
    except ProtectionError as e:
        raise Refusal("badPOP", "the POP signature does not verify with the requested key "
                      f"({e})") from e


def _template_extensions(raw: Sequence[derutil.RawExtension]
                         ) -> tuple[x509.ExtensionType | None, tuple[str, ...]]:
    """The subjectAltName to copy and the names of extensions replaced by our policy."""
    san: x509.ExtensionType | None = None
    ignored: list[str] = []
    for ext in raw:
        if ext.oid == _SAN_OID:
            if san is not None:
                raise Refusal("badCertTemplate", "subjectAltName requested twice")
            # Copied verbatim; _check_issued_sans parses it once it is in the certificate.
            san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ext.value)
        elif ext.oid == _BC_OID:
            try:
                wants_ca = derutil.basic_constraints_ca(ext.value)
            except ProtocolError as e:
                raise Refusal("badCertTemplate", f"malformed basicConstraints: {e}") from e
            if wants_ca:
                raise Refusal("badCertTemplate", "the test CA issues end-entity certificates "
                              "only (basicConstraints cA requested)")
        elif ext.oid in _POLICY_EXTENSIONS:
            ignored.append(_POLICY_EXTENSIONS[ext.oid])
        elif ext.critical:
            raise Refusal("unacceptedExtension", f"critical extension {ext.oid} is not "
                          "supported")
        else:
            ignored.append(ext.oid)
    return san, tuple(ignored)


def _check_issued_sans(cert: x509.Certificate) -> None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return
    except ValueError as e:
        raise Refusal("badCertTemplate", f"the requested subjectAltName does not parse: {e}"
                      ) from e
    names = list(ext.value)
    if not names:
        raise Refusal("badCertTemplate", "empty subjectAltName")
    for gn in names:
        if not isinstance(gn, _SAN_TYPES):
            raise Refusal("badCertTemplate", f"subjectAltName of type {type(gn).__name__} is "
                          "not accepted (DNS, IP, e-mail and URI are)")


def _check_cert_hash(e: CertStatusInfo, cert: x509.Certificate, pvno: int) -> None:
    """certHash over the certificate's DER, with the hash of its signature algorithm.

    For EdDSA-signed certificates that hash is not defined: the client names
    it in hashAlg (a CMP v3 field, so pvno 3), SHA-512 per RFC 9481.
    """
    digest: hashes.HashAlgorithm | None
    if e.hash_alg is not None:
        if pvno != 3:
            raise Refusal("unsupportedVersion", "certConf with hashAlg must have pvno 3")
        try:
            digest = keys.hash_by_oid(e.hash_alg.oid)
        except ProtectionError as err:
            raise Refusal("badAlg", f"certConf hashAlg: {err}") from err
        if isinstance(digest, hashes.SHA1):
            raise Refusal("badAlg", "certConf hashAlg SHA-1 is not accepted")
    else:
        digest = keys.hash_for_cert_signature(cert.signature_algorithm_oid.dotted_string)
        if digest is None:
            raise Refusal("badAlg", "the certificate is EdDSA-signed: certConf must name its "
                          "hashAlg (SHA-512) with pvno 3")
    value = hashlib.new(digest.name, certs.der_of(cert)).digest()
    if not hmac.compare_digest(value, e.cert_hash):
        raise Refusal("badCertId", "certHash does not match the certificate issued in this "
                      "transaction")


def _key_digest(public_key: keys.PublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo, hex: how the unique-key rule compares keys."""
    return hashlib.sha256(keys.spki_der(public_key)).hexdigest()
