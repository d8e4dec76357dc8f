"""A session's keys as files: the live key ``private/<key>.key`` (0600) under the
swanctl directory, a staged key in the session's state directory, replaced pairs in its
archive (see :mod:`swcmp.store` for the files and the commit order)."""

from __future__ import annotations

import logging
import os
import shlex
import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from swcmp import fsutil
from swcmp.checkresult import FAIL, OK, PENDING, CheckResult
from swcmp.cmp import certs, keys
from swcmp.deploy import CredentialPair, KeyFile
from swcmp.errors import RenewalError, StorageError, SwcmpError
from swcmp.keystore.base import HeldKeys, Installed
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.store import (
    Journal,
    JournalEntry,
    archive_pair,
    archived_pairs,
    ca_certs_pem,
    need_setting,
    read_file,
    restore_pair,
    write_pair,
)

log = logging.getLogger(__name__)


def load_key_file(path: Path) -> tuple[PrivateKeyTypes | None, str]:
    """The private key in ``path`` (unencrypted PEM or DER) and an error text.

    The error text never includes file content.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror}"
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=None), ""
        return serialization.load_der_private_key(data, password=None), ""
    except TypeError:
        # cryptography raises TypeError for an encrypted key without password.
        return None, f"{path} is encrypted; swanctl and swcmp need an unencrypted key file"
    except (ValueError, UnsupportedAlgorithm):
        return None, f"{path} does not hold a private key swcmp can read"


def _pem(pair: CredentialPair | None) -> bytes | None:
    """The key file content of a pair this store made (None: no pair)."""
    if pair is None:
        return None
    assert isinstance(pair.key, KeyFile)
    return pair.key.pem


class FileKeys:
    """The key store of a session whose key is a file (see the module docstring)."""

    collects = False  # the archive keeps the newest ARCHIVE_KEEP pairs, see collect()
    key_types: tuple[str, ...] = keys.KEY_TYPES

    def __init__(self, session: Session, paths: Paths) -> None:
        self.session = session
        self.paths = paths

    def __repr__(self) -> str:
        return f"FileKeys({self.session.name!r})"

    @property
    def key_file(self) -> Path | None:
        return self.paths.key_file(self.session.key) if self.session.key else None

    # -- the live pair

    def live_key(self) -> keys.SigningKey | None:
        need_setting(self.session.key, "key pair name", self.session, "--key")
        p = self.key_file
        assert p is not None
        if not p.exists():
            return None
        return keys.load_private_key(read_file(p, "private key"))

    def live_pair(self) -> CredentialPair | None:
        kp, cp = self.key_file, self.paths.cert_file(self.session.name)
        if kp is None or not (kp.exists() and cp.exists()):
            return None
        return CredentialPair.of_files(
            self.session.name, kp, cp, read_file(kp, "private key"),
            read_file(cp, "certificate"), ca_certs_pem(self.session, self.paths))

    # -- enrolment

    def ensure_key(self) -> tuple[keys.SigningKey, bool]:
        """The key file, or a new key written before any request (0600), so that a crash
        after the CA issued a certificate never leaves a certificate without its key."""
        key = self.live_key()
        if key is not None:
            return key, False
        path = self.key_file
        assert path is not None
        key = keys.generate_key(self.session.key_type)
        fsutil.ensure_dir(self.paths.private_dir, mode=0o700)
        fsutil.atomic_write(path, keys.private_key_pem(key), mode=0o600)
        log.info("%s: generated a new %s key %s", self.session.name, self.session.key_type,
                 path)
        return key, True

    def enrolled(self) -> None:
        """Nothing follows: swanctl loads the key file as it is."""

    # -- a key update

    def recover(self, j: Journal, entry: JournalEntry
                ) -> tuple[keys.SigningKey | None, JournalEntry | None]:
        if entry.phase == "key-making":  # killed while the key was made or staged
            fsutil.remove_file(j.key_file, missing_ok=True)
            j.clear()
            log.warning("%s: a run was killed while it made a new key; starting again",
                        self.session.name)
            return None, None
        if j.key_file.exists():
            return keys.load_private_key(read_file(j.key_file, "staged key")), entry
        return None, entry

    def reserve(self) -> dict[str, Any]:
        return {}

    def make_staged(self, j: Journal, entry: JournalEntry) -> keys.SigningKey:
        key = keys.generate_key(self.session.key_type)
        j.stage_key(key)
        return key

    def has_staged(self, j: Journal, entry: JournalEntry) -> bool:
        return j.key_file.exists()

    def discard_staged(self, j: Journal, entry: JournalEntry) -> None:
        fsutil.remove_file(j.key_file, missing_ok=True)

    def install(self, j: Journal, cert: x509.Certificate,
                checkpoint: Callable[[str], None]) -> Installed:
        """Write the staged (or live) key and ``cert`` in the order that never leaves a
        certificate without its key on disk; the replaced pair goes to the archive."""
        key_path = self.key_file
        assert key_path is not None
        cert_pem = certs.pem_of(cert)
        previous = self.live_pair()
        previous_key = _pem(previous)
        if previous is not None and previous.cert_pem != cert_pem:
            archive_pair(j, previous.cert_pem, previous_key)
        new_key_pem = (read_file(j.key_file, "staged key") if j.key_file.exists()
                       else read_file(key_path, "private key"))
        if keys.spki_der(keys.load_private_key(new_key_pem)) != certs.spki_of(cert):
            raise RenewalError("the staged key does not match the staged certificate").with_hint(
                f"inspect {j.dir}; the live pair is untouched")
        try:
            write_pair(key_path, new_key_pem, self.paths.cert_file(self.session.name),
                       cert_pem, previous_key=previous_key,
                       checkpoint=checkpoint)
        except StorageError:
            # e.g. the disk filled up: put the previous pair back so the live files
            # match; the staged pair is committed by the next run.
            restore_pair(self.session.name, previous)
            raise
        if previous is None or previous.cert_pem == cert_pem:
            return Installed(None)
        return Installed(previous, certs.load_certificate(previous.cert_pem).serial_number)

    def undo(self, installed: Installed) -> None:
        restore_pair(self.session.name, installed.previous)

    def collect(self, held: HeldKeys, *, keep_serials: Collection[int] = ()) -> list[str]:
        """Nothing to collect: charon never holds an archived key, and the archive keeps
        only the newest ARCHIVE_KEEP pairs (:func:`swcmp.store.archive_pair`)."""
        return []

    # -- revocation and checks

    def key_for(self, cert: x509.Certificate) -> keys.SigningKey | None:
        spki = certs.spki_of(cert)
        live = self.live_key() if self.session.key else None
        if live is not None and keys.spki_der(live) == spki:
            return live
        for _, key_pem in archived_pairs(Journal(self.paths, self.session.name),
                                         cert.serial_number):
            if not key_pem:
                continue
            try:
                key = keys.load_private_key(key_pem)
            except SwcmpError as e:
                log.warning("%s: an archived key is unusable: %s", self.session.name, e)
                continue
            if keys.spki_der(key) == spki:
                return key
        return None

    def checks(self) -> list[CheckResult]:
        return [self._check_key_file()]

    def _check_key_file(self) -> CheckResult:
        s = self.session
        fix_key = f"swcmp session set {s.name} --key NAME"
        key_file = self.key_file
        if key_file is None:
            return CheckResult("key-pair", FAIL, "no key pair is set",
                               f"swcmp session set {s.name} --key {s.name} (an existing key "
                               "private/NAME.key is used as is, a missing one is generated)")
        request = f"run `swcmp request initial {s.name}` to generate and certify it, or "
        try:
            info = os.stat(key_file)
        except FileNotFoundError:
            if not self.paths.cert_file(s.name).exists():
                # Generated (per key_type) by the first request: not a failure before it.
                return CheckResult("key-pair", PENDING,
                                   f"the key pair {s.key!r} ({key_file}) is generated by the "
                                   "first request", request + fix_key + " for a key in private/")
            return CheckResult("key-pair", FAIL,
                               f"the key pair {s.key!r} does not exist ({key_file})",
                               request + fix_key + " for a key in private/")
        except OSError as e:
            return CheckResult("key-pair", FAIL, f"cannot access {key_file}: {e.strerror}",
                               "run swcmp as root")
        key, error = load_key_file(key_file)
        if key is None:
            return CheckResult("key-pair", FAIL, error, request + fix_key)
        if stat.S_IMODE(info.st_mode) & 0o077:
            return CheckResult(
                "key-pair", FAIL,
                f"{key_file} has mode {stat.S_IMODE(info.st_mode):04o}: others may read the key",
                f"chmod 600 {shlex.quote(str(key_file))}")
        return CheckResult("key-pair", OK, f"key pair {s.key!r} ({key_file})")
