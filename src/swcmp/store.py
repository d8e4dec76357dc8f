"""The credential store: the only writer of a session's key and certificate files.

A session's live pair is ``private/<key>.key`` and ``x509/<session>.crt`` under
the swanctl directory, its CA certificates ``x509ca/<session>-caN.crt``, the roots
of a root CA rollover ``x509ca/<session>-root-ID.crt`` and its issuer's CRL
``x509crl/<session>.crl`` (see :mod:`swcmp.paths`). A renewal stages the new pair
in the session's state directory beside a journal (:class:`Journal`), replaces the live pair in an
order that never leaves a certificate without its key on disk
(:func:`write_pair`), keeps the replaced pair in an archive, and puts it back if
the new one cannot be used (:func:`restore_pair`). Private keys are written 0600.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from swcmp import fsutil
from swcmp.cmp import certs, keys
from swcmp.deploy import CredentialPair, KeyFile
from swcmp.errors import CertificateError, ConfigError, RenewalError, StorageError, SwcmpError
from swcmp.names import validate_session_name
from swcmp.paths import Paths
from swcmp.session import Session

log = logging.getLogger(__name__)

#: Previous pairs kept for manual rollback.
ARCHIVE_KEEP = 3


# --------------------------------------------------------------------------- reading


def need_setting(value: object, what: str, session: Session, option: str) -> None:
    """ConfigError naming the ``swcmp session set`` option when a setting is missing."""
    if value is None or value == "" or value == ():
        raise ConfigError(f"session {session.name} has no {what}").with_hint(
            f"swcmp session set {session.name} {option} ...")


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise StorageError(f"cannot read the {what} {path}: {e.strerror}").with_hint(
            "check that the file exists and is readable") from e


def load_trust(session: Session) -> list[x509.Certificate]:
    """The session's trust anchors (every certificate in every --trust file)."""
    out: list[x509.Certificate] = []
    for p in session.trust:
        out.extend(certs.load_certificates(read_file(p, "trust anchor file")))
    return out


def load_cert_files(files: Sequence[Path], what: str) -> list[x509.Certificate]:
    """Every certificate in every file of ``files``."""
    out: list[x509.Certificate] = []
    for p in files:
        out.extend(certs.load_certificates(read_file(p, what)))
    return out


def session_ca_certs(session: Session, paths: Paths) -> list[x509.Certificate]:
    """The CA certificates stored for the session (``x509ca/<session>-caN.crt``)."""
    out: list[x509.Certificate] = []
    for p in paths.ca_cert_files(session.name):
        try:
            out.extend(certs.load_certificates(read_file(p, "CA certificate")))
        except SwcmpError as e:  # a damaged CA file must not stop a renewal
            log.warning("%s: ignoring %s: %s", session.name, p, e)
    return out


def ca_certs_pem(session: Session, paths: Paths) -> tuple[bytes, ...]:
    """What goes into charon with the pair: the CA certificates and rollover roots."""
    return tuple(read_file(p, "CA certificate")
                 for p in (*paths.ca_cert_files(session.name),
                           *root_cert_files(paths, session.name)))


def check_staged(session: Session, cert: x509.Certificate, ca_certs: Sequence[x509.Certificate],
                 *, now: datetime, where: Path) -> None:
    """The staging area checked again before it becomes live: what the client verified is
    on disk now, and only a certificate the session's CA issued may be committed.

    Raises:
        RenewalError: it does not chain to the trust anchors (the live pair is untouched).
    """
    anchors = load_trust(session)
    if not anchors:
        return
    try:
        certs.build_chain(cert, anchors=anchors, untrusted=ca_certs, now=now)
    except CertificateError as e:
        raise RenewalError(f"the staged certificate fails verification: {e}").with_hint(
            f"inspect {where}; the live pair is untouched. Remove journal.json there "
            "to abandon this renewal") from e


# --------------------------------------------------------------------------- enrolment


def write_cert(paths: Paths, session: Session, cert: x509.Certificate) -> Path:
    """Make ``cert`` the session's live certificate (an enrolment; renewals use
    :func:`write_pair`)."""
    fsutil.ensure_dir(paths.x509_dir)
    path = paths.cert_file(session.name)
    fsutil.atomic_write(path, certs.pem_of(cert), mode=0o644)
    return path


