"""The key store contract (tests/keystore_contract.py) for key files and for an
in-memory fake; the token backend runs it in tests/integration/test_keystore_token.py.

The fake shows what the contract asks of a backend that shares nothing with swcmp's
two: it keeps its keys in a dictionary and its certificate in memory.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from keystore_contract import Harness, KeyStoreContract, tmp_paths
from pki import make_pki
from swcmp.checkresult import FAIL, OK, CheckResult
from swcmp.cmp import certs, keys
from swcmp.deploy import CredentialPair, DeployError, TokenRef
from swcmp.errors import RenewalError
from swcmp.keystore import HeldKeys, Installed, KeyStore
from swcmp.keystore.files import FileKeys
from swcmp.session import Session
from swcmp.store import Journal, JournalEntry

# --------------------------------------------------------------------------- key files


class FileHarness(Harness):
    def key_count(self) -> int:
        found = list(self.paths.private_dir.glob("*.key")) if self.paths.private_dir.exists() \
            else []
        staging = Journal(self.paths, self.session.name).key_file
        return len(found) + (1 if staging.exists() else 0)

    def lose_live_key(self) -> None:
        assert self.session.key is not None
        self.paths.key_file(self.session.key).unlink()


class TestFileKeys(KeyStoreContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        paths = tmp_paths(tmp_path / "gw")
        session = Session(name="gw1", key="gw1")
        return FileHarness(FileKeys(session, paths), session, paths,
                           make_pki(tmp_path / "pki"), lambda: FileKeys(session, paths),
                           collect_forgets=False)


def test_file_keys_are_written_0600(tmp_path: Path) -> None:
    paths = tmp_paths(tmp_path)
    store = FileKeys(Session(name="gw1", key="gw1"), paths)
    store.ensure_key()
    assert paths.key_file("gw1").stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- a fake


class MemoryKeys:
    """A key store in a dictionary (shared by every "run" that opens it)."""

    collects = True
    key_types: tuple[str, ...] = keys.KEY_TYPES

    def __init__(self, shelf: dict[str, Any]) -> None:
        self.shelf = shelf
        shelf.setdefault("keys", {})  # handle -> private key
        shelf.setdefault("replaced", {})  # handle -> serial of its certificate

    @property
    def key_file(self) -> Path | None:
        return None

    def _find(self, spki: bytes) -> keys.PrivateKey | None:
        return next((k for k in self.shelf["keys"].values() if keys.spki_der(k) == spki), None)

    def live_key(self) -> keys.SigningKey | None:
        cert = self.shelf.get("cert")
        if cert is None:
            return next(iter(self.shelf["keys"].values()), None)
        return self._find(certs.spki_of(cert))

    def live_pair(self) -> CredentialPair | None:
        cert, key = self.shelf.get("cert"), self.live_key()
        if cert is None or key is None:
            return None
        return CredentialPair("gw1", TokenRef("00", "pin", "memory"), Path("memory"),
                              certs.pem_of(cert))

    def ensure_key(self) -> tuple[keys.SigningKey, bool]:
        key = self.live_key()
        if key is not None:
            return key, False
        new = keys.generate_key("ecdsa:p256")
        self.shelf["keys"][secrets.token_hex(4)] = new
        return new, True

    def enrolled(self) -> None:
        self.shelf["cert"] = self.shelf.pop("enrolling")

    def recover(self, j: Journal, entry: JournalEntry
                ) -> tuple[keys.SigningKey | None, JournalEntry | None]:
        if not entry.token_id:
            return None, entry
        if entry.phase == "key-making":
            self.shelf["keys"].pop(entry.token_id, None)
            j.clear()
            return None, None
        return self.shelf["keys"].get(entry.token_id), entry

    def reserve(self) -> dict[str, Any]:
        return {"token_id": secrets.token_hex(4)}

    def make_staged(self, j: Journal, entry: JournalEntry) -> keys.SigningKey:
        assert entry.token_id is not None
        key = self.shelf["keys"][entry.token_id] = keys.generate_key("ecdsa:p256")
        return key

    def has_staged(self, j: Journal, entry: JournalEntry) -> bool:
        return entry.token_id is not None

    def install(self, j: Journal, cert: x509.Certificate,
                checkpoint: Callable[[str], None]) -> Installed:
        if self._find(certs.spki_of(cert)) is None:
            raise RenewalError("the staged certificate's key is not in the store")
        old = self.shelf.get("cert")
        self.shelf["cert"] = cert
        checkpoint("cert-written")
        if old is None or old == cert:
            return Installed(None)
        handle = next(h for h, k in self.shelf["keys"].items()
                      if keys.spki_der(k) == certs.spki_of(old))
        self.shelf["replaced"][handle] = old.serial_number
        self.shelf.setdefault("old_certs", []).append(old)
        return Installed(CredentialPair("gw1", TokenRef(handle, "pin", "memory"),
                                        Path("memory"), certs.pem_of(old)), old.serial_number,
                         {"cert": old, "handle": handle})

    def undo(self, installed: Installed) -> None:
        assert installed.undo_data is not None
        self.shelf["cert"] = installed.undo_data["cert"]
        self.shelf["replaced"].pop(installed.undo_data["handle"], None)

    def collect(self, held: HeldKeys, *, keep_serials: Collection[int] = ()) -> list[str]:
        if not self.shelf["replaced"]:
            return []
        try:
            loaded = set(held()) if held is not None else set()
        except DeployError:
            return []
        gone = []
        for handle, serial in list(self.shelf["replaced"].items()):
            key = self.shelf["keys"][handle]
            if serial in keep_serials or keys.subject_key_id(key.public_key()).hex() in loaded:
                continue
            del self.shelf["keys"][handle], self.shelf["replaced"][handle]
            gone.append(handle)
        return gone

    def key_for(self, cert: x509.Certificate) -> keys.SigningKey | None:
        return self._find(certs.spki_of(cert))

    def checks(self) -> list[CheckResult]:
        key = self.live_key()
        return [CheckResult("key-pair", OK, "in memory") if key is not None
                else CheckResult("key-pair", FAIL, "no key", "enroll again")]


class MemoryHarness(Harness):
    def commit_enrolment(self, cert: x509.Certificate) -> None:
        assert isinstance(self.store, MemoryKeys)
        self.store.shelf["enrolling"] = cert
        self.store.enrolled()

    def key_count(self) -> int:
        assert isinstance(self.store, MemoryKeys)
        return len(self.store.shelf["keys"])

    def lose_live_key(self) -> None:
        assert isinstance(self.store, MemoryKeys)
        self.store.shelf["keys"].clear()


class TestMemoryFake(KeyStoreContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        shelf: dict[str, Any] = {}
        store: KeyStore = MemoryKeys(shelf)
        return MemoryHarness(store, Session(name="gw1", key="gw1"), tmp_paths(tmp_path),
                             make_pki(tmp_path / "pki"), lambda: MemoryKeys(shelf))
