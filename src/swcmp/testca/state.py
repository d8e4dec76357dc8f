"""The CA's memory in its directory: issued certificates and open transactions.

``state.json`` is rewritten atomically after every change, before the answer
that depends on it goes out, so a CA restarted on the same directory (even
after kill -9) continues every transaction where it stopped: the nonce it
last sent, the polls left, the certificate waiting for certConf. Issued
certificates are kept as PEM files under ``issued/``, named by serial.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from swcmp.cmp import certs
from swcmp.errors import CertificateError, StorageError
from swcmp.fsutil import PUBLIC_MODE, atomic_write, ensure_dir

STATE_FILE = "state.json"
ISSUED_DIR = "issued"
STATE_VERSION = 1
#: How many finished transactionIDs are remembered to refuse their reuse (a replayed request).
MAX_FINISHED = 4096

#: Issued, not yet confirmed (certConf outstanding, or held back for polling).
PENDING = "pending"
#: Confirmed by certConf or implicitly: the holder may sign kur, cr and rr with it.
CONFIRMED = "confirmed"
#: Refused by the client in certConf or never confirmed: forgotten, never usable.
REJECTED = "rejected"
#: Revoked by rr.
REVOKED = "revoked"
CERT_STATUSES = (PENDING, CONFIRMED, REJECTED, REVOKED)

#: Transaction states: answered 'waiting', delivers on a later pollReq ...
WAITING_POLL = "waiting"
#: ... or the certificate went out and certConf is due.
AWAITING_CONF = "confirm"


@dataclass
class CertRecord:
    """One issued certificate."""

    serial: int
    subject: str
    status: str
    not_after: datetime
    issued_at: datetime
    transaction: str
    reason: str = ""
    #: for a revoked certificate: when, and the CRL reason code the rr gave
    revoked_at: datetime | None = None
    reason_code: int | None = None
    #: SHA-256 of the certified SubjectPublicKeyInfo (the unique-public-key rule)
    key_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: the whole state is written after every change.
        return {"serial": f"{self.serial:x}", "subject": self.subject, "status": self.status,
                "not_after": self.not_after.isoformat(), "issued_at": self.issued_at.isoformat(),
                "transaction": self.transaction, "reason": self.reason,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "reason_code": self.reason_code, "key_sha256": self.key_sha256}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CertRecord:
        if d["status"] not in CERT_STATUSES:
            raise ValueError(f"unknown certificate status {d['status']!r}")
        return cls(serial=int(d["serial"], 16), subject=str(d["subject"]),
                   status=str(d["status"]), not_after=datetime.fromisoformat(d["not_after"]),
                   issued_at=datetime.fromisoformat(d["issued_at"]),
                   transaction=str(d["transaction"]), reason=str(d.get("reason", "")),
                   revoked_at=(datetime.fromisoformat(d["revoked_at"])
                               if d.get("revoked_at") else None),
                   reason_code=(int(d["reason_code"]) if isinstance(d.get("reason_code"), int)
                                else None),
                   key_sha256=str(d.get("key_sha256", "")))


@dataclass
class TxRecord:
    """One open certificate transaction (ir, cr, kur or p10cr not yet finished).

    Attributes:
        transaction_id: the client's transactionID.
        request: the request body type; ``reply`` the answer's (ip, cp, kup).
        state: :data:`WAITING_POLL` or :data:`AWAITING_CONF`.
        cert_req_id: the certReqId the client used.
        serial: the certificate this transaction issued.
        protection: "mac" or "signature": every follow-up must be protected the same way
            (and, for signatures, by the same certificate, ``signer_serial``).
        last_nonce: the senderNonce of our last answer; the next recipNonce must equal it.
        polls_left: pollReq rounds still to answer with pollRep.
        implicit_requested: the request asked for implicitConfirm.
        ca_pubs: put the CA certificate in caPubs when delivering (ip under MAC).
        status: the PKIStatus to deliver with (accepted or grantedWithMods) and its text.
        started: when the transaction began (for expiry).
    """

    transaction_id: bytes
    request: str
    reply: str
    state: str
    cert_req_id: int
    serial: int
    protection: str
    signer_serial: int | None
    last_nonce: bytes
    polls_left: int
    implicit_requested: bool
    ca_pubs: bool
    status: int
    status_text: tuple[str, ...]
    started: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request, "reply": self.reply, "state": self.state,
            "cert_req_id": self.cert_req_id, "serial": f"{self.serial:x}",
            "protection": self.protection,
            "signer_serial": None if self.signer_serial is None else f"{self.signer_serial:x}",
            "last_nonce": self.last_nonce.hex(), "polls_left": self.polls_left,
            "implicit_requested": self.implicit_requested, "ca_pubs": self.ca_pubs,
            "status": self.status, "status_text": list(self.status_text),
            "started": self.started.isoformat(),
        }

    @classmethod
    def from_json(cls, tid: str, d: dict[str, Any]) -> TxRecord:
        if d["state"] not in (WAITING_POLL, AWAITING_CONF):
            raise ValueError(f"unknown transaction state {d['state']!r}")
        signer = d.get("signer_serial")
        return cls(
            transaction_id=bytes.fromhex(tid), request=str(d["request"]), reply=str(d["reply"]),
            state=str(d["state"]), cert_req_id=int(d["cert_req_id"]),
            serial=int(d["serial"], 16), protection=str(d["protection"]),
            signer_serial=None if signer is None else int(signer, 16),
            last_nonce=bytes.fromhex(d["last_nonce"]), polls_left=int(d["polls_left"]),
            implicit_requested=bool(d["implicit_requested"]), ca_pubs=bool(d["ca_pubs"]),
            status=int(d["status"]), status_text=tuple(str(t) for t in d["status_text"]),
            started=datetime.fromisoformat(d["started"]),
        )


class StateStore:
    """Issued certificates and open transactions, persisted in a directory.

    All access goes through :meth:`changing` (or holds :attr:`lock`): the HTTP
    server answers requests on several threads at once.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self.issued_dir = directory / ISSUED_DIR
        self.lock = threading.RLock()
        self.issued: dict[int, CertRecord] = {}
        self.transactions: dict[bytes, TxRecord] = {}
        #: transactionIDs of finished transactions, oldest first, with when they ended.
        self.finished: dict[bytes, datetime] = {}
        #: Encoded lines of issued records, with the (status, reason) they were made from.
        self._lines: dict[int, tuple[tuple[str, str], str]] = {}
        self._finished_lines: dict[bytes, str] = {}

    def finish(self, transaction_id: bytes, when: datetime) -> None:
        """Remember a finished transaction's ID (bounded: the oldest are forgotten)."""
        self.transactions.pop(transaction_id, None)
        self.finished[transaction_id] = when
        while len(self.finished) > MAX_FINISHED:
            oldest = next(iter(self.finished))
            del self.finished[oldest]
            self._finished_lines.pop(oldest, None)

    def in_use(self, transaction_id: bytes) -> bool:
        """Whether a transactionID belongs to an open or a recently finished transaction."""
        return transaction_id in self.transactions or transaction_id in self.finished

    @classmethod
    def open(cls, directory: Path) -> StateStore:
        """Load the state of ``directory`` (empty on the first run).

        Raises:
            StorageError: the state file is unreadable or not ours.
        """
        store = cls(directory)
        ensure_dir(store.issued_dir)
        if not store.path.exists():
            return store
        try:
            data = json.loads(store.path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"state version {data.get('version')!r}, "
                                 f"expected {STATE_VERSION}")
            store.issued = {r.serial: r for r in
                            (CertRecord.from_json(d) for d in data["issued"].values())}
            store.transactions = {bytes.fromhex(tid): TxRecord.from_json(tid, d)
                                  for tid, d in data["transactions"].items()}
            store.finished = {bytes.fromhex(tid): datetime.fromisoformat(t)
                              for tid, t in data.get("finished", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise StorageError(f"cannot load the test CA state {store.path}: {e}").with_hint(
                "the file is damaged or from another version: move it away to start with "
                "an empty state (the CA key and certificate stay)") from e
        return store

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the lock for a read-modify-write and save when the block ends normally.

        Callers check everything before they modify anything, so that an
        exception leaves the in-memory state as it was.
        """
        with self.lock:
            yield
            self.save()

    def save(self) -> None:
        """Write ``state.json`` atomically (the caller holds the lock).

        The file has one entry per line. The state is rewritten after every
        change, so the lines of issued certificates and finished transactions,
        which rarely or never change, are encoded once and reused.
        """
        issued = []
        for serial, rec in self.issued.items():
            cached = self._lines.get(serial)
            if cached is None or cached[0] != (rec.status, rec.reason):
                line = f' "{serial:x}": {json.dumps(rec.to_json())}'
                cached = self._lines[serial] = ((rec.status, rec.reason), line)
            issued.append(cached[1])
        finished = []
        for tid, when in self.finished.items():
            done = self._finished_lines.get(tid)
            if done is None:
                done = self._finished_lines[tid] = f' "{tid.hex()}": "{when.isoformat()}"'
            finished.append(done)
        transactions = [f" {json.dumps(t.hex())}: {json.dumps(tx.to_json())}"
                        for t, tx in self.transactions.items()]
        revoked = sorted(f"{s:x}" for s, r in self.issued.items() if r.status == REVOKED)
        text = "".join((
            f'{{\n"version": {STATE_VERSION},\n',
            '"issued": {\n', ",\n".join(issued), "\n},\n",
            # Derived from "issued", kept for people reading the file.
            f'"revoked": {json.dumps(revoked)},\n',
            '"transactions": {\n', ",\n".join(transactions), "\n},\n",
            '"finished": {\n', ",\n".join(finished), "\n}\n}\n",
        ))
        atomic_write(self.path, text.encode("utf-8"), mode=PUBLIC_MODE)

    def cert_path(self, serial: int) -> Path:
        return self.issued_dir / f"{serial:x}.pem"

    def write_cert(self, cert: x509.Certificate) -> None:
        """Keep an issued certificate (before it is recorded, so a record always has its file)."""
        atomic_write(self.cert_path(cert.serial_number), certs.pem_of(cert), mode=PUBLIC_MODE)

    def load_cert(self, serial: int) -> x509.Certificate:
        """An issued certificate by serial.

        Raises:
            StorageError: its file is missing or unreadable.
        """
        path = self.cert_path(serial)
        try:
            return certs.load_certificate(path.read_bytes())
        except (OSError, CertificateError) as e:
            raise StorageError(f"cannot read issued certificate {path}: {e}") from e