def write_ca_certs(session: Session, paths: Paths, ca_certs: Sequence[x509.Certificate], *,
                   keep: Collection[Path] = ()) -> tuple[Path, ...]:
    """Store CA certificates as ``x509ca/<session>-caN.crt``; drop stale ones.

    A file in ``keep`` (a trust anchor the session names: an IR may have made one) is
    never rewritten or removed; its certificate is not written again and the others
    take the free numbers. An empty ``ca_certs`` changes nothing.
    """
    existing = paths.ca_cert_files(session.name)
    if not ca_certs:
        return existing
    kept = {p.resolve() for p in keep}
    kept_files = [p for p in existing if p.resolve() in kept]
    kept_certs: set[x509.Certificate] = set()
    for p in kept_files:
        try:
            kept_certs.update(certs.load_certificates(read_file(p, "trust anchor file")))
        except SwcmpError as e:
            log.warning("%s: trust anchor file %s unreadable: %s", session.name, p, e)
    unique = [c for c in dict.fromkeys(ca_certs) if c not in kept_certs]
    fsutil.ensure_dir(paths.x509ca_dir)
    written: list[Path] = []
    n = 1
    for c in unique:
        while paths.ca_cert_file(session.name, n).resolve() in kept:
            n += 1
        p = paths.ca_cert_file(session.name, n)
        fsutil.atomic_write(p, certs.pem_of(c), mode=0o644)
        written.append(p)
        n += 1
    for p in existing:
        if p not in written and p.resolve() not in kept:
            fsutil.remove_file(p, missing_ok=True)
    return tuple(p for p in paths.ca_cert_files(session.name) if p in written or p in kept_files)


# --------------------------------------------------------------------------- the CA's
# Files of the CA's life (swcmp.calife): the roots of a rollover and the issuer's CRL.


def root_cert_file(paths: Paths, name: str, cert: x509.Certificate) -> Path:
    """``x509ca/<session>-root-<first 16 hex of SHA-256>.crt``: a root of a rollover."""
    fp = cert.fingerprint(hashes.SHA256()).hex()[:16]
    return paths.x509ca_dir / f"{validate_session_name(name)}-root-{fp}.crt"


def root_cert_files(paths: Paths, name: str) -> tuple[Path, ...]:
    """The rollover roots stored for a session (loaded into charon with its CA certificates)."""
    # exactly <name>-root-<16 hex>.crt: session gw must not take gw-root-x's files
    pattern = re.compile(re.escape(validate_session_name(name)) + r"-root-[0-9a-f]{16}\.crt")
    try:
        return tuple(sorted(p for p in paths.x509ca_dir.iterdir()
                            if pattern.fullmatch(p.name)))
    except FileNotFoundError:
        return ()
    except OSError as e:
        raise fsutil.storage_error(e, paths.x509ca_dir, "list") from e


def write_root_cert(paths: Paths, name: str, cert: x509.Certificate) -> Path:
    path = root_cert_file(paths, name, cert)
    fsutil.ensure_dir(paths.x509ca_dir)
    fsutil.atomic_write(path, certs.pem_of(cert), mode=0o644)
    return path


def drop_root_cert(paths: Paths, path: Path) -> None:
    """Remove a rollover root file (only one in ``x509ca/`` named as such)."""
    if path.parent == paths.x509ca_dir and "-root-" in path.name:
        fsutil.remove_file(path, missing_ok=True)


def crl_file(paths: Paths, name: str) -> Path:
    """swanctl's ``x509crl/<session>.crl``: the CRL of the session's issuer (DER)."""
    return paths.swanctl_dir / "x509crl" / f"{validate_session_name(name)}.crl"


def write_crl(paths: Paths, name: str, crl_der: bytes) -> Path:
    path = crl_file(paths, name)
    fsutil.ensure_dir(path.parent)
    fsutil.atomic_write(path, crl_der, mode=0o644)
    return path


# --------------------------------------------------------------------------- renewal
# The journal and staging area, the commit, the archive and the rollback.


JournalPhase = Literal["key-making", "key-ready", "sending", "waiting", "received",
                       "confirmed", "committing"]
PHASES: tuple[JournalPhase, ...] = get_args(JournalPhase)


@dataclass(frozen=True)
class JournalEntry:
    """What an unfinished renewal wrote down before its last step (see :mod:`swcmp.renewal`).

    ``transaction_id`` and ``server_nonce`` are hex; ``cert`` is the PEM certificate
    received and checked but not yet staged. ``confirm_nonce`` (hex), at "received": the
    CA answered our certConf 'waiting'; the next run polls for its pkiConf (RFC 9483
    4.4) instead of confirming again, and the pkiConf may echo this certConf's nonce.
    For a key in a token (see :mod:`swcmp.keystore.token`): ``token_id`` is the CKA_ID
    (hex) of the staged pair, ``token_old`` that of the pair it replaces and
    ``old_cert_pem`` its certificate. ``url`` is where the transaction's request went:
    the server URL, or when the session routes operations by path its operation's URL
    (with ``url_per_body``, the URL to which each message's body type is added); its
    pollReq and certConf go there too, whatever the session says now. None (a journal
    of a version that did not record it): the session's URLs now. ``tx_started`` (ISO
    time) is when the transaction's request was sent and ``resumes`` how many runs
    continued it: a transaction is resumed only within the session's poll_limit (see
    :mod:`swcmp.renewal`).
    """

    phase: JournalPhase
    kind: str | None = None
    old_serial: str | None = None
    started: str | None = None
    regenerate: bool = False
    transaction_id: str | None = None
    server_nonce: str | None = None
    cert_req_id: int = 0
    cert: str | None = None
    confirm_nonce: str | None = None
    token_id: str | None = None
    token_old: str | None = None
    old_cert_pem: str | None = None
    url: str | None = None
    url_per_body: bool = False
    tx_started: str | None = None
    resumes: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JournalEntry:
        """The entry in ``data``; ValueError saying what is wrong (a hand edit, a damaged
        disk). Fields this version does not know are ignored."""
        problem = _journal_problem(data)
        if problem is not None:
            raise ValueError(problem)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def held_by_ca(self) -> bool:
        """Whether the CA keeps the journaled transaction waiting: it answered the request
        'waiting', or the certConf (``confirm_nonce``). A certificate received and not yet
        confirmed (a run killed before its certConf) is in swcmp's hands, not the CA's:
        the poll_limit does not end it."""
        return self.transaction() is not None and (
            self.phase == "waiting" or (self.phase == "received" and bool(self.confirm_nonce)))

    def transaction(self) -> tuple[bytes, bytes] | None:
        """(transactionID, the CA's last senderNonce) when the CA answered, so that the
        transaction can be continued; None before any answer."""
        if self.transaction_id is None or self.server_nonce is None:
            return None
        return bytes.fromhex(self.transaction_id), bytes.fromhex(self.server_nonce)


class Journal:
    """The renewal journal and staging area of one session."""

    def __init__(self, paths: Paths, name: str) -> None:
        self.dir = paths.session_state_dir(name)
        self.path = self.dir / "journal.json"
        self.staging = self.dir / "staging"
        self.archive = self.dir / "archive"

    def load(self) -> JournalEntry | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StorageError(f"renewal journal {self.path} is unreadable: {e}").with_hint(
                "inspect it; removing it abandons the interrupted renewal (the live pair "
                "is untouched) and the next run starts a fresh one") from e
        if not isinstance(data, dict):
            return None
        try:
            return JournalEntry.from_json(data)
        except ValueError as e:
            raise StorageError(f"renewal journal {self.path} is damaged: {e}").with_hint(
                "inspect it; removing it abandons the interrupted renewal (the live pair "
                "is untouched) and the next run starts a fresh one") from None

    def write(self, **fields: Any) -> JournalEntry:
        """Change the fields named (a new entry needs ``phase``) and write the entry."""
        entry = self.load()
        data = {**(entry.to_json() if entry is not None else {}), **fields}
        fsutil.ensure_dir(self.dir, mode=0o700)
        fsutil.atomic_write(self.path, json.dumps(data, indent=1).encode(), mode=0o600)
        return JournalEntry(**data)

    def clear(self) -> None:
        for p in (self.staging / "new.key", self.staging / "new.crt"):
            fsutil.remove_file(p, missing_ok=True)
        for p in sorted(self.staging.glob("ca*.crt")) if self.staging.exists() else []:
            fsutil.remove_file(p, missing_ok=True)
        fsutil.remove_file(self.path, missing_ok=True)

    @property
    def key_file(self) -> Path:
        return self.staging / "new.key"

    @property
    def cert_file(self) -> Path:
        return self.staging / "new.crt"

    def stage_key(self, key: keys.PrivateKey) -> None:
        fsutil.ensure_dir(self.staging, mode=0o700)
        fsutil.atomic_write(self.key_file, keys.private_key_pem(key), mode=0o600)

    def stage_cert(self, cert: x509.Certificate, ca_certs: list[x509.Certificate]) -> None:
        fsutil.ensure_dir(self.staging, mode=0o700)
        for i, c in enumerate(ca_certs, start=1):
            fsutil.atomic_write(self.staging / f"ca{i}.crt", certs.pem_of(c), mode=0o644)
        fsutil.atomic_write(self.cert_file, certs.pem_of(cert), mode=0o644)

    def staged_ca_certs(self) -> list[x509.Certificate]:
        files = sorted(self.staging.glob("ca*.crt"), key=lambda p: int(p.stem[2:] or 0))
        return [certs.load_certificate(read_file(p, "staged CA certificate")) for p in files]


def _journal_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a journal's fields (a hand edit, a damaged disk), or None."""
    for key in ("transaction_id", "server_nonce", "token_id", "token_old", "confirm_nonce"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 256:
            return f"{key} is not a hex string"
        try:
            bytes.fromhex(value)
        except ValueError:
            return f"{key} is not a hex string"
    if data.get("phase") not in PHASES:
        return f"phase {data.get('phase')!r} is not one of {', '.join(PHASES)}"
    for key in ("kind", "old_serial", "cert", "started", "old_cert_pem", "url"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"{key} is not text"
    for key in ("regenerate", "url_per_body"):
        if not isinstance(data.get(key, False), bool):
            return f"{key} is not true or false"
    if data.get("url") is not None:
        from swcmp.cmp.urls import check_server_url

        try:
            check_server_url(data["url"])
        except SwcmpError as e:
            return f"url: {e}"
    started = data.get("tx_started")
    if started is not None:
        try:
            if not isinstance(started, str) or datetime.fromisoformat(started).tzinfo is None:
                raise ValueError
        except ValueError:
            return "tx_started is not a time with its time zone"
    resumes = data.get("resumes", 0)
    if isinstance(resumes, bool) or not isinstance(resumes, int) or not 0 <= resumes < 2**31:
        return "resumes is not a count"
    req_id = data.get("cert_req_id", 0)
    if isinstance(req_id, bool) or not isinstance(req_id, int) or abs(req_id) >= 2**63:
        return "cert_req_id is not a 64-bit integer"
    return None


def write_pair(key_path: Path, key_pem: bytes, cert_path: Path, cert_pem: bytes, *,
               previous_key: bytes | None,
               checkpoint: Callable[[str], None] | None = None) -> None:
    """Replace the live key and certificate with no moment of mismatch on disk.

    Two files cannot change in one step, so a changed key first goes in beside
    the live one (``private/KEY.key.next``, a name no key of swcmp's has, which
    swanctl loads too): whichever certificate ``x509/`` holds at any moment,
    its key is in ``private/``. Then the certificate, then one rename puts the
    key in place. ``checkpoint`` is called between the steps (crash tests).
    """
    next_key = key_path.with_name(key_path.name + ".next")
    key_changes = previous_key != key_pem
    if key_changes:
        fsutil.atomic_write(next_key, key_pem, mode=0o600)
    else:
        fsutil.remove_file(next_key, missing_ok=True)
    if checkpoint is not None:
        checkpoint("key-written")
    fsutil.atomic_write(cert_path, cert_pem, mode=0o644)
    if checkpoint is not None:
        checkpoint("cert-written")
    if key_changes:
        fsutil.replace(next_key, key_path)


def archive_pair(j: Journal, cert_pem: bytes, key_pem: bytes | None) -> None:
    """Keep the certificate a renewal replaces, and its key when it is a file (a token
    keeps its own), in the archive; the newest ARCHIVE_KEEP stay."""
    cert = certs.load_certificate(cert_pem)
    fsutil.ensure_dir(j.archive, mode=0o700)
    stem = f"{cert.not_valid_before_utc:%Y%m%d%H%M%S}-{cert.serial_number:x}"
    if key_pem is not None:
        fsutil.atomic_write(j.archive / f"{stem}.key", key_pem, mode=0o600)
    fsutil.atomic_write(j.archive / f"{stem}.crt", cert_pem, mode=0o644)
    stems = sorted({p.stem for p in j.archive.glob("*.crt")})
    for old in stems[:-ARCHIVE_KEEP]:
        for suffix in (".key", ".crt"):
            fsutil.remove_file(j.archive / f"{old}{suffix}", missing_ok=True)


def archived_pairs(j: Journal, serial: int) -> list[tuple[x509.Certificate, bytes]]:
    """The archived certificates with ``serial`` and their key files' PEM, when the key
    was a file (see :func:`archive_pair`)."""
    out: list[tuple[x509.Certificate, bytes]] = []
    for p in sorted(j.archive.glob(f"*-{serial:x}.crt")) if j.archive.exists() else []:
        try:
            cert = certs.load_certificate(p.read_bytes())
            key = p.with_suffix(".key")
            key_pem = key.read_bytes() if key.exists() else b""
        except (OSError, SwcmpError) as e:
            log.warning("archived %s unusable: %s", p, e)
            continue
        if cert.serial_number == serial:
            out.append((cert, key_pem))
    return out


def restore_pair(session_name: str, previous: CredentialPair | None) -> None:
    """Put ``previous`` back as the live pair, in the same safe order; log on failure.

    If that fails too (disk still full), the journal still says "committing":
    the next run commits the staged pair, and until then the pair on disk is
    whichever the interrupted sequence left, with both keys present.
    """
    if previous is None:
        return
    assert isinstance(previous.key, KeyFile)  # a pair of key files
    key = previous.key
    try:
        live_key = key.path.read_bytes() if key.path.exists() else None
        write_pair(key.path, key.pem, previous.cert_path,
                   previous.cert_pem, previous_key=live_key)
    except (OSError, StorageError) as e:
        log.error("%s: could not restore the previous key and certificate: %s; the next "
                  "run commits the staged pair", session_name, e)
